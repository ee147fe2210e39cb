"""The public notifications API: ownership (another user's endpoint is 404), refused input
with its codes, idempotent creation, paging, preferences, the typed HTTP client over the
internal API, and 503 without the component."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pocketpay.kit.client import InternalClient
from pocketpay.kit.errors import AppError
from pocketpay.kit.listing import Page
from pocketpay.notifications.client import HttpNotificationsClient
from tests.notifications.helpers import BACKENDS
from tests.support import Stack, free_port, running_stack

EP = "/api/v1/webhook-endpoints"
PREFS = "/api/v1/notification-preferences"
HOOK = "http://127.0.0.1:9/hook"  # never called: nothing here makes an event


@pytest.fixture(params=BACKENDS)
async def nstack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    settings = {"allow_private_targets": True, "max_endpoints_per_user": 3}
    async with running_stack(request.param, tmp_path, notifications=settings) as s:
        yield s


async def _create(stack: Stack, user: dict[str, Any], **body: Any) -> httpx.Response:
    return await stack.post(user, EP, {"url": HOOK, "events": ["*"]} | body)


def _code(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    code: str = r.json()["code"]
    return code


async def test_another_users_endpoint_is_not_found(nstack: Stack) -> None:
    alice, mallory = await nstack.user(), await nstack.user()
    ep = (await _create(nstack, alice)).json()
    base = f"{EP}/{ep['id']}"
    attempts = [
        await nstack.get(mallory, base),
        await nstack.get(mallory, f"{base}/deliveries"),
        await nstack.post(mallory, base, {"enabled": False}, key=None),
        await nstack.post(mallory, f"{base}/rotate-secret", {}, key=None),
        await nstack.post(mallory, f"{base}/deliveries/msg_X/redeliver", key=None),
        await nstack.http.delete(base, headers=mallory["headers"]),
    ]
    assert [_code(r, 404) for r in attempts] == ["not_found"] * len(attempts)
    assert (await nstack.get(mallory, EP)).json()["data"] == []
    mine = await nstack.get(alice, base)
    assert mine.status_code == 200 and mine.json()["status"] == "enabled"
    assert "secret" not in mine.json()  # shown once, at creation only


async def test_refused_input_has_stable_codes(nstack: Stack) -> None:
    user = await nstack.user()
    cases = [
        ({"events": ["payments.payment.teleported"]}, 422, "notifications.unknown_event_type"),
        ({"events": []}, 422, "validation.failed"),
        ({"url": "ftp://127.0.0.1/x"}, 422, "notifications.target_refused"),
        # Metadata and link-local stay refused even with private targets allowed.
        ({"url": "http://169.254.169.254/latest"}, 422, "notifications.target_refused"),
        ({"url": "http://[fe80::1]/x"}, 422, "notifications.target_refused"),
        ({"colour": "red"}, 422, "validation.failed"),
    ]
    for body, status, code in cases:
        assert _code(await _create(nstack, user, **body), status) == code, body
    no_key = await nstack.post(user, EP, {"url": HOOK, "events": ["*"]}, key=None)
    assert _code(no_key, 400) == "idempotency.key_missing"
    assert _code(await nstack.get(user, EP, starting_after="nope"), 400) == (
        "request.invalid_cursor"
    )
    slack = {"email": True, "slack_webhook_url": "http://169.254.169.254/"}
    r = await nstack.http.put(PREFS, json=slack, headers=user["headers"])
    assert _code(r, 422) == "notifications.target_refused"
    for _ in range(3):
        assert (await _create(nstack, user)).status_code == 201
    assert _code(await _create(nstack, user), 409) == "notifications.endpoint_limit"


async def test_create_is_idempotent_and_lists_page(nstack: Stack) -> None:
    user = await nstack.user()
    key = uuid.uuid4().hex
    body = {"url": HOOK, "events": ["payments.payment.settled", "*"], "description": "d"}
    first = await nstack.post(user, EP, body, key=key)
    again = await nstack.post(user, EP, body, key=key)
    assert first.status_code == again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert first.json() == again.json() and first.json()["events"] == ["*"]
    other = await nstack.post(user, EP, body | {"description": "other"}, key=key)
    assert _code(other, 422) == "idempotency.key_reused"
    second = (await _create(nstack, user, events=["ledger.transfer.posted"])).json()
    page = (await nstack.get(user, EP, limit=1)).json()
    assert [e["id"] for e in page["data"]] == [second["id"]] and page["has_more"]
    rest = (await nstack.get(user, EP, limit=1, starting_after=page["next_cursor"])).json()
    assert [e["id"] for e in rest["data"]] == [first.json()["id"]] and not rest["has_more"]

    changed = await nstack.post(
        user, f"{EP}/{second['id']}", {"enabled": False, "events": ["*"]}, key=None
    )
    assert changed.json()["status"] == "disabled" and changed.json()["events"] == ["*"]
    assert changed.json()["disabled_reason"] == "disabled by you"
    gone = await nstack.http.delete(f"{EP}/{second['id']}", headers=user["headers"])
    assert gone.json() == {"id": second["id"], "object": "webhook_endpoint", "deleted": True}
    assert _code(await nstack.get(user, f"{EP}/{second['id']}"), 404) == "not_found"


async def test_preferences_default_to_email_and_are_replaced(nstack: Stack) -> None:
    user = await nstack.user()
    assert (await nstack.get(user, PREFS)).json() == {
        "object": "notification_preferences",
        "email": True,
        "slack_webhook_url": None,
    }
    prefs = {"email": False, "slack_webhook_url": "http://127.0.0.1:9/slack"}
    put = await nstack.http.put(PREFS, json=prefs, headers=user["headers"])
    assert put.status_code == 200, put.text
    assert (await nstack.get(user, PREFS)).json() == put.json()
    assert put.json()["slack_webhook_url"] == prefs["slack_webhook_url"]


async def test_the_http_client_over_the_internal_api(nstack: Stack) -> None:
    """``HttpNotificationsClient`` (the gateway in another process) gets the same answers."""
    user_id = (await nstack.user())["user"]["id"]
    http = InternalClient(
        "notifications",
        "http://notifications.internal",
        token=nstack.runtime.settings.resolved_internal_token(),
        transport=httpx.ASGITransport(app=nstack.runtime.components["notifications"].app),
    )
    client = HttpNotificationsClient(http)
    try:
        created = await client.create_endpoint(user_id, "k1", {"url": HOOK, "events": ["*"]})
        assert (await client.get_endpoint(user_id, created.id)).url == HOOK
        listed = await client.list_endpoints(user_id, Page(limit=5))
        assert [e.id for e in listed.data] == [created.id]
        updated = await client.update_endpoint(user_id, created.id, {"description": "x"})
        assert updated.description == "x"
        rotated = await client.rotate_secret(user_id, created.id, {"overlap_hours": 1})
        assert rotated.secret != created.secret and rotated.previous_secret_expires_at
        assert (await client.list_deliveries(user_id, created.id, Page())).data == []
        prefs = await client.put_preferences(user_id, {"email": False})
        assert prefs == await client.get_preferences(user_id)
        with pytest.raises(AppError) as missing:
            await client.redeliver(user_id, created.id, "msg_X")
        assert (missing.value.code, missing.value.status) == ("not_found", 404)
        assert (await client.delete_endpoint(user_id, created.id)).deleted
        assert await client.ping() >= 0
    finally:
        await http.aclose()


async def test_smtp_down_degrades_readiness(tmp_path: Path) -> None:
    """Emails wait and are retried while SMTP is down: degraded, not unready."""
    settings = {"smtp_port": free_port()}  # nothing listens there
    async with running_stack("sqlite", tmp_path, notifications=settings) as stack:
        r = await stack.http.get("/components/notifications/readyz")
        assert r.status_code == 200
        assert r.json()["status"] == "degraded" and r.json()["checks"]["smtp"] == "fail"


async def test_without_the_component_the_routes_answer_503(tmp_path: Path) -> None:
    parts = ("gateway", "payments", "ledger", "billing", "sandbox")
    async with running_stack("sqlite", tmp_path, parts) as stack:
        user = await stack.user()
        for r in (await stack.get(user, PREFS), await _create(stack, user)):
            assert _code(r, 503) == "notifications.unavailable"
