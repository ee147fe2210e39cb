"""Chaos, end to end (issue 6): retrying clients create payments, transfers and refunds over
HTTP while each process of a scale-mode fleet (gateway, payments, ledger, sandbox: separate
``pocketpay serve`` processes on PostgreSQL + NATS JetStream) is SIGKILLed and restarted in
turn, the NATS server is SIGKILLed and restarted, and PostgreSQL connections are cut twice.

After a drain, the system must have converged: the three-way ``pocketpay check`` is clean;
every Idempotency-Key has exactly one effect (one payment, transfer or refund row, one PSP
intent per payment, at most one PSP refund per refund); no attempt is stuck, no dead letter;
every client got a final answer for every key; money is conserved, and the wallets hold
exactly the card money captured minus the card money refunded.

The client is what the API docs ask of a real one: one Idempotency-Key per operation, the same
key again on any 5xx, 409 ``idempotency.in_progress``, timeout or connection error, with a
capped backoff. Its budget per operation (90 s) covers the gateway's idempotency lock
(``LOCK_SECONDS`` = 60): a request that was running in a gateway killed by SIGKILL keeps its
key locked until the lock expires, and only then can a retry take it over. A client waiting
on such a key does nothing else, so the gateway is killed last: killed first, it can idle
every client for a minute and the other faults would meet no load.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.bus import bus_dead_letters
from pocketpay.kit.clock import SystemClock
from pocketpay.kit.db import create_engine
from pocketpay.kit.ids import derive_id
from pocketpay.ledger.chart import TransferCode
from pocketpay.ledger.check import run_check
from pocketpay.ledger.models import balances, transfers
from pocketpay.payments.flows.refunds import COMPENSATION
from pocketpay.payments.models import attempts, payments, refunds
from pocketpay.payments.providers.base import PspIntent, PspRefund
from pocketpay.payments.providers.stripe import StripeProvider
from pocketpay.reconcile import reconcile
from tests.e2e import chaos
from tests.e2e import fleet as fl
from tests.e2e.chaos import Op
from tests.e2e.fleet import Fleet

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.nats,
    pytest.mark.timeout(330),
]

DB_NAME = f"pocketpay_chaos_{os.getpid()}"
LAYOUT = {"sandbox": 1, "ledger": 1, "payments": 1, "gateway": 1}
ENV = {
    "POCKETPAY_SANDBOX__SETTLE_DELAY_SECONDS": "0.5",
    "POCKETPAY_PSP__SETTLE_POLL_SECONDS": "0.2",
    # The reconciler resumes an open attempt (or an orphaned created payment) after 1 s.
    "POCKETPAY_PSP__ATTEMPT_RETRY_SECONDS": "1",
    "POCKETPAY_BUS__RELAY_POLL_SECONDS": "0.1",
    "POCKETPAY_BUS__RETRY_DELAY_MS": "50",
    # The production proportions, scaled down: an open attempt is resumed up to
    # attempt_max_tries (10) times, attempt_retry_seconds apart (by default 10 x 30 s = 5 min),
    # far longer than the PSP breaker stays open (30 s). With retries 1 s apart the breaker
    # must shrink as well: a resumption the open breaker refuses still counts as a try, so
    # with a 30 s breaker every attempt made while it is open is flagged stuck within ~10 s.
    "POCKETPAY_PSP__BREAKER_RESET_SECONDS": "2",
    # A message delivered to a process that was then killed comes back after this.
    "POCKETPAY_BUS__ACK_WAIT_SECONDS": "5",
}
PASSWORD = "correct-horse-battery"
CLIENTS = 8
FUNDED = 5
FUNDING_MINOR = 20_000
OP_BUDGET_SECONDS = 90.0
FAULT_GAP_SECONDS = 3.0
DRAIN_SECONDS = 120.0
SEED = 6


@dataclass
class Client:
    user_id: str
    email: str
    headers: dict[str, str]
    payments: list[str] = field(default_factory=list)  # ids of payments answered 202


@dataclass
class Run:
    fleet: Fleet
    ops: list[Op] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)
    in_flight: int = 0

    def note(self, what: str) -> None:
        self.faults.append(f"{time.monotonic() - self.t0:6.1f}s {what}")


def test_chaos_converges_with_one_effect_per_key(tmp_path: Path) -> None:
    with chaos.chaos_fleet(tmp_path, LAYOUT, ENV, DB_NAME) as (fleet, nats):
        run = Run(fleet)
        asyncio.run(_scenario(run, nats))


async def _scenario(run: Run, nats: chaos.PrivateNats) -> None:
    fleet = run.fleet
    rng = random.Random(SEED)
    async with httpx.AsyncClient(base_url=fleet.gateway, timeout=10.0) as http:
        clients = [await _signup(http, f"chaos{i}") for i in range(CLIENTS)]
        await asyncio.gather(*(_fund(http, run, c) for c in clients[:FUNDED]))
        run.note("funded; load and faults start")
        stop = asyncio.Event()
        load = [
            asyncio.create_task(
                _client_loop(http, run, c, clients, stop, random.Random(rng.random()))
            )
            for c in clients
        ]
        try:
            await _faults(run, nats)
        finally:
            stop.set()
            await asyncio.gather(*load)
        run.note(f"load stopped after {len(run.ops)} operations")
    engine = create_engine(fleet.database_url, pool_size=2)
    provider = StripeProvider(
        "sk_test_pocketpay_sandbox", fleet.one("sandbox").url, SystemClock(), timeout_seconds=10
    )
    try:
        await _drain(run, engine, provider)
        await _verify(run, engine, provider)
    finally:
        await engine.dispose()


# -- the load --------------------------------------------------------------------------------


async def _signup(http: httpx.AsyncClient, name: str) -> Client:
    email = f"{name}-{uuid.uuid4().hex[:8]}@example.com"
    r = await http.post(
        "/api/v1/auth/signup", json={"email": email, "password": PASSWORD, "name": name}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    return Client(body["user"]["id"], email, {"Authorization": f"Bearer {body['access_token']}"})


def _pay_body(amount_minor: int) -> dict[str, Any]:
    return {
        "amount_minor": amount_minor,
        "currency": "USD",
        "payment_method": "pm_card_visa",
        "capture_method": "automatic",
    }


async def _fund(http: httpx.AsyncClient, run: Run, c: Client) -> None:
    op = Op("pay", c.user_id, uuid.uuid4().hex, "/api/v1/payments", _pay_body(FUNDING_MINOR))
    run.ops.append(op)
    await chaos.send(http, c.headers, op, OP_BUDGET_SECONDS, random.Random())
    assert op.status == 202, (op.status, op.answer)
    c.payments.append(op.answer["id"])
    deadline = time.monotonic() + 60
    while True:
        r = await http.get("/api/v1/wallets", headers=c.headers)
        usd = [w for w in r.json()["data"] if w["currency"] == "USD"]
        if usd and usd[0]["available_minor"] == FUNDING_MINOR:
            return
        assert time.monotonic() < deadline, f"{c.email} not funded: {r.text}"
        await asyncio.sleep(0.1)


async def _client_loop(
    http: httpx.AsyncClient,
    run: Run,
    me: Client,
    everyone: list[Client],
    stop: asyncio.Event,
    rng: random.Random,
) -> None:
    """One user doing what users do, each operation retried to a final answer."""
    others = [c for c in everyone if c is not me]
    while not stop.is_set():
        roll = rng.random()
        if roll < 0.35:
            op = Op(
                "pay",
                me.user_id,
                uuid.uuid4().hex,
                "/api/v1/payments",
                _pay_body(rng.randint(300, 2500)),
            )
        elif roll < 0.75:
            to = rng.choice(others)
            body = {"recipient": to.email, "amount_minor": rng.randint(100, 900), "currency": "USD"}
            op = Op("transfer", me.user_id, uuid.uuid4().hex, "/api/v1/transfers", body)
        else:
            refundable = await _refundable(http, me, rng)
            if refundable is None:
                await asyncio.sleep(0.05)
                continue
            path = f"/api/v1/payments/{refundable}/refunds"
            op = Op(
                "refund", me.user_id, uuid.uuid4().hex, path, {"amount_minor": rng.randint(50, 300)}
            )
        run.ops.append(op)
        run.in_flight += 1
        try:
            await chaos.send(http, me.headers, op, OP_BUDGET_SECONDS, rng)
        finally:
            run.in_flight -= 1
        if op.kind == "pay" and op.status == 202:
            me.payments.append(op.answer["id"])
        await asyncio.sleep(rng.uniform(0.02, 0.15))


async def _refundable(http: httpx.AsyncClient, me: Client, rng: random.Random) -> str | None:
    """One of my payments that is captured with something left to refund (a GET; during a
    fault it may fail, then the client does something else)."""
    if not me.payments:
        return None
    pid = rng.choice(me.payments)
    try:
        r = await http.get(f"/api/v1/payments/{pid}", headers=me.headers)
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    p = r.json()
    left = p["amount_captured_minor"] - p["amount_refunded_minor"]
    return pid if p["status"] in ("captured", "settled") and left >= 300 else None


# -- the faults ------------------------------------------------------------------------------


async def _faults(run: Run, nats: chaos.PrivateNats) -> None:
    fleet = run.fleet
    await asyncio.sleep(FAULT_GAP_SECONDS)
    # The gateway last: a request it held dies with its idempotency key locked for 60 s.
    for step in ("payments", "postgres", "ledger", "nats", "sandbox", "postgres", "gateway"):
        run.note(f"{run.in_flight} operations in flight")
        if step == "postgres":
            n = await chaos.cut_postgres(fl._admin_dsn(), DB_NAME)
            run.note(f"cut {n} PostgreSQL connections")
        elif step == "nats":
            nats.kill()
            run.note("SIGKILL nats-server")
            await asyncio.to_thread(nats.start)
            states = await asyncio.to_thread(chaos.wait_serving, fleet.procs)
            run.note(f"nats-server restarted; fleet serving {states}")
        else:
            proc = fleet.one(step)
            chaos.sigkill(proc)
            run.note(f"SIGKILL {proc.name}")
            chaos.respawn(fleet, proc)
            states = await asyncio.to_thread(chaos.wait_serving, [proc])
            run.note(f"{proc.name} restarted: {states[proc.name]}")
        await asyncio.sleep(FAULT_GAP_SECONDS)


# -- drain and verification ------------------------------------------------------------------


async def _drain(run: Run, engine: AsyncEngine, provider: StripeProvider) -> None:
    """Poll until nothing is in flight and the three-way check is clean (bounded)."""
    deadline = time.monotonic() + DRAIN_SECONDS
    last: list[str] = []
    while True:
        last = await _in_flight(engine)
        if not last:
            report = await reconcile(
                engine,
                provider,
                now=datetime.now(UTC),
                grace_seconds=0,
                hold_deadline_seconds=0,
                require_psp=True,
            )
            last = [f.line() for f in report.findings]
            if not last:
                run.note("drained: nothing in flight, three-way check clean")
                return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not drained after {DRAIN_SECONDS}s:\n" + "\n".join(last[:40]) + _context(run)
            )
        await asyncio.sleep(0.5)


async def _in_flight(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        created = (
            (
                await conn.execute(
                    select(payments.c.id).where(payments.c.status.in_(("created", "authorized")))
                )
            )
            .scalars()
            .all()
        )
        open_refunds = (
            await conn.execute(
                select(refunds.c.id, refunds.c.status).where(
                    refunds.c.status.in_(("pending", "held"))
                )
            )
        ).all()
        open_attempts = (
            await conn.execute(
                select(
                    attempts.c.payment_id,
                    attempts.c.operation,
                    attempts.c.status,
                    attempts.c.tries,
                    attempts.c.error,
                ).where(attempts.c.status.in_(("pending", "stuck")))
            )
        ).all()
    return (
        [f"payment {pid} still created/authorized" for pid in created]
        + [f"refund {r.id} still {r.status}" for r in open_refunds]
        + [
            f"attempt {a.operation} of {a.payment_id} {a.status} after {a.tries} tries: "
            f"{(a.error or '')[:200]}"
            for a in open_attempts
        ]
    )


async def _verify(run: Run, engine: AsyncEngine, provider: StripeProvider) -> None:
    problems: list[str] = []
    ops = run.ops

    # Every key got a final, non-5xx answer.
    for op in ops:
        if not op.final:
            problems.append(
                f"no final answer: {op.kind} key={op.key} last={op.status} {op.history[-5:]}"
            )
        elif op.status is not None and op.status >= 500:
            problems.append(f"5xx final answer: {op.kind} key={op.key} {op.status} {op.answer}")
    if not any(op.history for op in ops):
        problems.append("no client saw a single unknown outcome: the faults missed the load")
    by_kind = Counter((op.kind, op.status) for op in ops)
    run.note(f"answers: {dict(sorted(by_kind.items(), key=str))}")
    run.note(f"retried keys: {sum(1 for op in ops if op.history)}")

    async with engine.connect() as conn:
        pay_rows = {r.id: r for r in (await conn.execute(select(payments))).all()}
        refund_rows = {r.id: r for r in (await conn.execute(select(refunds))).all()}
        wallet_transfers = {
            r.id: r
            for r in (
                await conn.execute(
                    select(transfers).where(transfers.c.code == int(TransferCode.WALLET_TRANSFER))
                )
            ).all()
        }
        stuck = (await conn.execute(select(attempts).where(attempts.c.status == "stuck"))).all()
        dead = (await conn.execute(select(bus_dead_letters))).all()
        wallet_rows = (
            await conn.execute(
                select(
                    func.coalesce(
                        func.sum(balances.c.credits_posted - balances.c.debits_posted), 0
                    ),
                    func.coalesce(
                        func.sum(balances.c.credits_pending + balances.c.debits_pending), 0
                    ),
                ).where(balances.c.account_id.startswith("wal_"))
            )
        ).one()
    intents: list[PspIntent] = [i async for i in provider.list_intents()]
    psp_refunds: list[PspRefund] = [r async for r in provider.list_refunds()]

    # One effect per key: the rows are exactly the objects derived from the keys.
    want_pay = {derive_id("pay", op.user_id, op.key): op for op in ops if op.kind == "pay"}
    for pid, op in want_pay.items():
        if op.status == 202 and op.answer.get("id") != pid:
            problems.append(f"payment key {op.key}: answered {op.answer.get('id')}, derived {pid}")
        if op.status == 202 and pid not in pay_rows:
            problems.append(f"payment key {op.key}: answered 202, no row {pid}")
    for pid in pay_rows.keys() - want_pay.keys():
        problems.append(f"payment {pid} made by no key of ours (a second effect?)")
    for pid, p in pay_rows.items():
        if p.status not in ("captured", "settled", "refunded"):
            problems.append(
                f"payment {pid} ended {p.status} ({p.failure_code}: {p.failure_message})"
            )

    want_tr = {derive_id("tr", op.user_id, op.key): op for op in ops if op.kind == "transfer"}
    for tid, op in want_tr.items():
        if op.status == 201 and tid not in wallet_transfers:
            problems.append(f"transfer key {op.key}: answered 201, no ledger transfer {tid}")
        if op.status != 201 and tid in wallet_transfers:
            problems.append(
                f"transfer key {op.key}: answered {op.status} {op.answer}, but {tid} posted"
            )
    for tid in wallet_transfers.keys() - want_tr.keys():
        problems.append(f"wallet transfer {tid} made by no key of ours (a second effect?)")

    want_re = {derive_id("re", op.user_id, op.key): op for op in ops if op.kind == "refund"}
    ours = {rid: r for rid, r in refund_rows.items() if r.reason != COMPENSATION}
    for rid, op in want_re.items():
        if op.status == 202 and rid not in ours:
            problems.append(f"refund key {op.key}: answered 202, no refund row {rid}")
    for rid in ours.keys() - want_re.keys():
        problems.append(f"refund {rid} made by no key of ours (a second effect?)")
    compensations = [rid for rid, r in refund_rows.items() if r.reason == COMPENSATION]
    if compensations:
        problems.append(f"compensation refunds (nothing was canceled): {compensations}")

    # The PSP: one intent per payment, nothing unknown; at most one PSP refund per refund.
    per_payment = Counter(i.metadata.get("payment_id") for i in intents)
    for pid in pay_rows:
        if per_payment[pid] != 1:
            problems.append(f"payment {pid} has {per_payment[pid]} PSP intents")
    for pid in per_payment.keys() - pay_rows.keys():
        problems.append(f"PSP intent(s) for unknown payment {pid}")
    per_refund: dict[str, list[PspRefund]] = defaultdict(list)
    for pr in psp_refunds:
        per_refund[pr.metadata.get("refund_id", "")].append(pr)
    for rid, r in refund_rows.items():
        found = per_refund.get(rid, [])
        if len(found) > 1 or (r.status == "succeeded") != (
            len(found) == 1 and found[0].status == "succeeded"
        ):
            problems.append(
                f"refund {rid} {r.status}: PSP refunds {[(x.refund_id, x.status) for x in found]}"
            )
    for rid in per_refund.keys() - refund_rows.keys():
        problems.append(f"PSP refund(s) for unknown refund {rid!r}")

    # Nothing stuck, nothing dead-lettered.
    problems += [f"stuck attempt: {a.operation} of {a.payment_id}: {a.error}" for a in stuck]
    problems += [f"dead letter: {d.durable} {d.subject} {d.event_id} {d.error[:300]}" for d in dead]

    # Money: conserved, and the wallets hold the card money captured minus refunded.
    problems += [f"ledger: {p}" for p in await run_check(engine)]
    captured = sum(p.amount_captured_minor for p in pay_rows.values())
    refunded = sum(r.amount_minor for r in ours.values() if r.status == "succeeded")
    posted, pending = int(wallet_rows[0]), int(wallet_rows[1])
    if posted != captured - refunded or pending != 0:
        problems.append(
            f"wallets hold {posted} posted, {pending} pending; "
            f"card money captured {captured} - refunded {refunded} = {captured - refunded}"
        )

    assert not problems, "\n".join(problems[:60]) + _context(run)
    print("\n".join(run.faults))


def _context(run: Run) -> str:
    logs = ", ".join(str(p.log_path) for p in run.fleet.procs)
    return "\n--- timeline ---\n" + "\n".join(run.faults) + f"\n--- logs: {logs}"
