"""The web app in Debian's chromium (Playwright): sign up, top up by card and watch the
payment reach settled on its page without a reload; a second user, whose page is open in
another browser context, sees the money sent to them arrive live. Screenshots of every step
go to var/test-artifacts/web/ (kept by CI as artifacts). No console errors: the CSP lets our
own nonce'd script run and nothing else is needed."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.browser import chromium
from tests.support import PASSWORD, eventually, running_stack

pytestmark = pytest.mark.browser

ARTIFACTS = Path("var/test-artifacts/web")
WAIT_MS = 20_000
# Long enough that the payment page's stream is open before the card payment settles, so the
# settled status can only arrive through the stream.
SETTLE_DELAY_SECONDS = 4.0


class Person:
    def __init__(self, page: Any, name: str) -> None:
        self.page = page
        self.name = name
        self.email = f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.com"
        self.errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))

    async def shot(self, step: str) -> None:
        await self.page.screenshot(path=str(ARTIFACTS / f"{step}.png"), full_page=True)

    async def sign_up(self, base: str) -> None:
        await self.page.goto(f"{base}/")
        await self.page.click("text=Sign up")
        await self.page.fill("#name", self.name)
        await self.page.fill("#email", self.email)
        await self.page.fill("#password", PASSWORD)
        await self.page.click("button[type=submit]")
        await self.page.wait_for_url(f"{base}/app")

    async def live(self) -> None:
        """Wait until the page's stream is open; mark the page to prove no reload later."""
        await self.page.wait_for_selector("body[data-live=on]", timeout=WAIT_MS)
        await self.page.evaluate("window.__sameDocument = true")

    async def same_document(self) -> bool:
        return bool(await self.page.evaluate("window.__sameDocument === true"))


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_top_up_settles_live_and_money_arrives_live(backend: str, tmp_path: Path) -> None:
    await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
    extra = {"sandbox": {"settle_delay_seconds": SETTLE_DELAY_SECONDS}}
    async with running_stack(backend, tmp_path, **extra) as stack, chromium() as browser:
        base = stack.base_url
        alice = Person(await (await browser.new_context()).new_page(), "Alice")
        phone = {"width": 390, "height": 844}  # Bob is on his phone
        bob = Person(await (await browser.new_context(viewport=phone)).new_page(), "Bob")
        await alice.sign_up(base)
        await alice.shot(f"{backend}-01-alice-signed-up")
        await bob.sign_up(base)

        # Alice tops up 50.00 USD by card and watches her payment's page.
        await alice.page.click("text=Top up >> nth=0")
        await alice.page.fill("#amount", "50.00")
        await alice.page.select_option("#card", "pm_card_visa")
        await alice.shot(f"{backend}-02-alice-top-up-form")
        await alice.page.click("#pay")
        await alice.page.wait_for_url(f"{base}/app/payments/pay_*")
        await alice.live()
        shown = await alice.page.get_attribute("#payment h1 .status", "data-status")
        assert shown != "settled", "settled before the stream was open: nothing proven"
        await alice.shot(f"{backend}-03-alice-payment-before-settled")
        await alice.page.wait_for_selector('#payment h1 [data-status="settled"]', timeout=WAIT_MS)
        assert await alice.same_document()
        timeline = await alice.page.inner_text("#timeline")
        assert "captured" in timeline and "settled" in timeline
        await alice.shot(f"{backend}-04-alice-payment-settled-live")

        # Bob's wallets page is open; Alice sends him 12.34 USD.
        await bob.page.goto(f"{base}/app")
        await bob.live()
        await bob.shot(f"{backend}-05-bob-before")
        await alice.page.goto(f"{base}/app/send")
        await alice.page.fill("#recipient", bob.email)
        await alice.page.fill("#amount", "12.34")
        await alice.page.fill("#note", "for the tickets")
        await alice.page.click("#send")
        await alice.page.wait_for_selector("#sent")
        await alice.shot(f"{backend}-06-alice-sent")
        arrived = f'#transfers .transfer:has-text("{alice.email}")'
        await bob.page.wait_for_selector(arrived, timeout=WAIT_MS)
        await bob.page.wait_for_selector('.wallet[data-currency="USD"] [data-available="1234"]')
        assert "+12.34 USD" in await bob.page.inner_text(arrived)
        assert await bob.same_document()
        await bob.shot(f"{backend}-07-bob-received-live")
        assert alice.errors == [] and bob.errors == [], (alice.errors, bob.errors)


async def test_the_page_stays_live_across_token_expiry(tmp_path: Path) -> None:
    """Access tokens of 3 s: the stream ends with stream.token_expired, the page renews its
    session from the refresh cookie and reconnects, and still shows money arriving."""
    await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
    extra = {"auth": {"access_ttl_seconds": 3}}
    async with running_stack("sqlite", tmp_path, **extra) as stack, chromium() as browser:
        carol = Person(await (await browser.new_context()).new_page(), "Carol")
        await carol.sign_up(stack.base_url)
        await carol.live()
        await carol.page.wait_for_selector("body[data-renewals]", timeout=WAIT_MS)
        dave = await stack.user()

        async def as_dave() -> dict[str, Any]:
            """Dave with a token of now: his own last 3 s too."""
            login = {"email": dave["user"]["email"], "password": PASSWORD}
            token = (await stack.http.post("/api/v1/auth/login", json=login)).json()
            return {"headers": {"Authorization": f"Bearer {token['access_token']}"}}

        await stack.pay(await as_dave(), 2000, until=None)

        async def funded() -> bool:
            wallets = (await stack.get(await as_dave(), "/api/v1/wallets")).json()["data"]
            return any(w["available_minor"] == 2000 for w in wallets)

        await eventually(funded)
        dave = await as_dave()
        sent = await stack.post(
            dave,
            "/api/v1/transfers",
            {"recipient": carol.email, "amount_minor": 700, "currency": "USD"},
        )
        assert sent.status_code == 201, sent.text
        await carol.page.wait_for_selector('[data-available="700"]', timeout=WAIT_MS)
        assert await carol.same_document()
        await carol.shot("expiry-carol-still-live")
        assert carol.errors == [], carol.errors
