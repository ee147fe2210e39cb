"""Outgoing webhooks end to end, on SQLite and on PostgreSQL + NATS: a real receiver checks
the Standard Webhooks signature with the ``standardwebhooks`` verifier; failures are retried
with backoff (the clock jumps, nothing sleeps), redelivered on demand, signed with both
secrets during a rotation; an endpoint failing for 3 days is disabled and its owner emailed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from pocketpay.kit.failpoints import arm, disarm
from tests.notifications.helpers import (
    BACKENDS,
    JumpingClock,
    Receiver,
    deliveries,
    endpoint,
    notifying_stack,
    receiver,
    smtp,
    wake,
)
from tests.support import Stack, eventually

CAPTURED = "payments.payment.captured"
PREFS = "/api/v1/notification-preferences"
DEFAULT = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0]


def verified(secret: str, request: tuple[dict[str, str], bytes]) -> Any:
    headers, body = request
    return Webhook(secret).verify(body, headers)


async def retry(stack: Stack, clock: JumpingClock, seconds: float, hook: Receiver, n: int) -> None:
    clock.advance(seconds)
    wake(stack)
    await hook.count(n)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_signed_delivery_retried_until_success_then_redelivered(
    backend: str, tmp_path: Path
) -> None:
    clock = JumpingClock()
    async with (
        smtp() as (_box, port),
        receiver(500, 500, 200) as hook,
        notifying_stack(backend, tmp_path, clock, port) as stack,
    ):
        user = await stack.user()
        ep = await endpoint(stack, user, hook.url, [CAPTURED])
        assert ep["secret"].startswith("whsec_") and ep["status"] == "enabled"
        payment = await stack.pay(user)
        await hook.count(1)
        body = verified(ep["secret"], hook.requests[0])
        assert body["type"] == CAPTURED and body["data"]["payment_id"] == payment["id"]
        await retry(stack, clock, 7, hook, 2)  # first step 5 s (+-20 %)
        await retry(stack, clock, 13, hook, 3)  # then 10 s
        ids = {h["webhook-id"] for h, _ in hook.requests}
        assert len(ids) == 1, "every attempt carries the delivery's id"
        for request in hook.requests:
            assert verified(ep["secret"], request) == body

        async def settled() -> list[Any] | None:
            found = await deliveries(stack, user, ep["id"])
            return found if found and found[0]["status"] == "succeeded" else None

        (delivery,) = await eventually(settled)
        assert delivery["id"] in ids and delivery["event_type"] == CAPTURED
        assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
        assert delivery["attempts"][2]["response_excerpt"] == "answer 3"
        assert all(a["latency_ms"] >= 0 for a in delivery["attempts"])

        path = f"/api/v1/webhook-endpoints/{ep['id']}/deliveries/{delivery['id']}/redeliver"
        r = await stack.post(user, path, key=None)
        assert r.status_code == 200, r.text
        await hook.count(4)
        assert hook.requests[3][0]["webhook-id"] == delivery["id"]
        assert verified(ep["secret"], hook.requests[3]) == body
        # Nothing further: a succeeded delivery is not retried.
        clock.advance(60)
        await stack.runtime.components["notifications"].state["job"].run_once()
        assert len(hook.requests) == 4


async def test_rotation_signs_with_both_secrets_during_the_overlap(tmp_path: Path) -> None:
    clock = JumpingClock()
    async with (
        smtp() as (_box, port),
        receiver(200) as hook,
        notifying_stack("sqlite", tmp_path, clock, port) as stack,
    ):
        user = await stack.user()
        ep = await endpoint(stack, user, hook.url, ["*"])
        await stack.pay(user, until="settled")

        async def sent() -> list[Any] | None:
            found = await deliveries(stack, user, ep["id"])
            done = {d["event_type"] for d in found if d["status"] == "succeeded"}
            return found if {CAPTURED, "payments.payment.settled"} <= done else None

        first = await eventually(sent)

        r = await stack.post(user, f"/api/v1/webhook-endpoints/{ep['id']}/rotate-secret", {})
        assert r.status_code == 200, r.text
        rotated = r.json()
        assert rotated["secret"] != ep["secret"] and rotated["previous_secret_expires_at"]
        seen = len(hook.requests)
        redeliver = f"/api/v1/webhook-endpoints/{ep['id']}/deliveries/{first[0]['id']}/redeliver"
        assert (await stack.post(user, redeliver, key=None)).status_code == 200
        await hook.count(seen + 1)
        request = hook.requests[-1]
        assert len(request[0]["webhook-signature"].split(" ")) == 2
        assert verified(ep["secret"], request) == verified(rotated["secret"], request)

        # No overlap: the old secret stops at once.
        path = f"/api/v1/webhook-endpoints/{ep['id']}/rotate-secret"
        third = (await stack.post(user, path, {"overlap_hours": 0})).json()
        assert (await stack.post(user, redeliver, key=None)).status_code == 200
        await hook.count(seen + 2)
        verified(third["secret"], hook.requests[-1])
        with pytest.raises(WebhookVerificationError):
            verified(rotated["secret"], hook.requests[-1])

        ready = (await stack.http.get("/components/notifications/readyz")).json()
        assert ready["status"] == "ready" and ready["checks"]["smtp"] == "ok", ready
        metrics = (await stack.http.get("/components/notifications/metrics")).text
        assert 'pocketpay_notification_deliveries_total{channel="webhook",outcome="succeeded"}' in (
            metrics
        )
        assert "pocketpay_notification_queue_age_seconds" in metrics


@pytest.mark.parametrize("backend", BACKENDS)
async def test_failing_for_three_days_disables_the_endpoint_and_emails_the_owner(
    backend: str, tmp_path: Path
) -> None:
    clock = JumpingClock()
    async with (
        smtp() as (box, port),
        receiver(503) as hook,
        # Default schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h...) and 3-day window.
        notifying_stack(backend, tmp_path, clock, port, webhook_retry_seconds=DEFAULT) as stack,
    ):
        user = await stack.user()
        prefs = {"email": False, "slack_webhook_url": None}  # only the disabling email
        r = await stack.http.put(PREFS, json=prefs, headers=user["headers"])
        assert r.status_code == 200, r.text
        ep = await endpoint(stack, user, hook.url, [CAPTURED])
        await stack.pay(user)
        await hook.count(1)
        for n in range(2, 8):  # 13 h steps (past every step and its jitter): 13 h ... 78 h
            await retry(stack, clock, 13 * 3600, hook, n)

        async def disabled() -> Any:
            got = (await stack.get(user, f"/api/v1/webhook-endpoints/{ep['id']}")).json()
            return got if got["status"] == "disabled" else None

        assert "3 days" in (await eventually(disabled))["disabled_reason"]
        (delivery,) = await deliveries(stack, user, ep["id"])
        assert delivery["status"] == "failed" and delivery["next_attempt_at"] is None
        assert all(a["status_code"] == 503 for a in delivery["attempts"])

        async def mailed() -> bool:
            return any(hook.url in t for t in box.texts())

        await eventually(mailed)
        assert box.mails[-1].rcpt_tos == [user["user"]["email"]]
        # Disabled: nothing more is sent, and redeliver says why.
        clock.advance(24 * 3600)
        await stack.runtime.components["notifications"].state["job"].run_once()
        assert len(hook.requests) == 7
        path = f"/api/v1/webhook-endpoints/{ep['id']}/deliveries/{delivery['id']}/redeliver"
        r = await stack.post(user, path, key=None)
        assert r.status_code == 409 and r.json()["code"] == "notifications.endpoint_disabled"
        body = json.loads(hook.requests[0][1])
        assert body["type"] == CAPTURED


async def test_a_target_refused_at_send_time_is_never_called(tmp_path: Path) -> None:
    """The guard runs again at every send: an endpoint that was allowed when registered
    (here: private targets allowed then, not any more) gets an attempt with the reason."""
    clock = JumpingClock()
    async with (
        smtp() as (_box, port),
        receiver(200) as hook,
        notifying_stack("sqlite", tmp_path, clock, port) as stack,
    ):
        user = await stack.user()
        ep = await endpoint(stack, user, hook.url, [CAPTURED])
        stack.runtime.settings.notifications.allow_private_targets = False
        await stack.pay(user)

        async def attempted() -> list[Any] | None:
            found = await deliveries(stack, user, ep["id"])
            return found if found and found[0]["attempts"] else None

        (delivery,) = await eventually(attempted)
        (attempt,) = delivery["attempts"]
        assert not attempt["ok"] and attempt["status_code"] is None
        assert "loopback" in attempt["error"], attempt
        assert delivery["status"] == "pending" and hook.requests == []


async def test_slack_gets_the_message_of_an_event(tmp_path: Path) -> None:
    clock = JumpingClock()
    async with (
        smtp() as (_box, port),
        receiver(200) as slack,
        notifying_stack("sqlite", tmp_path, clock, port) as stack,
    ):
        user = await stack.user()
        prefs = {"email": False, "slack_webhook_url": slack.url}
        assert (await stack.http.put(PREFS, json=prefs, headers=user["headers"])).status_code == 200
        await stack.pay(user, amount=1234, until="settled")

        async def posted() -> list[str] | None:
            texts = [json.loads(b)["text"] for _, b in slack.requests]
            return texts if any("settled" in t for t in texts) else None

        texts = await eventually(posted)
        assert all("12.34" in t for t in texts), texts


async def test_a_send_not_recorded_is_sent_again_once_with_the_same_id(tmp_path: Path) -> None:
    """The crash window between sending and recording: the message went out, nothing says so;
    once the claim's lease ends it goes out again, with the same webhook-id, and is recorded."""
    clock = JumpingClock()
    arm("notifications.delivery.after_send", "raise", count=1)
    try:
        async with (
            smtp() as (_box, port),
            receiver(200) as hook,
            notifying_stack("sqlite", tmp_path, clock, port) as stack,
        ):
            user = await stack.user()
            prefs = {"email": False, "slack_webhook_url": None}  # the webhook alone
            assert (await stack.http.put(PREFS, json=prefs, headers=user["headers"])).is_success
            ep = await endpoint(stack, user, hook.url, [CAPTURED])
            await stack.pay(user)
            await hook.count(1)
            (delivery,) = await deliveries(stack, user, ep["id"])
            assert delivery["status"] == "pending" and delivery["attempts"] == []
            await retry(stack, clock, 10 + 60 + 5, hook, 2)  # past the lease
            assert hook.requests[0][0]["webhook-id"] == hook.requests[1][0]["webhook-id"]

            async def recorded() -> list[Any] | None:
                found = await deliveries(stack, user, ep["id"])
                return found if found[0]["status"] == "succeeded" else None

            (delivery,) = await eventually(recorded)
            assert [a["status_code"] for a in delivery["attempts"]] == [200]
    finally:
        disarm()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_disabled_endpoints_retries_wait_and_resume_when_enabled(
    backend: str, tmp_path: Path
) -> None:
    clock = JumpingClock()
    async with (
        smtp() as (_box, port),
        receiver(500, 200) as hook,
        notifying_stack(backend, tmp_path, clock, port) as stack,
    ):
        user = await stack.user()
        ep = await endpoint(stack, user, hook.url, [CAPTURED])
        await stack.pay(user)
        await hook.count(1)
        path = f"/api/v1/webhook-endpoints/{ep['id']}"
        assert (await stack.post(user, path, {"enabled": False}, key=None)).status_code == 200
        clock.advance(7)
        await stack.runtime.components["notifications"].state["job"].run_once()
        assert len(hook.requests) == 1  # due, but its endpoint is disabled
        (delivery,) = await deliveries(stack, user, ep["id"])
        assert delivery["status"] == "pending"
        assert (await stack.post(user, path, {"enabled": True}, key=None)).status_code == 200
        await retry(stack, clock, 1, hook, 2)
