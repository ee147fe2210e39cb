"""``pocketpay check`` on payouts (against the ledger and the PSP) and disputes (against the
ledger): clean after a paid, a failed and a canceled payout, then each break reported; the
dispute findings from hand-written rows (dispute rows and their ``dispute_*`` transfers, as the
ledger writes them), with what is in flight left alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from pocketpay.ledger.chart import debt_account_id, system_account_id, wallet_account_id
from pocketpay.ledger.models import transfers
from pocketpay.payments.models import disputes, payouts
from pocketpay.reconcile import Report, reconcile
from tests.disputes.support import open_dispute
from tests.operations.test_check import check, clean
from tests.payouts.support import (
    DEST,
    NO_ACCOUNT,
    ROUTING,
    advance,
    body,
    funded,
    payout_stack,
    wait_payout,
    wait_sent,
)
from tests.support import Stack, eventually

pytestmark = pytest.mark.timeout(120)

# The hand-written rows' times, and the check's "now" for them: fixed when the module is
# imported, so the rows are as old at check time however long the suite ran before.
NOW = datetime.now(UTC)
OLD = NOW - timedelta(hours=2)  # past the grace and the hold deadline
OWNER = "usr_forged"
WALLET = wallet_account_id(OWNER, "USD")
DISPUTES = system_account_id("disputes", "USD")
DEBT = debt_account_id(OWNER, "USD")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    async with payout_stack(request.param, tmp_path) as s:
        yield s


def found(report: Report) -> set[tuple[str, str]]:
    return {
        (f.kind, f.ids.get("payout_id") or f.ids.get("dispute_id") or f.ids.get("transfer_id", ""))
        for f in report.findings
        if f.kind != "ledger.invariant"  # hand-written transfers move no stored balance
    }


async def _payout(stack: Stack, user: dict[str, Any], amount: int, **more: Any) -> str:
    r = await stack.post(user, "/api/v1/payouts", body(amount, **more))
    assert r.status_code == 202, r.text
    payout_id: str = r.json()["id"]
    await wait_sent(stack, payout_id)
    return payout_id


async def test_payouts_clean_then_each_break_is_reported(stack: Stack) -> None:
    user = await funded(stack, 10000)
    paid = await _payout(stack, user, 2000)
    await advance(stack, paid, arrive=True)
    await wait_payout(stack, user, paid, "paid")
    failed = await _payout(stack, user, 1500, account=NO_ACCOUNT)
    await advance(stack, failed, arrive=True)
    await wait_payout(stack, user, failed, "failed")
    canceled = await _payout(stack, user, 1000)
    r = await stack.post(user, f"/api/v1/payouts/{canceled}/cancel", {})
    assert r.status_code == 200 and r.json()["status"] == "canceled", r.text
    await stack.wait_available(user, 8000)

    report = await clean(stack)
    assert report.checked["payouts"] == 3 and report.checked["PSP payouts"] == 3

    async with stack.runtime.engine.begin() as conn:
        await conn.execute(insert(payouts).values(**_payout_row("po_forged", "paid")))
        # Our paid payout marked failed: its money was posted, and the PSP paid it.
        await conn.execute(
            update(payouts).where(payouts.c.id == paid).values(status="failed", updated_at=OLD)
        )
    provider = stack.runtime.provider()
    account = await provider.tokenize_bank_account(
        country="US",
        currency="USD",
        routing_number=ROUTING,
        account_number=DEST["account_number"],
        idempotency_key="ghost_token",
    )
    ghost = await provider.create_payout(
        amount_minor=500,
        currency="USD",
        destination=account.bank_account_id,
        idempotency_key="ghost_payout",
        metadata={"payout_id": "po_ghost"},
    )

    report = await check(stack)
    assert found(report) == {
        ("ledger.payout_post_missing", "po_forged"),
        ("psp.payout_missing", "po_forged"),
        ("ledger.payout_posted_unexpected", paid),
        ("psp.payout_status_mismatch", paid),
        ("psp.payout_unknown", "po_ghost"),
    }
    (unknown,) = [f for f in report.findings if f.kind == "psp.payout_unknown"]
    assert unknown.ids["psp_payout"] == ghost.payout_id
    (mismatch,) = [f for f in report.findings if f.kind == "psp.payout_status_mismatch"]
    assert mismatch.detail == "ours failed, PSP paid"


def _payout_row(payout_id: str, status: str, amount: int = 700) -> dict[str, Any]:
    return {
        "id": payout_id,
        "owner_id": OWNER,
        "amount_minor": amount,
        "currency": "USD",
        "status": status,
        "stage": "sent",
        "country": "US",
        "routing_number": ROUTING,
        "last4": "6789",
        "psp_bank_account_id": "ba_forged",
        "metadata": {},
        "created_at": OLD,
        "updated_at": OLD,
    }


def _dispute_row(
    dispute_id: str, status: str, *, purpose: str = "top_up", at: datetime = OLD
) -> dict[str, Any]:
    return {
        "id": dispute_id,
        "psp_dispute_id": f"du_{dispute_id}",
        "payment_id": "pay_forged",
        "owner_id": OWNER,
        "purpose": purpose,
        "amount_minor": 1000,
        "currency": "USD",
        "status": status,
        "reason": "fraudulent",
        "created_at": at,
        "updated_at": at,
    }


def _transfer(
    tid: str,
    amount: int,
    *,
    debit: str = WALLET,
    credit: str = DISPUTES,
    kind: str = "posted",
    state: str | None = None,
    pending_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": tid,
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount_minor": amount,
        "currency": "USD",
        "code": 1,
        "kind": kind,
        "pending_id": pending_id,
        "pending_state": state,
        "debit_shard": 0,
        "credit_shard": 0,
        "user_data": {},
        "created_at": OLD,
    }


def _hold(dispute_id: str, amount: int, state: str, debit: str = WALLET) -> dict[str, Any]:
    return _transfer(f"dispute_hold:{dispute_id}", amount, debit=debit, kind="pending", state=state)


def _resolved(step: str, dispute_id: str, amount: int, post: bool) -> dict[str, Any]:
    kind = "post_pending" if post else "void_pending"
    return _transfer(
        f"dispute_{step}:{dispute_id}", amount, kind=kind, pending_id=f"dispute_hold:{dispute_id}"
    )


def _debt(dispute_id: str, amount: int) -> dict[str, Any]:
    return _transfer(f"dispute_debt:{dispute_id}", amount, debit=DEBT)


def _loss(dispute_id: str, amount: int) -> dict[str, Any]:
    psp = system_account_id("psp_settled", "USD")
    return _transfer(f"dispute_loss:{dispute_id}", amount, debit=DISPUTES, credit=psp)


DISPUTE_CASES: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [
    # Clean: open with part held and the rest a debt; lost; won with a debt; an inquiry.
    (
        _dispute_row("dp_open", "needs_response"),
        [_hold("dp_open", 600, "open"), _debt("dp_open", 400)],
    ),
    (
        _dispute_row("dp_lost", "lost"),
        [
            _hold("dp_lost", 1000, "posted"),
            _resolved("post", "dp_lost", 1000, post=True),
            _loss("dp_lost", 1000),
        ],
    ),
    (
        _dispute_row("dp_won", "won"),
        [
            _hold("dp_won", 700, "voided"),
            _debt("dp_won", 300),
            _resolved("release", "dp_won", 700, post=False),
            _transfer("dispute_reinstate:dp_won", 300, debit=DISPUTES, credit=WALLET),
        ],
    ),
    (_dispute_row("dp_inquiry", "warning_needs_response"), []),
    (
        _dispute_row("dp_invoice", "under_review", purpose="invoice"),
        [_hold("dp_invoice", 1000, "open", debit=system_account_id("revenue", "USD"))],
    ),
    # In flight (changed just now): nothing held yet is no finding.
    (_dispute_row("dp_young", "needs_response", at=NOW), []),
    # Broken.
    (_dispute_row("dp_short", "under_review"), [_hold("dp_short", 500, "open")]),
    (_dispute_row("dp_none", "needs_response"), []),
    (
        _dispute_row("dp_kept", "lost"),
        [_hold("dp_kept", 1000, "posted"), _resolved("post", "dp_kept", 1000, post=True)],
    ),
    (
        _dispute_row("dp_won_lost", "won"),
        [
            _hold("dp_won_lost", 1000, "voided"),
            _resolved("release", "dp_won_lost", 1000, post=False),
            _loss("dp_won_lost", 1000),
        ],
    ),
    (_dispute_row("dp_won_held", "won"), [_hold("dp_won_held", 1000, "open")]),
    (_dispute_row("dp_won_debt", "won"), [_debt("dp_won_debt", 1000)]),
    (_dispute_row("dp_asked", "warning_under_review"), [_hold("dp_asked", 1000, "open")]),
    (
        _dispute_row("dp_wrong", "needs_response", purpose="invoice"),
        [_hold("dp_wrong", 1000, "open")],
    ),
]

PAYOUT_CASES: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [
    # Canceled before its hold: the hold is a tombstone (written voided), no posting. Clean.
    (
        _payout_row("po_tomb", "canceled"),
        [_transfer("payout_hold:po_tomb", 700, credit="psp", kind="pending", state="voided")],
    ),
    # Failed with its hold open past the deadline.
    (
        _payout_row("po_stale", "failed"),
        [_transfer("payout_hold:po_stale", 700, credit="psp", kind="pending", state="open")],
    ),
    # Paid for less than its amount, and from another wallet.
    (
        _payout_row("po_less", "paid"),
        [
            _transfer("payout_hold:po_less", 700, credit="psp", kind="pending", state="posted"),
            _transfer("payout_post:po_less", 600, debit="wal_other_USD", kind="post_pending"),
        ],
    ),
]


async def test_dispute_and_payout_ledger_findings(stack: Stack) -> None:
    """Hand-written rows: the ledger's dispute transfers are written as ``ledger.disputes``
    writes them (ids and accounts), without the balances they would move."""
    rows = [(disputes, d, ts) for d, ts in DISPUTE_CASES] + [
        (payouts, p, ts) for p, ts in PAYOUT_CASES
    ]
    async with stack.runtime.engine.begin() as conn:
        for table, row, ts in rows:
            await conn.execute(insert(table).values(**row))
            for t in ts:
                await conn.execute(insert(transfers).values(**t))
        # A posting with no payout of ours.
        await conn.execute(
            insert(transfers).values(**_transfer("payout_post:po_nobody", 100, kind="posted"))
        )
    report = await reconcile(stack.runtime.engine, None, now=NOW)
    assert report.checked["disputes"] == len(DISPUTE_CASES)
    assert found(report) == {
        ("ledger.dispute_amount_mismatch", "dp_short"),
        ("ledger.dispute_hold_missing", "dp_none"),
        ("ledger.dispute_loss_missing", "dp_kept"),
        ("ledger.dispute_loss_unexpected", "dp_won_lost"),
        ("ledger.dispute_hold_unexpected", "dp_won_held"),
        ("ledger.dispute_reinstate_missing", "dp_won_debt"),
        ("ledger.dispute_inquiry_moved", "dp_asked"),
        ("ledger.wrong_account", "dp_wrong"),
        ("ledger.stale_hold", "payout_hold:po_stale"),
        ("ledger.payout_amount_mismatch", "po_less"),
        ("ledger.wrong_account", "po_less"),
        ("ledger.payout_post_unknown", "payout_post:po_nobody"),
    }
    details = {f.ids.get("dispute_id"): f.detail for f in report.findings}
    assert details["dp_short"] == "disputed 1000, held 500 + debt 0"
    assert details["dp_won_held"] == "won, hold is open, not voided"
    assert details["dp_asked"] == "warning_under_review (an inquiry) but dispute_hold:dp_asked"


# -- disputes end to end: the sandbox opens them, the ledger moves the money ---------------

WIN = "Delivered and signed for. winning_evidence"  # the sandbox's rule: this text wins
LOSE = "We think the customer is mistaken."


async def _dispute_of(stack: Stack, user: dict[str, Any], payment_id: str) -> dict[str, Any]:
    async def listed() -> dict[str, Any] | None:
        r = await stack.get(user, f"/api/v1/payments/{payment_id}/disputes")
        data: list[dict[str, Any]] = r.json()["data"]
        return data[0] if data else None

    return await eventually(listed)


async def _answer(stack: Stack, user: dict[str, Any], dispute_id: str, text: str) -> None:
    r = await stack.post(user, f"/api/v1/disputes/{dispute_id}/evidence", {"text": text})
    assert r.status_code == 200, r.text


async def test_disputes_clean_then_broken(stack: Stack) -> None:
    """Won (with a debt part), lost and an inquiry, through payments and the real ledger:
    clean; then our rows say what the ledger did not do."""
    won_user, lost_user, asked_user = await stack.user(), await stack.user(), await stack.user()
    friend = await stack.user()
    won_pay = await stack.pay(won_user, 5000)
    await stack.wait_available(won_user, 5000)
    sent = await stack.post(
        won_user,
        "/api/v1/transfers",
        {"recipient": friend["user"]["email"], "amount_minor": 3000, "currency": "USD"},
    )
    assert sent.status_code in (200, 201), sent.text
    await open_dispute(stack, won_pay["id"])  # 2000 held, 3000 a debt
    lost_pay = await stack.pay(lost_user, 4000, pm="pm_card_createDispute")
    asked_pay = await stack.pay(asked_user, 2000, pm="pm_card_createDisputeInquiry")
    won = await _dispute_of(stack, won_user, won_pay["id"])
    lost = await _dispute_of(stack, lost_user, lost_pay["id"])
    asked = await _dispute_of(stack, asked_user, asked_pay["id"])
    await _answer(stack, won_user, won["id"], WIN)
    await _answer(stack, lost_user, lost["id"], LOSE)
    await _answer(stack, asked_user, asked["id"], LOSE)
    await stack.sandbox.tick()  # the bank decides

    async def decided() -> bool:
        async with stack.runtime.engine.connect() as conn:
            rows = (await conn.execute(select(disputes.c.status))).scalars().all()
        return sorted(rows) == ["lost", "warning_closed", "won"]

    await eventually(decided)
    report = await clean(stack)
    assert report.checked["disputes"] == 3

    async with stack.runtime.engine.begin() as conn:
        for dispute_id, status in ((won["id"], "lost"), (asked["id"], "needs_response")):
            await conn.execute(
                update(disputes)
                .where(disputes.c.id == dispute_id)
                .values(status=status, updated_at=OLD)
            )
    report = await check(stack)
    assert found(report) == {
        ("ledger.dispute_loss_missing", won["id"]),
        ("ledger.dispute_hold_not_posted", won["id"]),
        ("ledger.dispute_hold_missing", asked["id"]),
    }
