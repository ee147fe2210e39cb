"""The ledger's reactions to payment events. Each runs in one transaction with its inbox row,
so a redelivered event changes nothing; transfer ids derive from the payment's ids, so even a
replay that slipped past the inbox would be a no-op."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pocketpay.kit.bus import Envelope
from pocketpay.kit.clock import Clock
from pocketpay.kit.outbox import claim_inbox
from pocketpay.ledger import disputes, service
from pocketpay.ledger.chart import TransferCode, system_account_id, wallet_account_id
from pocketpay.ledger.models import inbox

SUBJECTS = ["payments.payment.>", "payments.refund.>", "payments.payout.>", "payments.dispute.>"]


def auth_id(payment_id: str) -> str:
    return f"pay_auth:{payment_id}"


def refund_hold_id(refund_id: str) -> str:
    return f"refund_hold:{refund_id}"


def credited_account(d: dict[str, Any]) -> str:
    """Whose money a payment is: an invoice's (billing charged it) is the platform's revenue,
    any other the owner's wallet. Events from before payments had a purpose are top-ups."""
    if d.get("purpose", "top_up") == "invoice":
        return system_account_id("revenue", d["currency"])
    return wallet_account_id(d["owner_id"], d["currency"])


def _hold(d: dict[str, Any]) -> service.TransferRequest:
    """The authorization hold of a payment: the same request whichever event creates it (the
    purpose is in every event of the payment, so a capture or void that comes first places
    or tombstones the same hold)."""
    return service.TransferRequest(
        id=auth_id(d["payment_id"]),
        debit_account_id=system_account_id("psp_receivable", d["currency"]),
        credit_account_id=credited_account(d),
        amount_minor=int(d["amount_minor"]),
        currency=d["currency"],
        code=TransferCode.CARD_AUTHORIZATION,
        pending=True,
        user_data={"payment_id": d["payment_id"]},
    )


async def _authorized(conn: AsyncConnection, d: dict[str, Any], now: datetime) -> None:
    # A no-op if the hold exists, or if a void got here first and left its tombstone.
    await service.create_transfer(conn, _hold(d), now)


async def _captured(conn: AsyncConnection, d: dict[str, Any], now: datetime) -> None:
    # Order-insensitive: a capture handled before its authorization places the hold first.
    await service.create_transfer(conn, _hold(d), now)
    await service.resolve_pending(
        conn,
        f"pay_cap:{d['payment_id']}",
        auth_id(d["payment_id"]),
        now,
        post=True,
        amount_minor=int(d["amount_captured_minor"]),
        user_data={"payment_id": d["payment_id"]},
    )


async def _voided(conn: AsyncConnection, d: dict[str, Any], now: datetime) -> None:
    """canceled or failed: void the hold. A void that arrives before its hold leaves the hold
    as a tombstone (already voided, no balance effect), so the late hold is a no-op. A void of
    a hold that was posted (a captured payment canceled) raises: an invariant violation is
    dead-lettered and alerted, never swallowed."""
    await service.void_or_tombstone(
        conn,
        f"pay_void:{d['payment_id']}",
        _hold(d),
        now,
        user_data={"payment_id": d["payment_id"]},
    )


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
    if not d.get("held", True):
        return  # refused before any hold (money spent), or a compensation: nothing held
    verb = "post" if post else "void"
    # A held refund's hold exists (payments marks it held only after the ledger placed it):
    # TransferNotFound here is an invariant violation and propagates to the dead letters.
    await service.resolve_pending(
        conn,
        f"refund_{verb}:{d['refund_id']}",
        refund_hold_id(d["refund_id"]),
        now,
        post=post,
        user_data={"payment_id": d["payment_id"], "refund_id": d["refund_id"]},
    )


async def _refund_succeeded(conn: AsyncConnection, d: dict[str, Any], now: datetime) -> None:
    await _refund_done(conn, d, now, post=True)


async def _refund_failed(conn: AsyncConnection, d: dict[str, Any], now: datetime) -> None:
    await _refund_done(conn, d, now, post=False)


def payout_hold_request(
    payout_id: str, owner_id: str, amount_minor: int, currency: str
) -> service.TransferRequest:
    """A payout's hold: the wallet's money on its way out through the PSP. The same request
    whoever makes it (payments' hold, or a cancel's tombstone that came first)."""
    return service.TransferRequest(
        id=f"payout_hold:{payout_id}",
        debit_account_id=wallet_account_id(owner_id, currency),
        credit_account_id=system_account_id("psp_settled", currency),
        amount_minor=amount_minor,
        currency=currency,
        code=TransferCode.PAYOUT,
        pending=True,
        user_data={"payout_id": payout_id},
    )


def _payout_hold(d: dict[str, Any]) -> service.TransferRequest:
    return payout_hold_request(d["id"], d["owner_id"], int(d["amount_minor"]), d["currency"])


async def _payout_paid(conn: AsyncConnection, d: dict[str, Any], now: datetime) -> None:
    # A paid payout was sent, and only a held payout is sent: a missing hold is an invariant
    # violation (TransferNotFound goes to the dead letters).
    await service.resolve_pending(
        conn,
        f"payout_post:{d['id']}",
        _payout_hold(d).id,
        now,
        post=True,
        user_data={"payout_id": d["id"]},
    )


async def _payout_voided(conn: AsyncConnection, d: dict[str, Any], now: datetime) -> None:
    """failed or canceled: the money goes back. A payout refused before its hold (money
    spent), or canceled before it, leaves a tombstone, so a late hold is a no-op."""
    await service.void_or_tombstone(
        conn, f"payout_void:{d['id']}", _payout_hold(d), now, user_data={"payout_id": d["id"]}
    )


async def _dispute_created(conn: AsyncConnection, d: dict[str, Any], now: datetime) -> None:
    await disputes.opened(conn, d, credited_account(d), now)


async def _dispute_closed(conn: AsyncConnection, d: dict[str, Any], now: datetime) -> None:
    await disputes.closed(conn, d, credited_account(d), now)


# Every terminal payment state has a handler (refunded: each refund posts its own hold).
HANDLERS = {
    "payments.payment.authorized": _authorized,
    "payments.payment.captured": _captured,
    "payments.payment.canceled": _voided,
    "payments.payment.failed": _voided,
    "payments.payment.settled": _settled,
    "payments.refund.succeeded": _refund_succeeded,
    "payments.refund.failed": _refund_failed,
    "payments.payout.paid": _payout_paid,
    "payments.payout.failed": _payout_voided,
    "payments.payout.canceled": _payout_voided,
    # An inquiry (warning_*) moves no money; updated (evidence, status) changes nothing here.
    "payments.dispute.created": _dispute_created,
    # An inquiry the bank turns into a chargeback leaves warning_* in an update: it holds then
    # (the open step, once; an update of an inquiry or of an opened dispute changes nothing).
    "payments.dispute.updated": _dispute_created,
    "payments.dispute.closed": _dispute_closed,
}


class LedgerConsumer:
    def __init__(
        self, engine: AsyncEngine, clock: Clock, notify: Callable[[], None] | None = None
    ) -> None:
        self._engine = engine
        self._clock = clock
        # Wakes the outbox relay after a commit: the wallet events go out without waiting
        # for the relay's next poll (live updates).
        self._notify = notify or (lambda: None)

    async def __call__(self, env: Envelope) -> None:
        if env.type not in HANDLERS:
            return  # e.g. payments.payment.created: nothing to post, no inbox row to write
        now = self._clock.now()
        async with service.unit(self._engine, now) as conn:
            if not await claim_inbox(conn, inbox, env.id, env.type, now):
                return
            await HANDLERS[env.type](conn, env.data, now)
        self._notify()
