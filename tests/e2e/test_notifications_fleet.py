"""Notifications in its own process, at scale: gateway, payments, ledger, notifications and
sandbox each a ``pocketpay serve`` process on PostgreSQL + NATS JetStream, driven over HTTP
only. The gateway reaches notifications through ``HttpNotificationsClient``; sign-up's
``gateway.user.created`` and the payment's events reach it over NATS; a real receiver gets
the signed webhook and a real SMTP server the email; a redelivery carries the same id.

Run under ``flock /tmp/pp_fleet.lock`` (fleets refuse overlapping NATS streams)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from standardwebhooks.webhooks import Webhook

from tests.e2e import fleet as fl
from tests.e2e.fleet import Fleet, until
from tests.support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.nats]

LAYOUT = {"sandbox": 1, "ledger": 1, "payments": 1, "notifications": 1, "gateway": 1}
SETTLED = "payments.payment.settled"


class Hooks(BaseHTTPRequestHandler):
    got: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        Hooks.got.append((dict(self.headers), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class Mails:
    def __init__(self) -> None:
        self.got: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.got.append(envelope)
        return "250 Message accepted"


@pytest.fixture(scope="module")
def outside() -> Iterator[tuple[str, int, Mails]]:
    """A webhook receiver and an SMTP server, each in a thread of this process."""
    hooks = ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    mails = Mails()
    smtp = Controller(mails, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        yield f"http://127.0.0.1:{hooks.server_address[1]}/hooks", smtp.port, mails
    finally:
        smtp.stop()
        hooks.shutdown()


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, outside: tuple[str, int, Mails]
) -> Iterator[Fleet]:
    env = {
        "POCKETPAY_SANDBOX__SETTLE_DELAY_SECONDS": "0.5",
        "POCKETPAY_PSP__SETTLE_POLL_SECONDS": "0.2",
        "POCKETPAY_BUS__RELAY_POLL_SECONDS": "0.1",
        "POCKETPAY_BUS__RETRY_DELAY_MS": "50",
        "POCKETPAY_NOTIFICATIONS__ALLOW_PRIVATE_TARGETS": "true",
        "POCKETPAY_NOTIFICATIONS__SMTP_PORT": str(outside[1]),
        "POCKETPAY_NOTIFICATIONS__DELIVERY_INTERVAL_SECONDS": "0.2",
    }
    with fl.running_fleet(tmp_path_factory.mktemp("e2e-notify"), LAYOUT, env) as running:
        yield running


def test_the_notifications_process_signs_delivers_and_emails(
    fleet: Fleet, outside: tuple[str, int, Mails]
) -> None:
    url, _, mails = outside
    proc = fleet.one("notifications")
    ready = httpx.get(f"{proc.url}/readyz", timeout=5).json()
    assert ready["status"] == "ready" and ready["checks"]["smtp"] == "ok", ready
    email = f"alice-{uuid.uuid4().hex[:8]}@example.com"
    with httpx.Client(base_url=fleet.gateway, timeout=30.0) as http:
        r = http.post(
            "/api/v1/auth/signup",
            json={"email": email, "password": "correct-horse-battery", "name": "Alice"},
        )
        assert r.status_code == 201, r.text
        auth = {"Authorization": f"Bearer {r.json()['access_token']}"}

        def post(path: str, body: Any = None) -> Any:
            headers = auth | {"Idempotency-Key": uuid.uuid4().hex}
            answer = http.post(f"/api/v1{path}", json=body, headers=headers)
            assert answer.status_code in (200, 201, 202), answer.text
            return answer.json()

        ep = post("/webhook-endpoints", {"url": url, "events": [SETTLED]})
        card = {"amount_minor": 2500, "currency": "USD", "payment_method": "pm_card_visa"}
        post("/payments", card)
        until(lambda: Hooks.got or None, 60, "the settled webhook")
        body = Webhook(ep["secret"]).verify(Hooks.got[0][1], Hooks.got[0][0])
        assert body["type"] == SETTLED and body["data"]["amount_minor"] == 2500
        until(lambda: [m for m in mails.got if email in m.rcpt_tos] or None, 60, "the email")

        def recorded() -> dict[str, Any] | None:
            path = f"/api/v1/webhook-endpoints/{ep['id']}/deliveries"
            (found,) = http.get(path, headers=auth).json()["data"]
            return found if found["status"] == "succeeded" else None

        delivery = until(recorded, 30, "the delivery recorded")
        assert [a["status_code"] for a in delivery["attempts"]] == [200]
        post(f"/webhook-endpoints/{ep['id']}/deliveries/{delivery['id']}/redeliver")
        until(lambda: len(Hooks.got) >= 2 or None, 30, "the redelivery")
        assert Hooks.got[1][0]["webhook-id"] == Hooks.got[0][0]["webhook-id"] == delivery["id"]
        assert json.loads(Hooks.got[1][1]) == body
