"""Currency conversions through the public API, on SQLite and on PostgreSQL + NATS: a quote
prices the conversion exactly, converting it moves money between two wallets once (a replay
changes nothing, a second conversion or a concurrent one is refused), an expired quote is
refused, bad input changes nothing, and ``pocketpay check`` stays clean."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from pocketpay.kit.clock import ManualClock
from pocketpay.ledger import fx
from tests.api.helpers import assert_problem
from tests.support import Stack, running_stack


async def funded_in(stack: Stack, amount: int, currency: str) -> dict[str, Any]:
    user = await stack.user()
    await stack.pay(user, amount, currency=currency, until="settled")
    await stack.wait_available(user, amount, currency)
    return user


async def quote(stack: Stack, user: dict[str, Any], **body: Any) -> dict[str, Any]:
    r = await stack.post(user, "/api/v1/fx/quotes", body)
    assert r.status_code == 201, r.text
    q: dict[str, Any] = r.json()
    return q


async def balances(stack: Stack, user: dict[str, Any], *currencies: str) -> list[int]:
    return [(await stack.wallet(user, c))["available_minor"] for c in currencies]


async def test_quote_then_convert_moves_exactly_the_quoted_amounts(stack: Stack) -> None:
    user = await funded_in(stack, 10_000, "USD")
    q = await quote(stack, user, sell_currency="usd", buy_currency="JPY", sell_amount_minor=5000)
    assert (q["status"], q["sell_currency"], q["buy_currency"]) == ("open", "USD", "JPY")
    rate = Decimal(q["rate"])
    assert rate == fx.STATIC.rate("USD", "JPY")
    priced = fx.price("USD", "JPY", rate, 50, sell_amount_minor=5000)
    assert (q["sell_amount_minor"], q["buy_amount_minor"], q["fee_minor"]) == (
        5000,
        priced.buy_amount_minor,
        priced.fee_minor,
    )
    r = await stack.post(user, "/api/v1/conversions", {"quote_id": q["id"]})
    assert r.status_code == 201, r.text
    conversion = r.json()
    assert (conversion["quote_id"], conversion["buy_amount_minor"]) == (
        q["id"],
        q["buy_amount_minor"],
    )
    assert await balances(stack, user, "USD", "JPY") == [5000, q["buy_amount_minor"]]
    assert (await stack.get(user, f"/api/v1/fx/quotes/{q['id']}")).json()["status"] == "converted"
    listed = (await stack.get(user, "/api/v1/conversions")).json()
    assert [c["id"] for c in listed["data"]] == [conversion["id"]]
    got = await stack.get(user, f"/api/v1/conversions/{conversion['id']}")
    assert got.json() == conversion
    assert await stack.ledger_problems() == []


async def test_buy_amount_quote_three_decimal_currency(stack: Stack) -> None:
    user = await funded_in(stack, 20_000, "EUR")
    q = await quote(stack, user, sell_currency="EUR", buy_currency="BHD", buy_amount_minor=12_345)
    assert q["buy_amount_minor"] == 12_345  # 12.345 BHD exactly
    r = await stack.post(user, "/api/v1/conversions", {"quote_id": q["id"]})
    assert r.status_code == 201, r.text
    assert await balances(stack, user, "EUR", "BHD") == [20_000 - q["sell_amount_minor"], 12_345]
    assert await stack.ledger_problems() == []


async def test_a_quote_converts_once(stack: Stack) -> None:
    user = await funded_in(stack, 10_000, "USD")
    q = await quote(stack, user, sell_currency="USD", buy_currency="EUR", sell_amount_minor=1000)
    first = await stack.post(user, "/api/v1/conversions", {"quote_id": q["id"]}, key="k1")
    replay = await stack.post(user, "/api/v1/conversions", {"quote_id": q["id"]}, key="k1")
    assert first.status_code == replay.status_code == 201
    assert replay.json() == first.json()
    again = await stack.post(user, "/api/v1/conversions", {"quote_id": q["id"]}, key="k2")
    assert_problem(again, 409, "fx.quote_already_converted")
    # Several at once, each with its own key, on a fresh quote: exactly one converts.
    q2 = await quote(stack, user, sell_currency="USD", buy_currency="EUR", sell_amount_minor=1000)
    answers = await asyncio.gather(
        *(stack.post(user, "/api/v1/conversions", {"quote_id": q2["id"]}) for _ in range(6))
    )
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409, 409, 409]
    usd, eur = await balances(stack, user, "USD", "EUR")
    assert (usd, eur) == (8000, q["buy_amount_minor"] + q2["buy_amount_minor"])
    assert await stack.ledger_problems() == []


async def test_insufficient_funds_leave_the_quote_open(stack: Stack) -> None:
    user = await funded_in(stack, 1000, "USD")
    q = await quote(stack, user, sell_currency="USD", buy_currency="GBP", sell_amount_minor=1500)
    r = await stack.post(user, "/api/v1/conversions", {"quote_id": q["id"]})
    assert_problem(r, 422, "ledger.insufficient_funds")
    assert await balances(stack, user, "USD", "GBP") == [1000, 0]
    assert (await stack.get(user, f"/api/v1/fx/quotes/{q['id']}")).json()["status"] == "open"
    await stack.pay(user, 1000, until="settled")
    await stack.wait_available(user, 2000)
    r = await stack.post(user, "/api/v1/conversions", {"quote_id": q["id"]})
    assert r.status_code == 201, r.text
    assert await balances(stack, user, "USD", "GBP") == [500, q["buy_amount_minor"]]
    assert await stack.ledger_problems() == []


async def test_bad_input_is_refused_and_changes_nothing(stack: Stack) -> None:
    user = await funded_in(stack, 1000, "USD")
    other = await stack.user()
    before = (await stack.get(user, "/api/v1/wallets")).json()
    cases: list[tuple[dict[str, Any], int, str]] = [
        (
            {"sell_currency": "USD", "buy_currency": "USD", "sell_amount_minor": 100},
            422,
            "fx.same_currency",
        ),
        (
            {"sell_currency": "USD", "buy_currency": "XXX", "sell_amount_minor": 100},
            422,
            "validation.unknown_currency",
        ),
        ({"sell_currency": "USD", "buy_currency": "EUR"}, 422, "validation.failed"),
        (
            {
                "sell_currency": "USD",
                "buy_currency": "EUR",
                "sell_amount_minor": 1,
                "buy_amount_minor": 1,
            },
            422,
            "validation.failed",
        ),
        (
            {"sell_currency": "USD", "buy_currency": "EUR", "sell_amount_minor": -5},
            422,
            "validation.failed",
        ),
        (
            {"sell_currency": "USD", "buy_currency": "EUR", "sell_amount_minor": "5"},
            422,
            "validation.failed",
        ),
        (
            {"sell_currency": "JPY", "buy_currency": "BHD", "sell_amount_minor": 1},
            422,
            "fx.amount_too_small",
        ),
    ]
    for body, status, code in cases:
        assert_problem(await stack.post(user, "/api/v1/fx/quotes", body), status, code, str(body))
    q = await quote(stack, user, sell_currency="USD", buy_currency="EUR", sell_amount_minor=500)
    theirs = await stack.post(other, "/api/v1/conversions", {"quote_id": q["id"]})
    assert_problem(theirs, 404, "not_found")
    assert_problem(await stack.get(other, f"/api/v1/fx/quotes/{q['id']}"), 404, "not_found")
    missing = await stack.post(user, "/api/v1/conversions", {"quote_id": "fxq_nope"})
    assert_problem(missing, 404, "not_found")
    assert (await stack.get(user, "/api/v1/wallets")).json() == before
    rates = (await stack.get(user, "/api/v1/fx/rates")).json()
    assert rates["base"] == "EUR" and rates["rates"]["USD"] == "1.0565"


async def test_an_expired_quote_is_refused(tmp_path: Path) -> None:
    clock = ManualClock(datetime.now(UTC))
    async with running_stack("sqlite", tmp_path, clock=clock, fx={"quote_ttl_seconds": 60}) as s:
        user = await s.user()
        q = await quote(s, user, sell_currency="USD", buy_currency="EUR", sell_amount_minor=500)
        clock.advance(60)
        r = await s.post(user, "/api/v1/conversions", {"quote_id": q["id"]})
        assert_problem(r, 409, "fx.quote_expired")
        assert (await s.get(user, f"/api/v1/fx/quotes/{q['id']}")).json()["status"] == "expired"
