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

Things in flight are not findings: a payment or refund changed less than ``grace_seconds``
ago (its event may not be consumed yet, its PSP answer not applied yet), an intent younger
than that. The PSP is listed *before* our tables are read, so an intent we created is always
backed by a payment row in the snapshot (payments inserts the row before calling the PSP).

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
from pocketpay.payments.models import payments, refunds
from pocketpay.payments.providers.base import Provider, PspError, PspIntent, PspRefund
from pocketpay.payments.providers.stripe import StripeProvider
from pocketpay.payments.schemas import INVOICE
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

_TRANSFER_PREFIXES = ("pay_cap:", "pay_settle:", "refund_post:", *_HOLD_PREFIXES)


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
    if provider is None:
        report.notes.append("PSP not checked (--no-psp)")
    else:
        try:
            intents = [pi async for pi in provider.list_intents()]
            psp_refunds = [r async for r in provider.list_refunds()]
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
        "ledger transfers": len(snap.transfers),
    }
    young = now - timedelta(seconds=grace_seconds)
    old_hold = now - timedelta(seconds=hold_deadline_seconds)
    check_payments_ledger(snap, report, young, old_hold)
    if intents is not None:
        report.checked["PSP intents"] = len(intents)
        report.checked["PSP refunds"] = len(psp_refunds)
        check_payments_psp(snap, intents, psp_refunds, report, young)
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
            t.id, t.kind, t.pending_state, t.amount_minor, t.credit_account_id, t.created_at
        ).where(or_(*(t.id.startswith(prefix) for prefix in _TRANSFER_PREFIXES)))
    )
    return Snapshot(
        {row.id: row for row in pays},
        {row.id: row for row in refs},
        {row.id: row for row in trs},
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
