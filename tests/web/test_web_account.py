"""The web app's account pages on both backends: subscriptions and invoices with their PDF,
notification preferences (a refused Slack URL shown by its field), webhook endpoints (the
secret shown once, a bad event type or URL by its field) and an endpoint's delivery log with
"send again"."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import Stack, eventually, running_stack
from tests.web.web import Browser, error_of, hidden

ADMIN = "ops@example.com"
HOOK = "http://127.0.0.1:9/hook"  # nothing listens: every attempt fails, and is logged


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def astack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    extra = {
        "auth": {"admin_emails": [ADMIN]},
        "notifications": {"allow_private_targets": True, "delivery_interval_seconds": 0.05},
    }
    async with running_stack(request.param, tmp_path, **extra) as stack:
        yield stack


async def test_subscriptions_and_invoices_with_pdf(astack: Stack) -> None:
    admin = await astack.user(ADMIN)
    plan = await astack.post(
        admin,
        "/api/v1/plans",
        {"name": "Basic", "amount_minor": 1000, "currency": "USD", "interval": "month"},
    )
    assert plan.status_code == 201, plan.text
    async with Browser(astack) as b:
        await b.signup()
        assert "No subscriptions." in (await b.get("/app/billing")).text
        pid = await b.top_up("20.00")
        await astack.wait_status(b.api, pid, "settled")
        await astack.wait_available(b.api, 2000)
        sub = await astack.post(
            b.api,
            "/api/v1/subscriptions",
            {"plan_id": plan.json()["id"], "payment_source": "wallet"},
        )
        assert sub.status_code == 201, sub.text
        page = await b.get("/app/billing")
        assert page.status_code == 200
        assert "Basic · 10.00 USD" in page.text and 'data-status="active"' in page.text
        invoice = (await astack.get(b.api, "/api/v1/invoices")).json()["data"][0]
        assert f'href="/app/invoices/{invoice["id"]}/pdf"' in page.text
        pdf = await b.get(f"/app/invoices/{invoice['id']}/pdf")
        assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
        assert pdf.content.startswith(b"%PDF")
        live = await b.get("/app/live/billing")
        assert invoice["id"] in live.text or (invoice["number"] or "") in live.text
        # Another user's invoice is a 404 page, never the PDF.
        async with Browser(astack) as other:
            await other.signup()
            assert (await other.get(f"/app/invoices/{invoice['id']}/pdf")).status_code == 404


async def test_preferences_endpoints_and_delivery_log(astack: Stack) -> None:
    async with Browser(astack) as b:
        await b.signup()
        page = await b.get("/app/notifications")
        assert (
            page.status_code == 200
            and 'id="email" name="email" type="checkbox" value="1" checked' in page.text
        )
        bad = await b.submit(
            "/app/notifications",
            "/app/notifications/preferences",
            {"email": "1", "slack": "ftp://x.example"},
        )
        assert bad.status_code == 422 and error_of(bad.text, "slack")
        ok = await b.submit("/app/notifications", "/app/notifications/preferences", {"slack": ""})
        assert ok.status_code == 303 and ok.headers["location"] == "/app/notifications?saved=1"
        prefs = (await astack.get(b.api, "/api/v1/notification-preferences")).json()
        assert prefs == prefs | {"email": False, "slack_webhook_url": None}

        wrong = await b.submit(
            "/app/notifications", "/app/webhooks", {"url": HOOK, "events": "payments.nothing"}
        )
        assert wrong.status_code == 422 and error_of(wrong.text, "events")
        refused = await b.submit(
            "/app/notifications",
            "/app/webhooks",
            {"url": "http://169.254.169.254/x", "events": "*"},
        )
        assert refused.status_code == 422 and error_of(refused.text, "url")

        form = hidden((await b.get("/app/notifications")).text, "/app/webhooks")
        fields = form | {
            "url": HOOK,
            "events": "payments.payment.settled, payments.payment.captured",
        }
        made = await b.http.post("/app/webhooks", data=fields)
        assert made.status_code == 201 and 'id="secret">whsec_' in made.text
        endpoints = (await astack.get(b.api, "/api/v1/webhook-endpoints")).json()["data"]
        assert len(endpoints) == 1 and sorted(endpoints[0]["events"]) == [
            "payments.payment.captured",
            "payments.payment.settled",
        ]
        again = await b.http.post("/app/webhooks", data=fields)  # a double submit: one endpoint
        assert again.status_code == 201
        assert len((await astack.get(b.api, "/api/v1/webhook-endpoints")).json()["data"]) == 1
        assert "whsec_" not in (await b.get("/app/notifications")).text  # shown once

        eid = endpoints[0]["id"]
        await b.top_up("5.00")

        async def logged() -> str | None:
            text = (await b.get(f"/app/webhooks/{eid}")).text
            return text if 'class="delivery"' in text else None

        page_text = await eventually(logged)
        assert "payments.payment.captured" in page_text or "payments.payment.settled" in page_text
        resend = await b.submit(
            f"/app/webhooks/{eid}",
            _redeliver_action(page_text),
            {},
        )
        assert resend.status_code == 303 and resend.headers["location"] == f"/app/webhooks/{eid}"


def _redeliver_action(page: str) -> str:
    start = page.index('action="/app/webhooks/') + len('action="')
    return page[start : page.index('"', start)]
