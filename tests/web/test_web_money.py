"""The web app's money forms, at the HTTP level on both backends: a double submit pays once,
every error a person can cause is shown in words next to its field with a 4xx, and the held
payment's capture and cancel and a refund work from the payment's page."""

from __future__ import annotations

import asyncio

import pytest

from tests.support import Stack, eventually
from tests.web.web import Browser, error_of, hidden


async def test_double_submit_of_a_top_up_pays_once(stack: Stack) -> None:
    async with Browser(stack) as b:
        await b.signup()
        page = (await b.get("/app/top-up")).text
        form = hidden(page, "/app/top-up") | {
            "amount": "12.50",
            "currency": "USD",
            "card": "pm_card_visa",
        }
        first = await b.http.post("/app/top-up", data=form)
        second = await b.http.post("/app/top-up", data=form)  # a double click, a reload
        assert first.status_code == second.status_code == 303, (first.text[:300], second.text[:300])
        assert first.headers["location"] == second.headers["location"]
        listed = (await stack.get(b.api, "/api/v1/payments")).json()["data"]
        assert [p["amount_minor"] for p in listed] == [1250]
        await stack.wait_status(b.api, listed[0]["id"], "settled")
        await stack.wait_available(b.api, 1250)
        # Two at once (the second arrives while the first runs): still one payment.
        page = (await b.get("/app/top-up")).text
        form = hidden(page, "/app/top-up") | {
            "amount": "3",
            "currency": "USD",
            "card": "pm_card_visa",
        }
        answers = await asyncio.gather(*(b.http.post("/app/top-up", data=form) for _ in range(2)))
        codes = sorted(a.status_code for a in answers)
        assert codes in ([303, 303], [303, 409]), [a.text[:300] for a in answers]
        listed = (await stack.get(b.api, "/api/v1/payments")).json()["data"]
        assert sorted(p["amount_minor"] for p in listed) == [300, 1250]
        # The payment's page shows it.
        shown = await b.get(first.headers["location"])
        assert "12.50 USD" in shown.text and 'id="timeline"' in shown.text


@pytest.mark.parametrize(
    ("amount", "words"),
    [
        ("", "Enter an amount."),
        ("abc", "Enter an amount as a number, like 12.50."),
        ("0", "Enter an amount greater than zero."),
        ("-5", "Enter an amount greater than zero."),
        ("1.234", "USD amounts have 2 decimal places."),
        ("99999999999", "This amount is too large."),
    ],
)
async def test_bad_amounts_are_shown_by_the_field(
    sqlite_stack: Stack, amount: str, words: str
) -> None:
    async with Browser(sqlite_stack) as b:
        await b.signup()
        r = await b.submit(
            "/app/top-up",
            "/app/top-up",
            {"amount": amount, "currency": "USD", "card": "pm_card_visa"},
        )
        assert r.status_code == 422
        assert error_of(r.text, "amount") == words
        assert f'value="{amount}"' in r.text  # what was typed stays in the field
        assert (await sqlite_stack.get(b.api, "/api/v1/payments")).json()["data"] == []


async def test_send_money_errors_by_field_then_sent(stack: Stack) -> None:
    async with Browser(stack) as alice, Browser(stack) as bob:
        await alice.signup("Alice")
        await bob.signup("Bob")
        send = {"recipient": bob.email, "amount": "5", "currency": "USD", "note": "lunch"}
        r = await alice.submit("/app/send", "/app/send", send)
        assert r.status_code == 422
        assert (
            error_of(r.text, "amount")
            == "Your wallet's available balance does not cover this amount."
        )
        r = await alice.submit("/app/send", "/app/send", send | {"recipient": "nobody@example.com"})
        assert r.status_code == 404
        assert error_of(r.text, "recipient") == "No PocketPay user has this email."
        r = await alice.submit("/app/send", "/app/send", send | {"recipient": "not-an-email"})
        assert r.status_code == 422
        assert error_of(r.text, "recipient") == "Enter an email address, like alice@example.com."
        r = await alice.submit("/app/send", "/app/send", send | {"currency": "XXX"})
        assert (
            r.status_code == 422
            and error_of(r.text, "currency") == "Choose a currency from the list."
        )
        r = await alice.submit("/app/send", "/app/send", send | {"recipient": alice.email})
        assert r.status_code == 422 and error_of(r.text, "recipient")
        # Funded, the same form sends; the home page says so and Bob's shows it.
        pid = await alice.top_up("20.00")
        await stack.wait_status(alice.api, pid, "settled")
        await stack.wait_available(alice.api, 2000)
        r = await alice.submit("/app/send", "/app/send", send)
        assert r.status_code == 303 and r.headers["location"].startswith("/app?sent=tr_")
        home = await alice.get(r.headers["location"])
        assert f"Sent 5.00 USD to {bob.email}." in home.text
        await stack.wait_available(bob.api, 500)
        live = await bob.get("/app/live/home")
        assert "5.00 USD" in live.text and alice.email in live.text and "lunch" in live.text
        entries = await alice.get("/app/wallets/USD")
        assert "wallet transfer" in entries.text and "\u22125.00 USD" in entries.text
        assert await stack.ledger_problems() == []


async def test_capture_cancel_and_refund_from_the_payment_page(stack: Stack) -> None:
    async with Browser(stack) as b:
        await b.signup()
        held = await b.top_up("30.00", hold=True)
        await stack.wait_status(b.api, held, "authorized")
        page_path = f"/app/payments/{held}"
        r = await b.submit(page_path, f"{page_path}/capture", {"amount": "31"})
        assert r.status_code == 422
        assert error_of(r.text, "capture-amount")
        r = await b.submit(page_path, f"{page_path}/capture", {"amount": "20"})
        assert r.status_code == 303 and r.headers["location"] == page_path
        await stack.wait_status(b.api, held, "captured", "settled")
        other = await b.top_up("7.00", hold=True)
        await stack.wait_status(b.api, other, "authorized")
        r = await b.submit(f"/app/payments/{other}", f"/app/payments/{other}/cancel", {})
        assert r.status_code == 303
        await stack.wait_status(b.api, other, "canceled")
        await stack.wait_status(b.api, held, "settled")
        await stack.wait_available(b.api, 2000)
        r = await b.submit(page_path, f"{page_path}/refund", {"amount": "25"})
        assert r.status_code == 422 and error_of(r.text, "refund-amount")
        r = await b.submit(page_path, f"{page_path}/refund", {"amount": "4.50"})
        assert r.status_code == 303
        await stack.wait_available(b.api, 1550)
        refunds = (await stack.get(b.api, f"/api/v1/payments/{held}/refunds")).json()["data"]
        assert [x["amount_minor"] for x in refunds] == [450]
        # A payment that is not the user's is a page in words, not a stack trace.
        missing = await b.get("/app/payments/pay_nothere")
        assert missing.status_code == 404 and 'id="problem"' in missing.text
        assert "Not found" in missing.text and "Traceback" not in missing.text
        assert await stack.ledger_problems() == []


async def test_a_declined_card_shows_why(sqlite_stack: Stack) -> None:
    async with Browser(sqlite_stack) as b:
        await b.signup()
        pid = await b.top_up("10.00", card="pm_card_chargeDeclined")
        await sqlite_stack.wait_status(b.api, pid, "failed")
        page = await b.get(f"/app/payments/{pid}")
        assert 'data-status="failed"' in page.text and "Your card was declined." in page.text


async def test_payments_and_entries_are_paged(sqlite_stack: Stack) -> None:
    async with Browser(sqlite_stack) as b:
        await b.signup()
        made = [(await sqlite_stack.pay(b.api, 100 + n, until=None))["id"] for n in range(21)]
        await sqlite_stack.wait_available(b.api, sum(100 + n for n in range(21)))
        first = await b.get("/app/payments")
        assert first.text.count('<li><a href="/app/payments/pay_') == 20
        older = first.text.split('id="older" href="', 1)[1].split('"', 1)[0]
        rest = await b.get(older.replace("&amp;", "&"))
        assert rest.text.count('<li><a href="/app/payments/pay_') == 1
        assert f"/app/payments/{made[0]}" in rest.text  # the oldest, on the second page
        entries = await b.get("/app/wallets/USD")
        assert entries.text.count("<tr>") == 21  # the header row and 20 entries
        after = entries.text.split('id="older" href="', 1)[1].split('"', 1)[0]
        assert (await b.get(after)).status_code == 200
        assert (await b.get("/app/payments?after=not%20an%20id")).status_code == 404
        assert (await b.get("/app/wallets/XYZ")).status_code == 404


async def test_a_disputed_top_up_shows_its_dispute_and_takes_evidence(stack: Stack) -> None:
    stack.sandbox.settings.dispute_decision_seconds = 3600.0  # the bank takes its time
    async with Browser(stack) as b:
        await b.signup()
        made = await b.submit(
            "/app/top-up",
            "/app/top-up",
            {"amount": "20", "currency": "USD", "card": "pm_card_createDispute"},
        )
        assert made.status_code == 303, made.text[:300]
        page_path = made.headers["location"]
        pid = page_path.rsplit("/", 1)[1]

        async def disputed() -> str | None:
            listed = (await stack.get(b.api, f"/api/v1/payments/{pid}/disputes")).json()["data"]
            return str(listed[0]["id"]) if listed else None

        did = await eventually(disputed)
        page = (await b.get(page_path)).text
        assert f'id="dispute-{did}" data-status="needs_response"' in page
        action = f"/app/disputes/{did}/evidence"

        empty = await b.submit(page_path, action, {"text": "  "})
        assert empty.status_code == 422
        assert error_of(empty.text, f"evidence-{did}") == "Write what happened and what proves it."

        sent = await b.submit(page_path, action, {"text": "Signed for on delivery."})
        assert sent.status_code == 303 and sent.headers["location"] == page_path
        page = (await b.get(page_path)).text
        assert f'id="dispute-{did}" data-status="under_review"' in page
        assert "Your evidence: Signed for on delivery." in page
        assert action not in page  # no more evidence once it is under review
        other = await stack.user()
        assert (await stack.get(other, f"/api/v1/disputes/{did}")).status_code == 404
