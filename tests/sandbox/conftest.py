"""Fixtures: a sandbox served by uvicorn with a ManualClock, a webhook receiver, an SDK client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import stripe
from sandbox_support import API_KEY, SECRET, SETTLE_DELAY, Receiver, Running, make_client, serving

from pocketpay.kit.clock import ManualClock
from pocketpay.sandbox import Sandbox, create_app
from pocketpay.settings import SandboxSettings


@pytest.fixture
def clock() -> ManualClock:
    # Near real time: stripe.Webhook.construct_event checks the signature's age by time.time().
    return ManualClock(start=datetime.now(UTC))


@pytest.fixture
def settings(tmp_path: Path) -> SandboxSettings:
    # ops_enabled: these tests drive /_sandbox/faults and /_sandbox/tick over HTTP.
    return SandboxSettings(
        api_key=API_KEY,
        webhook_secret=SECRET,
        settle_delay_seconds=SETTLE_DELAY,
        ops_enabled=True,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'sandbox.db'}",  # this test's own
    )


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    async with serving(rec.app()) as url:
        rec.url = f"{url}/hook"
        yield rec


@pytest.fixture
async def running(
    settings: SandboxSettings, clock: ManualClock, receiver: Receiver
) -> AsyncIterator[Running]:
    app = create_app(settings, clock, webhook_url=receiver.url)
    sandbox: Sandbox = app.state.sandbox
    sandbox.webhooks.retry_delays = (0.0, 0.0, 0.0)
    try:
        async with serving(app) as url:
            yield Running(app, sandbox, url)
    finally:
        await sandbox.aclose()


@pytest.fixture
async def client(running: Running) -> AsyncIterator[stripe.StripeClient]:
    http = stripe.HTTPXClient()
    yield make_client(running.url, http)
    await http.close_async()
