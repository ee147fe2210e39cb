"""Live updates across gateway processes (scale mode, PostgreSQL + NATS): a client streaming
from gateway B receives the events of a payment created through gateway A. The safety-net
poll and the heartbeat are set far beyond the test's deadlines, so only the fan-out over NATS
core subjects can wake B's stream. Then B is stopped (SIGTERM) while the stream is open: the
stream ends with ``stream.shutdown`` and an SSE retry hint, and B exits cleanly."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e import fleet as fl
from tests.e2e.fleet import Fleet
from tests.stream.sse import sse

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.nats]

LAYOUT = {"sandbox": 1, "ledger": 1, "payments": 1, "gateway": 2}
ENV = {
    "POCKETPAY_SANDBOX__SETTLE_DELAY_SECONDS": "0.5",
    "POCKETPAY_PSP__SETTLE_POLL_SECONDS": "0.2",
    "POCKETPAY_BUS__RELAY_POLL_SECONDS": "0.1",
    "POCKETPAY_BUS__RETRY_DELAY_MS": "50",
    "POCKETPAY_STREAM__POLL_SECONDS": "600",
    "POCKETPAY_STREAM__HEARTBEAT_SECONDS": "600",
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with fl.running_fleet(tmp_path_factory.mktemp("e2e-streams"), LAYOUT, ENV) as running:
        yield running


async def signup(http: httpx.AsyncClient) -> dict[str, Any]:
    email = f"s{uuid.uuid4().hex[:10]}@example.com"
    body = {"email": email, "password": "correct-horse-battery", "name": "S"}
    r = await http.post("/api/v1/auth/signup", json=body)
    assert r.status_code == 201, r.text
    user: dict[str, Any] = r.json()
    user["headers"] = {"Authorization": f"Bearer {user['access_token']}"}
    return user


async def test_gateway_b_streams_a_payment_made_through_gateway_a(fleet: Fleet) -> None:
    a, b = fleet.of("gateway")
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=15) as via_a,
        httpx.AsyncClient(base_url=b.url, timeout=15) as via_b,
    ):
        alice = await signup(via_a)
        async with sse(via_b, alice["headers"]) as stream:
            r = await via_a.post(
                "/api/v1/payments",
                json={"amount_minor": 4200, "currency": "USD", "payment_method": "pm_card_visa"},
                headers=alice["headers"] | {"Idempotency-Key": uuid.uuid4().hex},
            )
            assert r.status_code == 202, r.text
            frames = await stream.until("payments.payment.settled", timeout=20)
            statuses = [f.event for f in frames if f.event.startswith("payments.payment.")]
            assert statuses[0] == "payments.payment.created"
            assert {f.body["data"]["id"] for f in frames if f.event in statuses} == {r.json()["id"]}
            assert all(f.body["data"]["owner_id"] == alice["user"]["id"] for f in frames)
            # B stops while the stream is open: a farewell with a retry hint, then the end.
            b.popen.send_signal(signal.SIGTERM)
            end = await stream.event(timeout=10)
            assert end is not None and end.event == "stream.shutdown", end
            assert end.retry is not None and end.retry > 0
            assert end.body["data"]["cursor"] == frames[-1].id
            assert await stream.event(timeout=10) is None
    # uvicorn re-raises the signal after a graceful stop: -SIGTERM is a clean exit.
    assert b.popen.wait(timeout=15) in (0, -signal.SIGTERM), b.log_tail()
    assert "stop_step_overran" not in b.log_path.read_text()
