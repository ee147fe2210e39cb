"""Disputes (chargebacks) in the ledger: what a disputed payment credited is held while the
dispute is open, given back if it is won, and lost to the cardholder if it is lost.

Open (amount A, ``credited`` the account the payment credited: the owner's wallet, or revenue
for an invoice): ``h = min(A, available)`` of a wallet (A of revenue, unguarded) is held,
pending ``dispute_hold:<id>`` credited -> ``sys_disputes``; the shortfall ``s = A - h`` is
the owner's debt at once, posted ``dispute_debt:<id>`` ``debt_<owner>`` -> ``sys_disputes``.
The next credits of the wallet repay it first (``service.repay_debts``, at the end of every
unit of work).

Won: the hold is voided (``dispute_release:<id>``) and the debt part comes back, posted
``dispute_reinstate:<id>`` ``sys_disputes`` -> the wallet, where the repayment rule moves it
on to the debt: the owner ends where they were, with whatever they repaid meanwhile back.
Lost: the hold is posted (``dispute_post:<id>``) and ``dispute_loss:<id>`` moves A from
``sys_disputes`` to ``sys_psp_settled`` (the PSP gave it back to the cardholder).
``sys_disputes`` nets to zero per closed dispute.

Events can arrive in any order and more than once: a ``closed`` handled before its
``created`` does the open step first, and the open step is done once (a second one finds its
transfers and recomputes nothing: the same ids with other amounts would be a conflict).
Inquiries (``warning_*``) move no money.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from pocketpay.ledger import service
from pocketpay.ledger.chart import (
    AccountCode,
    TransferCode,
    debt_account_id,
    parse_account_id,
    system_account_id,
    wallet_account_id,
)
from pocketpay.ledger.errors import InvalidTransfer
from pocketpay.ledger.models import transfers

_STEPS = ("hold", "debt", "release", "post", "reinstate", "loss")


def transfer_ids(dispute_id: str) -> dict[str, str]:
    """The dispute's transfer ids by step: ``dispute_<step>:<dispute>``."""
    return {step: f"dispute_{step}:{dispute_id}" for step in _STEPS}


def _inquiry(d: dict[str, Any]) -> bool:
    return str(d["status"]).startswith("warning_")


async def opened(conn: AsyncConnection, d: dict[str, Any], credited: str, now: datetime) -> None:
    """``payments.dispute.created``: hold what the wallet has, owe the rest."""
    if not _inquiry(d):
        await _open(conn, d, credited, now)


async def closed(conn: AsyncConnection, d: dict[str, Any], credited: str, now: datetime) -> None:
    """``payments.dispute.closed``: won gives back, lost posts the hold and pays the PSP.
    A contradiction (won after lost or the reverse, another amount) raises: the bus retries
    and dead-letters it with an alert, never swallowed."""
    if _inquiry(d):
        return
    status = d["status"]
    if status not in ("won", "lost"):
        raise InvalidTransfer(f"dispute {d['id']} closed with status {status!r}")
    done = await _open(conn, d, credited, now)
    ids = transfer_ids(d["id"])
    hold, debt = done.get(ids["hold"]), done.get(ids["debt"])
    opened_minor = (hold.amount_minor if hold else 0) + (debt.amount_minor if debt else 0)
    contrary = ids["loss"] if status == "won" else ids["reinstate"]
    if contrary in done or opened_minor != int(d["amount_minor"]):
        raise InvalidTransfer(f"dispute {d['id']} {status} contradicts the ledger")
    data = _user_data(d)
    if hold is not None:
        verb = "release" if status == "won" else "post"
        post = status == "lost"
        await service.resolve_pending(conn, ids[verb], ids["hold"], now, post=post, user_data=data)
    disputes = system_account_id("disputes", d["currency"])
    if status == "won" and debt is not None:
        reinstate = TransferCode.DISPUTE_REINSTATE
        await _posted(
            conn, d, (ids["reinstate"], reinstate), disputes, credited, debt.amount_minor, now
        )
    if status == "lost":
        psp = system_account_id("psp_settled", d["currency"])
        loss = (ids["loss"], TransferCode.DISPUTE_LOSS)
        await _posted(conn, d, loss, disputes, psp, opened_minor, now)


async def _open(
    conn: AsyncConnection, d: dict[str, Any], credited: str, now: datetime
) -> dict[str, Row[Any]]:
    """The open step, once; returns the dispute's transfers by id (hold and debt among them).

    The owner's wallet row is taken first (``service.lock_wallet``): the available balance
    read here cannot change before the hold, and the debt changes under the wallet's row as
    repayments do."""
    code, _, currency = parse_account_id(credited)
    ids = transfer_ids(d["id"])
    if code == AccountCode.WALLET:
        await service.lock_wallet(conn, credited, now)
    done = await _transfers(conn, list(ids.values()))
    if ids["hold"] in done or ids["debt"] in done:
        return done
    amount = int(d["amount_minor"])
    held = amount
    if code == AccountCode.WALLET:
        available = (await service.balance(conn, credited)).available_minor
        held = min(amount, max(available, 0))
    disputes = system_account_id("disputes", currency)
    if held > 0:
        hold = service.TransferRequest(
            id=ids["hold"],
            debit_account_id=credited,
            credit_account_id=disputes,
            amount_minor=held,
            currency=currency,
            code=TransferCode.DISPUTE_HOLD,
            pending=True,
            user_data=_user_data(d),
        )
        await service.create_transfer(conn, hold, now)
    if amount > held:
        # Only a wallet falls short (revenue holds all), so the wallet's row is ours already.
        debt = debt_account_id(d["owner_id"], currency)
        assert credited == wallet_account_id(d["owner_id"], currency), credited
        step = (ids["debt"], TransferCode.DISPUTE_DEBT)
        await _posted(conn, d, step, debt, disputes, amount - held, now)
    return await _transfers(conn, list(ids.values()))


async def _posted(
    conn: AsyncConnection,
    d: dict[str, Any],
    step: tuple[str, TransferCode],
    debit: str,
    credit: str,
    amount_minor: int,
    now: datetime,
) -> None:
    """The posted transfer ``step`` (its id and code) of the dispute."""
    transfer_id, code = step
    req = service.TransferRequest(
        id=transfer_id,
        debit_account_id=debit,
        credit_account_id=credit,
        amount_minor=amount_minor,
        currency=d["currency"],
        code=code,
        user_data=_user_data(d),
    )
    await service.create_transfer(conn, req, now)


def _user_data(d: dict[str, Any]) -> dict[str, Any]:
    return {"dispute_id": d["id"], "payment_id": d["payment_id"]}


async def _transfers(conn: AsyncConnection, ids: list[str]) -> dict[str, Row[Any]]:
    rows = (await conn.execute(_BY_IDS, {"w_ids": ids})).all()
    return {r.id: r for r in rows}


_BY_IDS = select(transfers).where(transfers.c.id.in_(bindparam("w_ids", expanding=True)))
