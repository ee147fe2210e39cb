"""The payment use cases, one module per flow: ``intents`` (authorize, capture, cancel,
compensations), ``refunds`` (the refund phases), ``payouts`` (the payout saga), ``disputes``
(chargebacks and their evidence), ``recovery``
(webhooks, settlement, the reconciler). ``Flows`` binds them to one context for the routes,
consumers and jobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pocketpay.payments.flows import disputes, intents, payouts, recovery, refunds
from pocketpay.payments.flows.context import Ctx
from pocketpay.payments.schemas import PayoutCreate

__all__ = ["Ctx", "Flows"]


@dataclass
class Flows:
    ctx: Ctx

    @property
    def relay(self) -> Any:
        return self.ctx.relay

    async def authorize(self, payment_id: str) -> None:
        await intents.authorize(self.ctx, payment_id)

    async def capture(self, owner_id: str, pid: str, amount_minor: int | None) -> dict[str, Any]:
        return await intents.capture(self.ctx, owner_id, pid, amount_minor)

    async def cancel(self, owner_id: str, pid: str) -> dict[str, Any]:
        return await intents.cancel(self.ctx, owner_id, pid)

    async def refund(
        self,
        owner_id: str,
        pid: str,
        key: str,
        amount_minor: int | None,
        reason: str | None,
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        return await refunds.refund(self.ctx, owner_id, pid, key, amount_minor, reason, metadata)

    async def create_payout(self, owner_id: str, key: str, req: PayoutCreate) -> dict[str, Any]:
        return await payouts.create(self.ctx, owner_id, key, req)

    async def cancel_payout(self, owner_id: str, payout_id: str) -> dict[str, Any]:
        return await payouts.cancel(self.ctx, owner_id, payout_id)

    async def poll_payouts(self, limit: int = 100) -> int:
        return await payouts.poll_due(self.ctx, limit)

    async def submit_dispute_evidence(
        self, owner_id: str, dispute_id: str, key: str, text: str
    ) -> dict[str, Any]:
        return await disputes.submit_evidence(self.ctx, owner_id, dispute_id, key, text)

    async def accept_dispute(self, owner_id: str, dispute_id: str) -> dict[str, Any]:
        return await disputes.accept(self.ctx, owner_id, dispute_id)

    async def sweep_disputes(self, window_seconds: float) -> int:
        return await disputes.sweep(self.ctx, window_seconds)

    async def handle_psp_event(self, event: dict[str, Any]) -> dict[str, str]:
        return await recovery.handle_psp_event(self.ctx, event)

    async def settle_due(self, limit: int = 100) -> int:
        return await recovery.settle_due(self.ctx, limit)

    async def reconcile(self, limit: int = 100) -> int:
        return await recovery.reconcile(self.ctx, limit)
