"""The ledger's reactions to payment events. Each runs in one transaction with its inbox row,
so a redelivered event changes nothing; transfer ids derive from the payment's ids, so even a
replay that slipped past the inbox would be a no-op."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pocketpay.kit.bus import Envelope
from pocketpay.kit.clock import Clock
from pocketpay.kit.outbox import claim_inbox
from pocketpay.ledger import service
from pocketpay.ledger.chart import TransferCode, system_account_id, wallet_account_id
from pocketpay.ledger.errors import PendingNotOpen, TransferNotFound
from pocketpay.ledger.models import inbox

SUBJECTS = ["payments.payment.>", "payments.refund.>"]


def auth_id(payment_id: str) -> str:
    return f"pay_auth:{payment_id}"


def refund_hold_id(refund_id: str) -> str:
    return f"refund_hold:{refund_id}"


async def _authorized(conn: AsyncConnection, d: dict[str, Any], now: datetime) -> None:
    await service.create_transfer(
        conn,
        service.TransferRequest(
            id=auth_id(d["payment_id"]),
            debit_account_id=system_account_id("psp_receivable", d["currency"]),
            credit_account_id=wallet_account_id(d["owner_id"], d["currency"]),
            amount_minor=int(d["amount_minor"]),
            currency=d["currency"],
            code=TransferCode.CARD_AUTHORIZATION,
            pending=True,
            user_data={"payment_id": d["payment_id"]},
        ),
        now,
    )


async def _captured(conn: AsyncConnection, d: dict[str, Any], now: datetime) -> None:
    await service.resolve_pending(
        conn,
        f"pay_cap:{d['payment_id']}",
        auth_id(d["payment_id"]),
        now,
        post=True,
        amount_minor=int(d["amount_captured_minor"]),
        user_data={"payment_id": d["payment_id"]},
    )


async def _canceled(conn: AsyncConnection, d: dict[str, Any], now: datetime) -> None:
    try:
        await service.resolve_pending(
            conn,
            f"pay_void:{d['payment_id']}",
            auth_id(d["payment_id"]),
            now,
            post=False,
            user_data={"payment_id": d["payment_id"]},
        )
    except (TransferNotFound, PendingNotOpen):
        return  # canceled before any authorization: nothing was held


async def _settled(conn: AsyncConnection, d: dict[str, Any], now: datetime) -> None:
    await service.create_transfer(
        conn,
        service.TransferRequest(
            id=f"pay_settle:{d['payment_id']}",
            debit_account_id=system_account_id("psp_settled", d["currency"]),
            credit_account_id=system_account_id("psp_receivable", d["currency"]),
            amount_minor=int(d["amount_captured_minor"]),
            currency=d["currency"],
            code=TransferCode.SETTLEMENT,
            user_data={"payment_id": d["payment_id"]},
        ),
        now,
    )


async def _refund_done(conn: AsyncConnection, d: dict[str, Any], now: datetime, post: bool) -> None:
    verb = "post" if post else "void"
    try:
        await service.resolve_pending(
            conn,
            f"refund_{verb}:{d['refund_id']}",
            refund_hold_id(d["refund_id"]),
            now,
            post=post,
            user_data={"payment_id": d["payment_id"], "refund_id": d["refund_id"]},
        )
    except TransferNotFound:
        return


HANDLERS = {
    "payments.payment.authorized": _authorized,
    "payments.payment.captured": _captured,
    "payments.payment.canceled": _canceled,
    "payments.payment.settled": _settled,
}


HANDLED = frozenset(HANDLERS) | {"payments.refund.succeeded", "payments.refund.failed"}


class LedgerConsumer:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def __call__(self, env: Envelope) -> None:
        if env.type not in HANDLED:
            return  # e.g. payments.payment.created: nothing to post, no inbox row to write
        now = self._clock.now()
        async with self._engine.begin() as conn:
            if not await claim_inbox(conn, inbox, env.id, env.type, now):
                return
            if env.type == "payments.refund.succeeded":
                await _refund_done(conn, env.data, now, post=True)
            elif env.type == "payments.refund.failed":
                await _refund_done(conn, env.data, now, post=False)
            elif handler := HANDLERS.get(env.type):
                await handler(conn, env.data, now)
