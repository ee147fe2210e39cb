"""The issue's concurrency test, over HTTP on the whole stack: 50 concurrent transfers of 10
from a wallet holding 100 → exactly 10 succeed, 40 get ``ledger.insufficient_funds``, and the
balance ends at 0. On SQLite (embedded bus) and on PostgreSQL + NATS JetStream."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from tests.support import running_stack

CONCURRENT = 50
AMOUNT = 10
FUNDED = 100


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_fifty_concurrent_transfers_from_a_wallet_holding_100(
    backend: str, tmp_path: Path
) -> None:
    async with running_stack(backend, tmp_path) as stack:
        alice, bob = await stack.user(), await stack.user()
        await stack.pay(alice, amount=FUNDED)
        await stack.wait_available(alice, FUNDED)
        body = {"recipient": bob["user"]["email"], "amount_minor": AMOUNT, "currency": "USD"}
        keys = [uuid.uuid4().hex for _ in range(CONCURRENT)]

        responses = await asyncio.gather(
            *(stack.post(alice, "/api/v1/transfers", body, key=k) for k in keys)
        )

        ok = [r for r in responses if r.status_code == 201]
        refused = [r for r in responses if r.status_code != 201]
        assert len(ok) == FUNDED // AMOUNT, [r.text for r in responses]
        assert len(refused) == CONCURRENT - FUNDED // AMOUNT
        for r in refused:
            assert r.status_code == 422, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["code"] == "ledger.insufficient_funds"
        assert {r.json()["status"] for r in ok} == {"posted"}
        assert len({r.json()["id"] for r in ok}) == len(ok)

        sender = await stack.wallet(alice)
        assert (sender["available_minor"], sender["posted_minor"]) == (0, 0)
        assert (await stack.wallet(bob))["available_minor"] == FUNDED
        listed = (await stack.get(alice, "/api/v1/transfers", limit=100)).json()["data"]
        assert sorted(t["id"] for t in listed) == sorted(r.json()["id"] for r in ok)
        assert await stack.ledger_problems() == []

        # Replaying every request with its key changes nothing: the stored outcomes come back.
        replays = await asyncio.gather(
            *(stack.post(alice, "/api/v1/transfers", body, key=k) for k in keys)
        )
        assert [r.status_code for r in replays] == [r.status_code for r in responses]
        assert (await stack.wallet(alice))["available_minor"] == 0
        assert (await stack.wallet(bob))["available_minor"] == FUNDED
        assert await stack.ledger_problems() == []
