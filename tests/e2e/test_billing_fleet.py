"""Billing in its own process, at scale: gateway, payments, ledger, billing and sandbox each a
``pocketpay serve`` process on PostgreSQL + NATS JetStream, driven over HTTP only. A user
subscribes with a saved test card through the gateway; the card's outcome reaches billing as
a payments event over NATS; the admin's test clock moves a month and the renewal invoice is
charged and paid; ``pocketpay check`` finds the ledger consistent.

Run under ``flock /tmp/pp_fleet.lock`` (fleets refuse overlapping NATS streams)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e import fleet as fl
from tests.e2e.fleet import Fleet, until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.nats]

PASSWORD = "correct-horse-battery"
ADMIN = "ops@example.com"
LAYOUT = {"sandbox": 1, "ledger": 1, "payments": 1, "billing": 1, "gateway": 1}
ENV = {
    "POCKETPAY_AUTH__ADMIN_EMAILS": f'["{ADMIN}"]',
    "POCKETPAY_SANDBOX__SETTLE_DELAY_SECONDS": "0.5",
    "POCKETPAY_PSP__SETTLE_POLL_SECONDS": "0.2",
    "POCKETPAY_BUS__RELAY_POLL_SECONDS": "0.1",
    "POCKETPAY_BUS__RETRY_DELAY_MS": "50",
    "POCKETPAY_BILLING__SCHEDULER_INTERVAL_SECONDS": "1",
}
DAY = 86400


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with fl.running_fleet(tmp_path_factory.mktemp("e2e-billing"), LAYOUT, ENV) as running:
        yield running


class Client:
    def __init__(self, http: httpx.Client, email: str) -> None:
        r = http.post(
            "/api/v1/auth/signup", json={"email": email, "password": PASSWORD, "name": "Test"}
        )
        assert r.status_code == 201, r.text
        self.http = http
        self.headers = {"Authorization": f"Bearer {r.json()['access_token']}"}

    def post(self, path: str, json: Any = None) -> Any:
        headers = self.headers | {"Idempotency-Key": uuid.uuid4().hex}
        r = self.http.post(f"/api/v1{path}", json=json, headers=headers)
        assert r.status_code in (200, 201), r.text
        return r.json()

    def get(self, path: str, **params: Any) -> Any:
        r = self.http.get(f"/api/v1{path}", headers=self.headers, params=params)
        assert r.status_code == 200, r.text
        return r.json()


def test_a_card_subscription_renews_in_the_billing_process(fleet: Fleet) -> None:
    assert [p.component for p in fleet.of("billing")] == ["billing"]
    with httpx.Client(base_url=fleet.gateway, timeout=30.0) as http:
        admin = Client(http, ADMIN)
        alice = Client(http, f"alice-{uuid.uuid4().hex[:8]}@example.com")
        plan = admin.post(
            "/plans", {"name": "Pro", "amount_minor": 1500, "currency": "USD", "interval": "month"}
        )
        card = alice.post("/payment-methods", {"payment_method": "pm_card_visa"})["id"]
        sub = alice.post("/subscriptions", {"plan_id": plan["id"], "payment_method": card})

        def status(wanted: str) -> dict[str, Any] | None:
            got: dict[str, Any] = alice.get(f"/subscriptions/{sub['id']}")
            return got if got["status"] == wanted else None

        until(lambda: status("active"), 30, "the subscription active")
        line = admin.post(
            f"/subscriptions/{sub['id']}/lines", {"description": "Setup", "amount_minor": 300}
        )
        assert (line["object"], line["kind"], line["invoice_id"]) == (
            "invoice_item",
            "one_off",
            None,
        )
        before = admin.get("/admin/test-clock")["now"]
        moved = admin.post("/admin/test-clock/advance", {"seconds": 31 * DAY})
        assert moved["now"] > before and moved["offset_seconds"] >= 31 * DAY

        def paid() -> list[dict[str, Any]] | None:
            found: list[dict[str, Any]] = alice.get("/invoices")["data"]
            return found if len(found) == 2 and found[0]["status"] == "paid" else None

        renewal, first = until(paid, 60, "the renewal invoice paid")
        assert renewal["period_start"] == first["period_end"]
        assert first["total_minor"] == 1500 and renewal["total_minor"] == 1800
        assert [x["amount_minor"] for x in renewal["lines"]] == [1500, 300]
        assert renewal["number"].endswith("-0002") and renewal["attempts"] == 1
        payments = alice.get("/payments")["data"]
        amounts = [(p["purpose"], p["amount_minor"]) for p in payments]
        assert amounts == [("invoice", 1800), ("invoice", 1500)]
        assert until(lambda: status("active"), 10, "still active")

        # A declining card's first invoice stays open; the admin voids it (the billing
        # process answers through the gateway's HTTP client), a paid one is refused.
        bob = Client(http, f"bob-{uuid.uuid4().hex[:8]}@example.com")
        failing = bob.post("/payment-methods", {"payment_method": "pm_card_chargeCustomerFail"})
        bob.post("/subscriptions", {"plan_id": plan["id"], "payment_method": failing["id"]})

        def declined() -> dict[str, Any] | None:
            found: list[dict[str, Any]] = bob.get("/invoices")["data"]
            return found[0] if found and found[0]["last_decline_code"] else None

        open_ = until(declined, 30, "bob's first invoice declined")
        voided = admin.post(f"/invoices/{open_['id']}/void")
        assert (
            voided["status"] == "void" and bob.get(f"/invoices/{open_['id']}")["status"] == "void"
        )
        headers = admin.headers | {"Idempotency-Key": uuid.uuid4().hex}
        refused = http.post(f"/api/v1/invoices/{renewal['id']}/void", headers=headers)
        assert refused.status_code == 409 and refused.json()["code"] == "billing.invalid_transition"

    check = fleet.cli("check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "ledger consistent" in check.stdout
