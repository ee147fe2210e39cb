"""The accounts API (the Go Payments API seed's calls) on SQLite and on PostgreSQL + NATS:
accounts by id, balances in minor units and exact decimals, transactions newest first, and
the balance at any past time, checked against a brute-force sum of the account's entries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.api.helpers import assert_problem
from tests.support import Stack


async def brute_force(stack: Stack, user: dict[str, Any], account_id: str, at: datetime) -> int:
    """The available balance at ``at`` summed from every entry, the slow way. The histories
    here hold card top-ups (a pending credit, then its posting) and transfers (posted)."""
    entries = await stack.get(user, f"/api/v1/accounts/{account_id}/transactions", limit=100)
    total = 0
    for e in entries.json()["data"]:
        if datetime.fromisoformat(e["created_at"]) > at:
            continue
        assert e["kind"] in ("posted", "pending", "post_pending"), e
        if e["direction"] == "credit" and e["kind"] in ("posted", "post_pending"):
            total += e["amount_minor"]
        elif e["direction"] == "debit":
            assert e["kind"] == "posted", e
            total -= e["amount_minor"]
    return total


async def test_accounts_seed_flow(stack: Stack) -> None:
    alice, bob = await stack.user(), await stack.user()
    opened = await stack.post(alice, "/api/v1/accounts", {"currency": "jpy"})
    assert opened.status_code == 201, opened.text
    jpy = opened.json()
    assert (jpy["object"], jpy["type"], jpy["currency"], jpy["available"]) == (
        "account",
        "wallet",
        "JPY",
        "0",
    )
    again = await stack.post(alice, "/api/v1/accounts", {"currency": "JPY"})
    assert again.status_code == 201 and again.json()["id"] == jpy["id"]
    await stack.pay(alice, 12_345, until="settled")
    await stack.wait_available(alice, 12_345)
    listed = (await stack.get(alice, "/api/v1/accounts")).json()["data"]
    usd = next(a for a in listed if a["currency"] == "USD")
    assert {a["currency"] for a in listed} == {"USD", "JPY"}
    assert (usd["available_minor"], usd["available"]) == (12_345, "123.45")
    assert (await stack.get(alice, f"/api/v1/accounts/{usd['id']}")).json() == usd
    balance = (await stack.get(alice, f"/api/v1/accounts/{usd['id']}/balance")).json()
    assert (balance["available"], balance["posted_minor"], balance["at"]) == (
        "123.45",
        12_345,
        None,
    )
    sent = await stack.post(
        alice,
        "/api/v1/transfers",
        {"recipient": bob["user"]["email"], "amount_minor": 2_345, "currency": "USD"},
    )
    assert sent.status_code == 201, sent.text
    txs = (await stack.get(alice, f"/api/v1/accounts/{usd['id']}/transactions")).json()["data"]
    assert txs[0]["direction"] == "debit" and txs[0]["amount"] == "23.45"
    seqs = [t["seq"] for t in txs]
    assert seqs == sorted(seqs, reverse=True)
    # Another user's account, an id that cannot be one, a time without an offset.
    assert_problem(await stack.get(bob, f"/api/v1/accounts/{usd['id']}"), 404, "not_found")
    assert_problem(await stack.get(bob, f"/api/v1/accounts/{usd['id']}/balance"), 404, "not_found")
    path = f"/api/v1/accounts/{usd['id']}/transactions"
    assert_problem(await stack.get(bob, path), 404, "not_found")
    assert_problem(await stack.get(alice, "/api/v1/accounts/sys_revenue_USD"), 404, "not_found")
    assert_problem(await stack.get(alice, "/api/v1/accounts/x%20y"), 404, "not_found")
    naive = await stack.get(alice, f"/api/v1/accounts/{usd['id']}/balance", at="2026-01-01T00:00")
    assert_problem(naive, 422, "validation.failed")
    bad = await stack.post(alice, "/api/v1/accounts", {"currency": "XXX"})
    assert_problem(bad, 422, "validation.unknown_currency")


async def test_balance_at_any_time_matches_the_entries(stack: Stack) -> None:
    alice, bob = await stack.user(), await stack.user()
    before = datetime.now(UTC)
    marks: list[tuple[datetime, int]] = []
    expected = 0
    for amount in (5_000, 2_500):
        await stack.pay(alice, amount, until="captured")
        expected += amount
        await stack.wait_available(alice, expected)
        marks.append((datetime.now(UTC), expected))
    for amount in (700, 1_300):
        r = await stack.post(
            alice,
            "/api/v1/transfers",
            {"recipient": bob["user"]["email"], "amount_minor": amount, "currency": "USD"},
        )
        assert r.status_code == 201, r.text
        expected -= amount
        marks.append((datetime.now(UTC), expected))
    account = (await stack.wallet(alice))["id"]
    at_start = await stack.get(alice, f"/api/v1/accounts/{account}/balance", at=before.isoformat())
    assert at_start.json()["available_minor"] == 0
    for at, want in marks:
        got = await stack.get(alice, f"/api/v1/accounts/{account}/balance", at=at.isoformat())
        assert got.status_code == 200, got.text
        assert got.json()["available_minor"] == want == await brute_force(stack, alice, account, at)
        assert got.json()["at"] == at.isoformat()


async def test_transfers_by_account_ids_and_decimal_amounts(stack: Stack) -> None:
    alice, bob = await stack.user(), await stack.user()
    await stack.pay(alice, 10_000, until="captured")
    await stack.wait_available(alice, 10_000)
    source = (await stack.wallet(alice))["id"]
    bobs = (await stack.post(bob, "/api/v1/accounts", {"currency": "USD"})).json()["id"]
    r = await stack.post(
        alice,
        "/api/v1/transfers",
        {"source_account_id": source, "destination_account_id": bobs, "amount": "12.34"},
    )
    assert r.status_code == 201, r.text
    assert (r.json()["amount_minor"], r.json()["amount"], r.json()["currency"]) == (
        1234,
        "12.34",
        "USD",
    )
    assert (await stack.wallet(bob))["available_minor"] == 1234
    refused: list[tuple[dict[str, Any], int, str]] = [
        ({"destination_account_id": bobs, "amount": "1.234"}, 422, "validation.failed"),
        ({"destination_account_id": bobs, "amount": "-1"}, 422, "validation.failed"),
        (
            {"destination_account_id": bobs, "amount": "1", "amount_minor": 100},
            422,
            "validation.failed",
        ),
        (
            {"destination_account_id": bobs, "amount": "1", "currency": "EUR"},
            422,
            "validation.failed",
        ),
        ({"recipient": bob["user"]["email"], "amount": "1"}, 422, "validation.failed"),
        ({"destination_account_id": "sys_revenue_USD", "amount": "1"}, 422, "validation.failed"),
        (
            {
                "destination_account_id": bobs.replace(bob["user"]["id"][-5:], "ZZZZZ"),
                "amount": "1",
            },
            404,
            "transfers.recipient_not_found",
        ),
        (
            {"source_account_id": bobs, "recipient": bob["user"]["email"], "amount": "1"},
            404,
            "not_found",
        ),
    ]
    for body, status, code in refused:
        assert_problem(await stack.post(alice, "/api/v1/transfers", body), status, code, str(body))
    assert (await stack.wallet(alice))["available_minor"] == 10_000 - 1234
    assert (await stack.wallet(bob))["available_minor"] == 1234
