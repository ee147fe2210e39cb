"""One scheduler pass runs its renewals and charges concurrently, at most
``billing.max_concurrent_charges`` at once, on both backends: the real ledger client is
wrapped by a counter of the calls in flight (nothing is faked: every call goes through)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pocketpay.billing.flows import BillingFlows
from pocketpay.ledger.client import LedgerClient
from pocketpay.settings import BillingSettings
from tests.api.helpers import funded
from tests.support import Stack, running_stack

pytestmark = pytest.mark.timeout(240)
ADMIN = "ops@example.com"
DAY = 86400
BOUND = 3
SUBSCRIPTIONS = 15


class InFlight:
    """The real ledger client, counting its ``collect`` calls in flight."""

    def __init__(self, inner: LedgerClient) -> None:
        self.inner = inner
        self.now = self.peak = self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def collect(self, **kw: Any) -> Any:
        self.now += 1
        self.calls += 1
        self.peak = max(self.peak, self.now)
        try:
            return await self.inner.collect(**kw)
        finally:
            self.now -= 1


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def billing(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    extra: dict[str, Any] = {
        "auth": {"admin_emails": [ADMIN]},
        # Only the test clock's passes run (the periodic job's would be a second pass).
        "billing": {"max_concurrent_charges": BOUND, "scheduler_interval_seconds": 3600.0},
    }
    async with running_stack(request.param, tmp_path, **extra) as stack:
        yield stack


def test_the_default_bound() -> None:
    assert BillingSettings().max_concurrent_charges == 8


async def test_a_pass_charges_concurrently_within_the_bound(billing: Stack) -> None:
    stack = billing
    admin = await stack.user(ADMIN)
    plan = await stack.post(
        admin, "/api/v1/plans", {"name": "Pro", "amount_minor": 100, "currency": "USD"}
    )
    alice = await funded(stack, 2 * SUBSCRIPTIONS * 100)
    for _ in range(SUBSCRIPTIONS):
        body = {"plan_id": plan.json()["id"], "payment_source": "wallet"}
        r = await stack.post(alice, "/api/v1/subscriptions", body)
        assert r.status_code == 201 and r.json()["status"] == "active", r.text
    flows: BillingFlows = stack.runtime.components["billing"].state["flows"]
    counter = InFlight(flows.ctx.ledger)
    flows.ctx.ledger = counter  # type: ignore[assignment]

    r = await stack.post(admin, "/api/v1/admin/test-clock/advance", {"seconds": 31 * DAY}, key=None)
    assert r.status_code == 200, r.text
    invoices = (await stack.get(alice, "/api/v1/invoices", limit=100)).json()["data"]
    assert len(invoices) == 2 * SUBSCRIPTIONS
    assert {i["status"] for i in invoices} == {"paid"}
    assert counter.calls == SUBSCRIPTIONS  # each renewal charged once
    assert 2 <= counter.peak <= BOUND, counter.peak  # concurrent, and never past the bound
    assert (await stack.wallet(alice))["available_minor"] == 0
    assert await stack.ledger_problems() == []
