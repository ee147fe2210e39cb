"""Listing invoices and subscriptions costs the same number of billing queries for one row as
for a page of many (their lines and latest invoices are fetched in one query each, not one
per row), on both backends; the lists still carry every line and latest invoice."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from tests.api.helpers import funded
from tests.support import Stack, running_stack

pytestmark = pytest.mark.timeout(240)
ADMIN = "ops@example.com"
DAY = 86400
TABLES = ("billing_invoices", "billing_invoice_lines")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def billing(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    extra: dict[str, Any] = {
        "auth": {"admin_emails": [ADMIN]},
        # No scheduler pass reads invoices while the test counts (the test clock runs them).
        "billing": {"scheduler_interval_seconds": 3600.0},
    }
    async with running_stack(request.param, tmp_path, **extra) as stack:
        yield stack


@contextmanager
def counting(stack: Stack) -> Iterator[list[str]]:
    """The statements on billing's invoice tables while the block runs."""
    seen: list[str] = []

    def on_execute(*args: Any) -> None:
        statement = str(args[2])
        if any(t in statement for t in TABLES):
            seen.append(statement)

    engine = stack.runtime.engine.sync_engine
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)


async def test_lists_query_once_per_page(billing: Stack) -> None:
    stack = billing
    admin = await stack.user(ADMIN)
    plan = await stack.post(
        admin, "/api/v1/plans", {"name": "Pro", "amount_minor": 100, "currency": "USD"}
    )
    alice = await funded(stack, 5000)
    subs = []
    for _ in range(3):
        body = {"plan_id": plan.json()["id"], "payment_source": "wallet"}
        subs.append((await stack.post(alice, "/api/v1/subscriptions", body)).json()["id"])
    r = await stack.post(admin, "/api/v1/admin/test-clock/advance", {"seconds": 62 * DAY}, key=None)
    assert r.status_code == 200, r.text

    async def cost(path: str, limit: int) -> tuple[int, list[dict[str, Any]]]:
        with counting(stack) as seen:
            r = await stack.get(alice, path, limit=limit)
        assert r.status_code == 200, r.text
        return len(seen), list(r.json()["data"])

    one, _ = await cost("/api/v1/invoices", 1)
    many, invoices = await cost("/api/v1/invoices", 9)
    assert len(invoices) == 9 and one == many, (one, many)
    assert all(
        [line["amount_minor"] for line in i["lines"]] == [100] and i["status"] == "paid"
        for i in invoices
    )

    one, _ = await cost("/api/v1/subscriptions", 1)
    many, listed = await cost("/api/v1/subscriptions", 3)
    assert len(listed) == 3 and one == many, (one, many)
    newest = {}
    for i in reversed(invoices):  # oldest first: the last one written per subscription wins
        newest[i["subscription_id"]] = i["id"]
    assert {s["id"]: s["latest_invoice"] for s in listed} == newest
    assert set(newest) == set(subs)
