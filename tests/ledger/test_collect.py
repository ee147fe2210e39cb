"""``LedgerClient.collect``: an invoice paid from a wallet, on SQLite and on PostgreSQL.

Each test gets a ledger component as a scale-mode process would run it (``Runtime`` with the
ledger alone) and two clients of it: the ``LedgerApi`` object (in-process calls) and an
``HttpLedgerClient`` over the component's internal app (``POST /collections`` behind the
internal token). Wallets are funded the way a card capture does it (``fund``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.errors import AppError
from pocketpay.ledger import service
from pocketpay.ledger.api import LedgerApi
from pocketpay.ledger.chart import system_account_id, wallet_account_id
from pocketpay.ledger.check import run_check
from pocketpay.ledger.client import HttpLedgerClient, LedgerClient
from pocketpay.ledger.models import outbox
from pocketpay.ledger.schemas import Collection
from tests.ledger.test_ledger_service import fund, snapshot
from tests.support import ledger_only

REVENUE = system_account_id("revenue", "USD")
EVENT = "ledger.collection.posted"


@dataclass
class Ledger:
    api: LedgerApi
    http: HttpLedgerClient
    engine: AsyncEngine

    def client(self, kind: str) -> LedgerClient:
        return self.api if kind == "api" else self.http

    async def funded(self, amount: int) -> str:
        """A new owner whose USD wallet holds ``amount`` (0: a wallet never seen)."""
        owner = f"usr_{uuid.uuid4().hex[:12]}"
        if amount:
            await fund(self.engine, wallet_account_id(owner, "USD"), amount, owner)
        return owner

    async def available(self, account_id: str) -> int:
        async with self.engine.connect() as conn:
            return (await service.balance(conn, account_id)).available_minor

    async def events(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(outbox.c.data).where(outbox.c.type == EVENT))
            return [dict(r.data) for r in rows]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    async with ledger_only(request.param, tmp_path) as parts:
        yield Ledger(*parts)


async def _collect(
    client: LedgerClient, owner: str, tid: str, amount: int, reference: str = "in_1"
) -> Collection:
    return await client.collect(
        owner_id=owner, transfer_id=tid, amount_minor=amount, currency="USD", reference=reference
    )


async def _outcome(client: LedgerClient, owner: str, tid: str, amount: int) -> str:
    try:
        await _collect(client, owner, tid, amount)
    except AppError as exc:
        return exc.code
    return "ok"


@pytest.mark.parametrize("kind", ["api", "http"])
async def test_collect_moves_money_from_the_wallet_to_revenue(ledger: Ledger, kind: str) -> None:
    owner = await ledger.funded(100)
    revenue = await ledger.available(REVENUE)
    tid = f"inv_pay:in_{uuid.uuid4().hex}:1"

    got = await _collect(ledger.client(kind), owner, tid, 30, reference="in_42")

    assert got.id == tid and got.object == "collection" and got.status == "posted"
    assert (got.owner_id, got.amount_minor, got.currency, got.reference) == (
        owner,
        30,
        "USD",
        "in_42",
    )
    assert await ledger.available(wallet_account_id(owner, "USD")) == 70
    assert await ledger.available(REVENUE) == revenue + 30
    assert [e for e in await ledger.events() if e["id"] == tid] == [got.model_dump()]
    assert await run_check(ledger.engine) == []


async def test_in_process_and_http_answer_the_same_model(ledger: Ledger) -> None:
    owner = await ledger.funded(100)
    first = await _collect(ledger.api, owner, "inv_pay:a:1", 10)
    assert await _collect(ledger.http, owner, "inv_pay:a:1", 10) == first
    second = await _collect(ledger.http, owner, "inv_pay:a:2", 10)
    assert await _collect(ledger.api, owner, "inv_pay:a:2", 10) == second
    assert isinstance(second, Collection) and second.id == "inv_pay:a:2"
    assert await ledger.available(wallet_account_id(owner, "USD")) == 80


@pytest.mark.parametrize("kind", ["api", "http"])
async def test_a_replay_returns_the_original_and_writes_nothing(ledger: Ledger, kind: str) -> None:
    owner = await ledger.funded(100)
    client = ledger.client(kind)
    first = await _collect(client, owner, "inv_pay:b:1", 40)
    before, events = await snapshot(ledger.engine), await ledger.events()

    replays = [await _collect(client, owner, "inv_pay:b:1", 40) for _ in range(3)]

    assert replays == [first] * 3  # created_at included: the original row's
    assert await snapshot(ledger.engine) == before
    assert await ledger.events() == events
    assert [e["id"] for e in events].count("inv_pay:b:1") == 1


@pytest.mark.parametrize("kind", ["api", "http"])
@pytest.mark.parametrize(
    "change",
    [{"amount": 41}, {"reference": "in_other"}, {"owner": "someone_else"}, {"currency": "EUR"}],
)
async def test_the_same_id_with_other_values_is_refused(
    ledger: Ledger, kind: str, change: dict[str, Any]
) -> None:
    owner = await ledger.funded(100)
    await _collect(ledger.api, owner, "inv_pay:c:1", 40)
    before, events = await snapshot(ledger.engine), await ledger.events()
    args = {"owner": owner, "amount": 40, "reference": "in_1", "currency": "USD"} | change

    with pytest.raises(AppError) as exc:
        await ledger.client(kind).collect(
            owner_id=args["owner"],
            transfer_id="inv_pay:c:1",
            amount_minor=args["amount"],
            currency=args["currency"],
            reference=args["reference"],
        )

    assert (exc.value.code, exc.value.status) == ("ledger.transfer_id_conflict", 409)
    assert await snapshot(ledger.engine) == before
    assert await ledger.events() == events


@pytest.mark.parametrize("kind", ["api", "http"])
async def test_insufficient_funds_is_refused_with_nothing_written(
    ledger: Ledger, kind: str
) -> None:
    owner = await ledger.funded(100)
    stranger = await ledger.funded(0)
    before, events = await snapshot(ledger.engine), await ledger.events()

    for who, amount in ((owner, 101), (stranger, 1)):
        with pytest.raises(AppError) as exc:
            await _collect(ledger.client(kind), who, f"inv_pay:d:{who}", amount)
        assert (exc.value.code, exc.value.status) == ("ledger.insufficient_funds", 422)

    assert await snapshot(ledger.engine) == before
    assert await ledger.events() == events
    # The id was not used up: once the money is there, the same collection goes through.
    await fund(ledger.engine, wallet_account_id(owner, "USD"), 1, f"{owner}:more")
    assert (await _collect(ledger.client(kind), owner, f"inv_pay:d:{owner}", 101)).id


@pytest.mark.parametrize("kind", ["api", "http"])
@pytest.mark.parametrize(
    ("values", "code"),
    [
        ({"amount_minor": 0}, "validation.failed"),
        ({"amount_minor": -5}, "validation.failed"),
        ({"amount_minor": 10**18}, "validation.failed"),
        ({"transfer_id": ""}, "validation.failed"),
        ({"owner_id": ""}, "validation.failed"),
        ({"reference": ""}, "validation.failed"),
        ({"currency": "US"}, "validation.failed"),
        ({"currency": "ZZZ"}, "validation.unknown_currency"),
    ],
)
async def test_bad_input_is_refused_the_same_way_by_both_clients(
    ledger: Ledger, kind: str, values: dict[str, Any], code: str
) -> None:
    owner = await ledger.funded(100)
    before = await snapshot(ledger.engine)
    args: dict[str, Any] = {
        "owner_id": owner,
        "transfer_id": "inv_pay:e:1",
        "amount_minor": 10,
        "currency": "USD",
        "reference": "in_1",
    } | values
    with pytest.raises(AppError) as exc:
        await ledger.client(kind).collect(**args)
    assert (exc.value.code, exc.value.status) == (code, 422)
    assert await snapshot(ledger.engine) == before


async def test_twenty_concurrent_collections_of_ten_from_a_wallet_of_100(ledger: Ledger) -> None:
    owner = await ledger.funded(100)
    revenue = await ledger.available(REVENUE)

    results = await asyncio.gather(
        *(_outcome(ledger.api, owner, f"inv_pay:f{i}:1", 10) for i in range(20))
    )

    assert results.count("ok") == 10
    assert results.count("ledger.insufficient_funds") == 10
    assert await ledger.available(wallet_account_id(owner, "USD")) == 0
    assert await ledger.available(REVENUE) == revenue + 100
    mine = [e for e in await ledger.events() if e["owner_id"] == owner]
    assert len(mine) == 10
    assert await run_check(ledger.engine) == []


async def test_collections_racing_wallet_transfers_never_overdraw(ledger: Ledger) -> None:
    owner, friend = await ledger.funded(100), await ledger.funded(0)
    revenue = await ledger.available(REVENUE)

    async def send(i: int) -> str:
        body = {
            "idempotency_key": f"k{i}",
            "sender_id": owner,
            "recipient_id": friend,
            "amount_minor": 10,
            "currency": "USD",
        }
        try:
            await ledger.api.send(body)
        except AppError as exc:
            return exc.code
        return "ok"

    jobs = [_outcome(ledger.api, owner, f"inv_pay:g{i}:1", 10) for i in range(12)]
    jobs += [send(i) for i in range(12)]
    results = await asyncio.gather(*jobs)

    assert results.count("ok") == 10, results
    assert set(results) == {"ok", "ledger.insufficient_funds"}
    collected = results[:12].count("ok") * 10
    assert await ledger.available(wallet_account_id(owner, "USD")) == 0
    assert await ledger.available(wallet_account_id(friend, "USD")) == 100 - collected
    assert await ledger.available(REVENUE) == revenue + collected
    assert await run_check(ledger.engine) == []


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    funded=st.integers(0, 200),
    ops=st.lists(st.tuples(st.integers(0, 5), st.integers(1, 80)), min_size=1, max_size=8),
)
async def test_any_sequence_of_collections_matches_a_model(
    ledger: Ledger, funded: int, ops: list[tuple[int, int]]
) -> None:
    """Collections with ids drawn from a few (so some are replays or conflicts) against a
    plain model: the wallet, revenue and events follow it, and the check stays clean."""
    owner = await ledger.funded(funded)
    revenue = await ledger.available(REVENUE)
    taken: dict[str, int] = {}  # the model: transfer id -> amount of each posted collection
    balance = funded
    for n, amount in ops:
        tid = f"inv_pay:{owner}:{n}"
        if tid in taken:
            expected = "ok" if taken[tid] == amount else "ledger.transfer_id_conflict"
        else:
            expected = "ok" if amount <= balance else "ledger.insufficient_funds"
        assert await _outcome(ledger.api, owner, tid, amount) == expected
        if expected == "ok" and tid not in taken:
            taken[tid] = amount
            balance -= amount
    assert await ledger.available(wallet_account_id(owner, "USD")) == balance
    assert await ledger.available(REVENUE) == revenue + sum(taken.values())
    events = [e for e in await ledger.events() if e["owner_id"] == owner]
    assert sorted(e["id"] for e in events) == sorted(taken)
    assert await run_check(ledger.engine) == []
