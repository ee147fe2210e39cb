"""``pocketpay check``: a three-way reconciliation of the ledger, payments and the PSP.

a. **The ledger's invariants** (``ledger.check.run_check``): stored balances equal the sums of
   the transfers, debits equal credits per currency.
b. **Payments against the ledger**: a captured, settled or refunded payment has its capture
   posted (``pay_cap:<payment>`` for ``amount_captured_minor``) to the account its purpose
   names, as its authorization hold was (a top-up: the owner's wallet; an invoice: the
   platform's revenue, ``sys_revenue_<CUR>``), a settled one its
   ``pay_settle:<payment>``; a succeeded refund has ``refund_post:<refund>``; a failed
   refund's hold is voided; a canceled or failed payment has no capture; no hold
   (``pay_auth:*``, ``refund_hold:*``) is still open past ``hold_deadline_seconds`` while its
   payment or refund is final.
c. **Payments against the PSP**: every PaymentIntent whose metadata carries a ``payment_id``
   matches one payment of ours, with a consistent status and amount received; no payment has
   two intents; every PSP refund matches one refund of ours (by its ``refund_id`` metadata)
   and agrees on success; every succeeded refund of ours is known to the PSP.
d. **Payouts against the ledger**: a ``paid`` payout has its hold posted (``payout_post:<payout>``
   for its amount, from the owner's wallet ``wal_<owner>_<CUR>``); a ``failed`` or ``canceled``
   one has no posting (its hold ``payout_hold:<payout>`` voided, or tombstoned: written
   already voided, or never placed); no payout hold is open past ``hold_deadline_seconds``
   while its payout is final; every ``payout_post`` belongs to a paid payout of ours.
e. **Payouts against the PSP**: every PSP payout whose metadata carries a ``payout_id`` matches
   one payout of ours with an agreeing status (``PAYOUT_AGREES``); no payout of ours has two at
   the PSP; every paid or in-transit payout of ours is known to the PSP.
f. **Disputes against the ledger** (the ledger's ids, ``ledger.disputes``): a chargeback (a
   status not starting with ``warning_``) is covered in full by its pending
   ``dispute_hold:<dispute>`` (what the account still had) plus its posted
   ``dispute_debt:<dispute>`` (the shortfall, a debt of the owner); the hold debits the account
   the disputed payment credited (the wallet; an invoice's: ``sys_revenue_<CUR>``). Lost: the
   hold is posted and ``dispute_loss:<dispute>`` gives the whole amount back to the PSP. Won:
   the hold is voided, the debt part reinstated (``dispute_reinstate:<dispute>``), nothing
   lost. Undecided: the hold is still open, nothing lost. An inquiry (``warning_*``) moves no
   money: it has no ``dispute_*`` transfer at all.

Things in flight are not findings: a payment, refund, payout or dispute changed less than
``grace_seconds`` ago (its event may not be consumed yet, its PSP answer not applied yet), an
intent younger than that, a PSP payout created or due at the bank less than that ago (the PSP
lists no time of its last change: a payout moves to paid or failed at its ``arrival_date``, and
its webhook may not be applied yet). The PSP is listed *before* our tables are read, so an
intent or payout we created is always backed by a row in the snapshot (payments inserts the
row before calling the PSP).

This is an operator tool outside the components: it reads the payments and ledger tables
directly, in one snapshot through one engine. That assumes both live in one database, which
is true in embedded mode (one SQLite file) and in the scale deployment of this repository
(one PostgreSQL, a schema per component). The snapshot is REPEATABLE READ on PostgreSQL (it
never blocks writers); on SQLite it is one transaction, which ``kit.db`` opens with
``BEGIN IMMEDIATE``, so writers wait for the few reads it makes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pocketpay.kit.clock import Clock
from pocketpay.ledger.chart import system_account_id, wallet_account_id
from pocketpay.ledger.check import run_check
from pocketpay.ledger.models import transfers
from pocketpay.payments.flows.refunds import COMPENSATION
from pocketpay.payments.models import disputes, payments, payouts, refunds
from pocketpay.payments.providers.base import (
    Provider,
    PspError,
    PspIntent,
    PspPayout,
    PspRefund,
)
from pocketpay.payments.providers.stripe import StripeProvider
from pocketpay.payments.schemas import INVOICE
from pocketpay.payments.states import PAYOUT_FINAL
from pocketpay.settings import Settings

CAPTURED = frozenset({"captured", "settled", "refunded"})
UNCAPTURED_EXITS = frozenset({"canceled", "failed"})
PAYMENT_FINAL = CAPTURED | UNCAPTURED_EXITS
REFUND_FINAL = frozenset({"succeeded", "failed"})
# PSP intent status -> the payment statuses that agree with it.
AGREES: dict[str, frozenset[str]] = {
    "succeeded": CAPTURED,
    "requires_capture": frozenset({"authorized"}),
    "canceled": UNCAPTURED_EXITS,
    "requires_payment_method": frozenset({"failed"}),
}
_HOLD_PREFIXES = ("pay_auth:", "refund_hold:")

PAYOUT_UNPAID_EXITS = frozenset({"failed", "canceled"})
_PAYOUT_MOVING = frozenset({"pending", "in_transit"})
# PSP payout status -> the payout statuses of ours that agree with it.
PAYOUT_AGREES: dict[str, frozenset[str]] = {
    "paid": frozenset({"paid"}),
    "failed": frozenset({"failed"}),
    "canceled": frozenset({"canceled"}),
    "pending": _PAYOUT_MOVING,
    "in_transit": _PAYOUT_MOVING,
}
# A dispute's transfers in the ledger are ``dispute_<step>:<dispute>`` (``ledger.disputes``).
DISPUTE_STEPS = ("hold", "debt", "release", "reinstate", "post", "loss")
INQUIRY_PREFIX = "warning_"

_TRANSFER_PREFIXES = (
    "pay_cap:",
    "pay_settle:",
    "refund_post:",
    *_HOLD_PREFIXES,
    "payout_hold:",
    "payout_post:",
    "dispute_",
)


@dataclass(frozen=True)
class Finding:
    kind: str  # e.g. ledger.capture_missing, psp.intent_unknown
    ids: dict[str, str]
    detail: str

    def line(self) -> str:
        ids = " ".join(f"{k}={v}" for k, v in self.ids.items())
        return f"{self.kind}  {ids}  {self.detail}"

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.ids, "detail": self.detail}


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, kind: str, detail: str, **ids: str) -> None:
        self.findings.append(Finding(kind, ids, detail))

    @property
    def ledger_consistent(self) -> bool:
        return not any(f.kind == "ledger.invariant" for f in self.findings)


@dataclass(frozen=True)
class Snapshot:
    payments: dict[str, Any]  # id -> row
    refunds: dict[str, Any]
    transfers: dict[str, Any]
    payouts: dict[str, Any] = field(default_factory=dict)
    disputes: dict[str, Any] = field(default_factory=dict)


def provider_from_settings(settings: Settings, clock: Clock) -> StripeProvider:
    """The PSP as PocketPay's payments component reaches it (see ``Runtime.provider``)."""
    psp = settings.psp
    base = psp.api_base or (
        f"{settings.resolved_public_url()}/sandbox" if psp.provider == "sandbox" else ""
    )
    return StripeProvider(
        psp.api_key,
        base,
        clock,
        timeout_seconds=psp.timeout_seconds,
        failure_threshold=psp.breaker_failure_threshold,
        reset_seconds=psp.breaker_reset_seconds,
        name=psp.provider,
    )


async def reconcile(
    engine: AsyncEngine,
    provider: Provider | None,
    *,
    now: datetime,
    grace_seconds: float = 300.0,
    hold_deadline_seconds: float = 3600.0,
    require_psp: bool = False,
) -> Report:
    """Run the three checks; ``provider=None`` skips the PSP (noted in the report)."""
    report = Report()
    intents: list[PspIntent] | None = None
    psp_refunds: list[PspRefund] = []
    psp_payouts: list[PspPayout] = []
    if provider is None:
        report.notes.append("PSP not checked (--no-psp)")
    else:
        try:
            intents = [pi async for pi in provider.list_intents()]
            psp_refunds = [r async for r in provider.list_refunds()]
            psp_payouts = [po async for po in provider.list_payouts()]
        except PspError as exc:
            intents = None
            report.notes.append(f"PSP not checked: {exc}")
            if require_psp:
                report.add("psp.unreachable", str(exc))
    for problem in await run_check(engine):
        report.add("ledger.invariant", problem)
    snap = await read_snapshot(engine)
    report.checked = {
        "payments": len(snap.payments),
        "refunds": len(snap.refunds),
        "payouts": len(snap.payouts),
        "disputes": len(snap.disputes),
        "ledger transfers": len(snap.transfers),
    }
    young = now - timedelta(seconds=grace_seconds)
    old_hold = now - timedelta(seconds=hold_deadline_seconds)
    check_payments_ledger(snap, report, young, old_hold)
    check_payouts_ledger(snap, report, young, old_hold)
    check_disputes_ledger(snap, report, young)
    if intents is not None:
        report.checked["PSP intents"] = len(intents)
        report.checked["PSP refunds"] = len(psp_refunds)
        report.checked["PSP payouts"] = len(psp_payouts)
        check_payments_psp(snap, intents, psp_refunds, report, young)
        check_payouts_psp(snap, psp_payouts, report, young)
    return report


async def read_snapshot(engine: AsyncEngine) -> Snapshot:
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            return await _read(conn)


async def _read(conn: AsyncConnection) -> Snapshot:
    p = payments.c
    pays = await conn.execute(
        select(
            p.id,
            p.owner_id,
            p.status,
            p.currency,
            p.purpose,
            p.amount_captured_minor,
            p.psp_intent_id,
            p.updated_at,
        )
    )
    r = refunds.c
    refs = await conn.execute(
        select(
            r.id, r.payment_id, r.status, r.amount_minor, r.reason, r.psp_refund_id, r.updated_at
        )
    )
    t = transfers.c
    trs = await conn.execute(
        select(
            t.id,
            t.kind,
            t.pending_state,
            t.amount_minor,
            t.debit_account_id,
            t.credit_account_id,
            t.created_at,
        ).where(or_(*(t.id.startswith(prefix) for prefix in _TRANSFER_PREFIXES)))
    )
    po = payouts.c
    pos = await conn.execute(
        select(
            po.id,
            po.owner_id,
            po.amount_minor,
            po.currency,
            po.status,
            po.psp_payout_id,
            po.updated_at,
        )
    )
    d = disputes.c
    dps = await conn.execute(
        select(d.id, d.owner_id, d.purpose, d.amount_minor, d.currency, d.status, d.updated_at)
    )
    return Snapshot(
        {row.id: row for row in pays},
        {row.id: row for row in refs},
        {row.id: row for row in trs},
        {row.id: row for row in pos},
        {row.id: row for row in dps},
    )


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite returns naive UTC


def check_payments_ledger(
    snap: Snapshot, report: Report, young: datetime, old_hold: datetime
) -> None:
    tr = snap.transfers
    for pid, p in snap.payments.items():
        if _utc(p.updated_at) > young:
            continue  # its event may not be consumed yet
        cap = tr.get(f"pay_cap:{pid}")
        if p.status in CAPTURED:
            if cap is None:
                report.add("ledger.capture_missing", f"{p.status} with no capture", payment_id=pid)
            elif cap.amount_minor != p.amount_captured_minor:
                report.add(
                    "ledger.capture_amount_mismatch",
                    f"captured {p.amount_captured_minor}, posted {cap.amount_minor}",
                    payment_id=pid,
                )
        if p.status == "settled" and f"pay_settle:{pid}" not in tr:
            report.add("ledger.settlement_missing", "settled with no settlement", payment_id=pid)
        if p.status in UNCAPTURED_EXITS and cap is not None:
            report.add("ledger.capture_unexpected", f"{p.status} but captured", payment_id=pid)
        hold = tr.get(f"pay_auth:{pid}")
        _credited_to(p, (hold, cap), report)
        _stale_hold(hold, p.status in PAYMENT_FINAL, old_hold, report)
    for rid, r in snap.refunds.items():
        if _utc(r.updated_at) > young or r.reason == COMPENSATION:
            continue  # in flight; or a compensation, which never touched a wallet
        hold = tr.get(f"refund_hold:{rid}")
        if r.status == "succeeded" and f"refund_post:{rid}" not in tr:
            report.add("ledger.refund_post_missing", "succeeded, hold not posted", refund_id=rid)
        if r.status == "failed" and hold is not None and hold.pending_state != "voided":
            report.add(
                "ledger.refund_hold_not_voided",
                f"failed, hold is {hold.pending_state}",
                refund_id=rid,
                payment_id=r.payment_id,
            )
        _stale_hold(hold, r.status in REFUND_FINAL, old_hold, report)


def _credited_to(p: Any, postings: tuple[Any, ...], report: Report) -> None:
    """A payment's hold and capture credit the account its purpose names: an invoice's money
    is the platform's revenue and never reaches the owner's wallet; a top-up's is the wallet's."""
    if p.purpose == INVOICE:
        want = system_account_id("revenue", p.currency)
    else:
        want = wallet_account_id(p.owner_id, p.currency)
    for t in postings:
        if t is not None and t.credit_account_id != want:
            report.add(
                "ledger.wrong_account",
                f"{p.purpose} payment, {t.id} credits {t.credit_account_id}, not {want}",
                payment_id=p.id,
            )


def _stale_hold(hold: Any, final: bool, old_hold: datetime, report: Report) -> None:
    if hold is None or not final or hold.pending_state != "open":
        return
    if _utc(hold.created_at) < old_hold:
        report.add("ledger.stale_hold", "open past the deadline", transfer_id=hold.id)


def check_payments_psp(
    snap: Snapshot,
    intents: list[PspIntent],
    psp_refunds: list[PspRefund],
    report: Report,
    young: datetime,
) -> None:
    by_payment: dict[str, list[PspIntent]] = defaultdict(list)
    for pi in intents:
        if pid := pi.metadata.get("payment_id"):
            by_payment[pid].append(pi)
    for pid, found in by_payment.items():
        p = snap.payments.get(pid)
        if p is None:
            for pi in found:
                report.add(
                    "psp.intent_unknown", "no such payment", payment_id=pid, intent=pi.intent_id
                )
            continue
        if len(found) > 1:
            ids = ",".join(pi.intent_id for pi in found)
            report.add("psp.duplicate_intent", f"{len(found)} intents", payment_id=pid, intents=ids)
        pi = next((i for i in found if i.intent_id == p.psp_intent_id), found[0])
        if _in_flight(p.updated_at, pi.created, young):
            continue
        if p.status in UNCAPTURED_EXITS and pi.status == "succeeded":
            _check_compensated(snap, pid, pi, report)
        elif p.status not in AGREES.get(pi.status, frozenset()):
            report.add(
                "psp.status_mismatch",
                f"ours {p.status}, PSP {pi.status}",
                payment_id=pid,
                intent=pi.intent_id,
            )
        elif pi.status == "succeeded" and pi.amount_received_minor != p.amount_captured_minor:
            report.add(
                "psp.amount_mismatch",
                f"ours {p.amount_captured_minor}, PSP received {pi.amount_received_minor}",
                payment_id=pid,
                intent=pi.intent_id,
            )
    for pid, p in snap.payments.items():
        missing = pid not in by_payment and p.status in CAPTURED | {"authorized"}
        if missing and _utc(p.updated_at) <= young:
            report.add("psp.intent_missing", f"{p.status}, PSP has no intent", payment_id=pid)
    _check_refunds_psp(snap, psp_refunds, report, young)


def _check_compensated(snap: Snapshot, pid: str, pi: PspIntent, report: Report) -> None:
    """A payment we canceled or failed that the PSP charged anyway (a cancel that raced the
    authorization) agrees with the PSP once our compensation refund gave it all back."""
    back = sum(
        r.amount_minor
        for r in snap.refunds.values()
        if r.payment_id == pid and r.reason == COMPENSATION and r.status == "succeeded"
    )
    if back != pi.amount_received_minor:
        report.add(
            "psp.charged_not_compensated",
            f"ours canceled or failed, PSP charged {pi.amount_received_minor}, refunded {back}",
            payment_id=pid,
            intent=pi.intent_id,
        )


def _in_flight(updated_at: datetime, intent_created: int, young: datetime) -> bool:
    return _utc(updated_at) > young or intent_created > young.timestamp()


def _check_refunds_psp(
    snap: Snapshot,
    psp_refunds: list[PspRefund],
    report: Report,
    young: datetime,
) -> None:
    ours_intents = {p.psp_intent_id for p in snap.payments.values() if p.psp_intent_id}
    by_refund: dict[str, list[PspRefund]] = defaultdict(list)
    for pr in psp_refunds:
        rid = pr.metadata.get("refund_id")
        if rid and rid in snap.refunds:
            by_refund[rid].append(pr)
        elif rid or pr.intent_id in ours_intents:
            report.add(
                "psp.refund_unknown",
                "no such refund of ours",
                psp_refund=pr.refund_id,
                refund_id=rid or "",
            )
    for rid, r in snap.refunds.items():
        found = by_refund.get(rid, [])
        if len(found) > 1:
            ids = ",".join(x.refund_id for x in found)
            report.add(
                "psp.duplicate_refund", f"{len(found)} PSP refunds", refund_id=rid, psp_refunds=ids
            )
        if _utc(r.updated_at) > young:
            continue
        if not found:
            if r.status == "succeeded":
                report.add("psp.refund_missing", "succeeded, PSP has no refund", refund_id=rid)
            continue
        psp_ok = found[0].status == "succeeded"
        if psp_ok != (r.status == "succeeded") and found[0].created <= young.timestamp():
            report.add(
                "psp.refund_status_mismatch",
                f"ours {r.status}, PSP {found[0].status}",
                refund_id=rid,
                psp_refund=found[0].refund_id,
            )


# -- payouts ---------------------------------------------------------------------------------


def check_payouts_ledger(
    snap: Snapshot, report: Report, young: datetime, old_hold: datetime
) -> None:
    tr = snap.transfers
    for poid, po in snap.payouts.items():
        if _utc(po.updated_at) > young:
            continue  # its event may not be consumed yet
        hold = tr.get(f"payout_hold:{poid}")
        post = tr.get(f"payout_post:{poid}")
        if po.status == "paid":
            _payout_posted(po, post, report)
        elif post is not None:
            report.add(
                "ledger.payout_posted_unexpected",
                f"{po.status} but posted {post.amount_minor}",
                payout_id=poid,
            )
        want = wallet_account_id(po.owner_id, po.currency)
        for t in (hold, post):
            if t is not None and t.debit_account_id != want:
                report.add(
                    "ledger.wrong_account",
                    f"payout, {t.id} debits {t.debit_account_id}, not {want}",
                    payout_id=poid,
                )
        _stale_hold(hold, po.status in PAYOUT_FINAL, old_hold, report)
    for tid in tr:
        poid = tid.removeprefix("payout_post:")
        if poid != tid and poid not in snap.payouts:
            report.add("ledger.payout_post_unknown", "no such payout", transfer_id=tid)


def _payout_posted(po: Any, post: Any, report: Report) -> None:
    if post is None:
        report.add("ledger.payout_post_missing", "paid, hold not posted", payout_id=po.id)
    elif post.amount_minor != po.amount_minor:
        report.add(
            "ledger.payout_amount_mismatch",
            f"paid {po.amount_minor}, posted {post.amount_minor}",
            payout_id=po.id,
        )


def check_payouts_psp(
    snap: Snapshot, psp_payouts: list[PspPayout], report: Report, young: datetime
) -> None:
    by_payout: dict[str, list[PspPayout]] = defaultdict(list)
    for x in psp_payouts:
        if poid := x.metadata.get("payout_id"):
            by_payout[poid].append(x)
    for poid, found in by_payout.items():
        po = snap.payouts.get(poid)
        if po is None:
            for x in found:
                report.add(
                    "psp.payout_unknown", "no such payout", payout_id=poid, psp_payout=x.payout_id
                )
            continue
        if len(found) > 1:
            ids = ",".join(x.payout_id for x in found)
            report.add(
                "psp.duplicate_payout", f"{len(found)} PSP payouts", payout_id=poid, psp_payouts=ids
            )
        x = next((f for f in found if f.payout_id == po.psp_payout_id), found[0])
        if _utc(po.updated_at) > young or _psp_payout_moved(x) > young.timestamp():
            continue
        if po.status not in PAYOUT_AGREES.get(x.status, frozenset()):
            report.add(
                "psp.payout_status_mismatch",
                f"ours {po.status}, PSP {x.status}",
                payout_id=poid,
                psp_payout=x.payout_id,
            )
        elif (x.amount_minor, x.currency) != (po.amount_minor, po.currency):
            report.add(
                "psp.payout_amount_mismatch",
                f"ours {po.amount_minor} {po.currency}, PSP {x.amount_minor} {x.currency}",
                payout_id=poid,
                psp_payout=x.payout_id,
            )
    for poid, po in snap.payouts.items():
        sent = po.status in ("paid", "in_transit")  # statuses only the PSP gives
        if sent and poid not in by_payout and _utc(po.updated_at) <= young:
            report.add("psp.payout_missing", f"{po.status}, PSP has no payout", payout_id=poid)


def _psp_payout_moved(x: PspPayout) -> int:
    """When the PSP payout last changed, as far as its list tells: a payout turns paid or
    failed at its arrival date; before that it was created (or moved in transit, unlisted,
    which agrees with ours either way)."""
    return max(x.created, x.arrival_date) if x.status in ("paid", "failed") else x.created


# -- disputes --------------------------------------------------------------------------------


def check_disputes_ledger(snap: Snapshot, report: Report, young: datetime) -> None:
    for did, d in snap.disputes.items():
        if _utc(d.updated_at) > young:
            continue  # its event may not be consumed yet
        steps = {s: snap.transfers.get(f"dispute_{s}:{did}") for s in DISPUTE_STEPS}
        if d.status.startswith(INQUIRY_PREFIX):
            moved = [t.id for t in steps.values() if t is not None]
            if moved:
                report.add(
                    "ledger.dispute_inquiry_moved",
                    f"{d.status} (an inquiry) but {', '.join(moved)}",
                    dispute_id=did,
                )
            continue
        _dispute_covered(d, steps, report)
        if d.status == "lost":
            _dispute_lost(d, steps, report)
        else:
            _dispute_not_lost(d, steps, report)


def _dispute_covered(d: Any, steps: dict[str, Any], report: Report) -> None:
    """The whole disputed amount is taken at once: held from the account the payment
    credited, the shortfall (money already spent) as the owner's debt."""
    hold, debt = steps["hold"], steps["debt"]
    held = hold.amount_minor if hold is not None else 0
    owed = debt.amount_minor if debt is not None else 0
    if hold is None and debt is None:
        report.add("ledger.dispute_hold_missing", f"{d.status}, nothing held", dispute_id=d.id)
    elif held + owed != d.amount_minor:
        report.add(
            "ledger.dispute_amount_mismatch",
            f"disputed {d.amount_minor}, held {held} + debt {owed}",
            dispute_id=d.id,
        )
    if d.purpose == INVOICE:
        want = system_account_id("revenue", d.currency)
    else:
        want = wallet_account_id(d.owner_id, d.currency)
    if hold is not None and hold.debit_account_id != want:
        report.add(
            "ledger.wrong_account",
            f"{d.purpose} dispute, {hold.id} debits {hold.debit_account_id}, not {want}",
            dispute_id=d.id,
        )


def _dispute_lost(d: Any, steps: dict[str, Any], report: Report) -> None:
    hold, loss = steps["hold"], steps["loss"]
    if loss is None:
        report.add("ledger.dispute_loss_missing", "lost, nothing given back", dispute_id=d.id)
    elif loss.amount_minor != d.amount_minor:
        report.add(
            "ledger.dispute_loss_amount_mismatch",
            f"disputed {d.amount_minor}, lost {loss.amount_minor}",
            dispute_id=d.id,
        )
    if hold is not None and hold.pending_state != "posted":
        report.add(
            "ledger.dispute_hold_not_posted", f"lost, hold is {hold.pending_state}", dispute_id=d.id
        )


def _dispute_not_lost(d: Any, steps: dict[str, Any], report: Report) -> None:
    """Won: the hold released and the debt part reinstated. Undecided: the hold still open.
    Neither gives anything to the PSP."""
    hold, debt, loss = steps["hold"], steps["debt"], steps["loss"]
    if loss is not None:
        report.add("ledger.dispute_loss_unexpected", f"{d.status} but {loss.id}", dispute_id=d.id)
    want = "voided" if d.status == "won" else "open"
    if hold is not None and hold.pending_state != want:
        report.add(
            "ledger.dispute_hold_unexpected",
            f"{d.status}, hold is {hold.pending_state}, not {want}",
            dispute_id=d.id,
        )
    if d.status != "won" or debt is None:
        return
    back = steps["reinstate"].amount_minor if steps["reinstate"] is not None else 0
    if back != debt.amount_minor:
        report.add(
            "ledger.dispute_reinstate_missing",
            f"won, debt {debt.amount_minor}, reinstated {back}",
            dispute_id=d.id,
        )
