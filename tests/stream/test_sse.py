"""Live updates over Server-Sent Events, on both backends (SQLite + embedded bus, PostgreSQL
+ NATS): order, resume, isolation, token expiry, limits, retention, redelivery."""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from pocketpay.gateway.stream_hub import StreamHub
from pocketpay.gateway.stream_log import StreamLog, users_of
from pocketpay.kit.bus import Envelope
from pocketpay.kit.clock import ManualClock, SystemClock
from tests.stream.sse import SseFrame, sse
from tests.support import Stack, eventually

PAYMENT = ["created", "authorized", "captured", "settled"]


def hub(stack: Stack) -> StreamHub:
    h: StreamHub = stack.runtime.components["gateway"].state["stream_hub"]
    return h


def log_of(stack: Stack) -> StreamLog:
    lg: StreamLog = stack.runtime.components["gateway"].state["stream_log"]
    return lg


def payment_statuses(frames: list[SseFrame], pid: str) -> list[str]:
    return [
        f.event.rsplit(".", 1)[1]
        for f in frames
        if f.event.startswith("payments.payment.") and f.body["data"]["id"] == pid
    ]


async def wallet_at(s: Any, available: int, seen: list[SseFrame]) -> list[SseFrame]:
    """Frames up to the wallet update showing ``available`` (none if ``seen`` has it)."""
    more: list[SseFrame] = []
    while not any(
        f.event == "ledger.wallet.updated" and f.body["data"]["available_minor"] == available
        for f in seen + more
    ):
        more += await s.until("ledger.wallet.updated")
    return more


async def test_a_top_up_streams_in_order_with_ids_and_the_wallet(stack: Stack) -> None:
    alice = await stack.user()
    async with sse(stack.http, alice["headers"]) as s:
        payment = await stack.pay(alice, 2500, until=None)
        frames = await s.until("payments.payment.settled")
        frames += await wallet_at(s, 2500, frames)
    assert payment_statuses(frames, payment["id"]) == PAYMENT
    cursors = [int(f.id) for f in frames if f.id is not None]
    assert cursors == sorted(set(cursors)) and len(cursors) == len(frames)
    first = frames[0].body
    assert set(first) == {"id", "type", "occurred_at", "data"}
    assert first["type"] == frames[0].event
    wallet = [f.body["data"] for f in frames if f.event == "ledger.wallet.updated"][-1]
    assert wallet == {
        "id": f"wal_{alice['user']['id']}_USD",
        "object": "wallet",
        "owner_id": alice["user"]["id"],
        "currency": "USD",
        "available_minor": 2500,
        "pending_minor": 0,
        "posted_minor": 2500,
        "debt_minor": 0,
        "debt_account_id": None,
    }


async def test_resume_after_a_disconnect_loses_and_repeats_nothing(stack: Stack) -> None:
    alice = await stack.user()
    async with sse(stack.http, alice["headers"]) as s:
        first = await stack.pay(alice, 1000, until=None)
        got = await s.until("payments.payment.created")
    cursor = got[-1].id
    assert cursor is not None
    # Offline: the rest of the first payment and a whole second one happen.
    second = await stack.pay(alice, 700, until="settled")
    await stack.wait_status(alice, first["id"], "settled")
    await stack.wait_available(alice, 1700)

    async def logged() -> list[Any] | None:  # the log's consumer runs behind the API
        rows = await log_of(stack).after(alice["user"]["id"], int(cursor), 1000)
        settled = [r for r in rows if r.type == "payments.payment.settled"]
        return rows if len(settled) == 2 else None

    expected = await eventually(logged)
    headers = alice["headers"] | {"Last-Event-ID": cursor}
    async with sse(stack.http, headers) as s:
        resumed = [await s.event() for _ in expected]
    assert [f.id for f in resumed if f] == [str(e.seq) for e in expected]
    ids = [f.body["id"] for f in resumed if f]
    assert len(ids) == len(set(ids)) and got[-1].body["id"] not in ids
    assert payment_statuses([f for f in resumed if f], second["id"]) == PAYMENT
    assert payment_statuses([f for f in resumed if f], first["id"]) == PAYMENT[1:]
    # The query parameter works as the header does (EventSource cannot set headers).
    async with sse(stack.http, alice["headers"], last_event_id=cursor) as s:
        again = await s.event()
    assert again is not None and again.id == str(expected[0].seq)


async def test_another_users_events_are_never_delivered(stack: Stack) -> None:
    alice, bob, carol = await stack.user(), await stack.user(), await stack.user()
    await stack.pay(alice, 3000, until="settled")
    await stack.wait_available(alice, 3000)
    async with sse(stack.http, bob["headers"]) as bob_s, sse(stack.http, carol["headers"]) as cs:
        await stack.pay(carol, 900, until="settled")
        r = await stack.post(
            alice,
            "/api/v1/transfers",
            {"recipient": bob["user"]["email"], "amount_minor": 1200, "currency": "USD"},
        )
        assert r.status_code == 201, r.text
        bob_frames = await bob_s.until("ledger.transfer.posted")
        bob_frames += await wallet_at(bob_s, 1200, bob_frames)
        carol_frames = await cs.until("payments.payment.settled")
    me = bob["user"]["id"]
    for f in bob_frames:
        d = f.body["data"]
        assert me in (d.get("owner_id"), d.get("recipient_id"), d.get("sender_id")), f
    assert [f.event for f in bob_frames if f.event.startswith("payments.")] == []
    transfer = next(f.body["data"] for f in bob_frames if f.event == "ledger.transfer.posted")
    assert transfer["id"] == r.json()["id"] and transfer["recipient_id"] == me
    for f in carol_frames:
        assert f.body["data"].get("owner_id") == carol["user"]["id"], f


async def test_an_access_token_expiring_mid_stream_ends_it(stack: Stack) -> None:
    alice = await stack.user()
    clock = ManualClock(SystemClock().now())
    h = hub(stack)
    h.clock = clock
    try:
        async with sse(stack.http, alice["headers"]) as s:
            await stack.pay(alice, 500, until=None)
            assert (await s.until("payments.payment.created"))[-1].id
            clock.advance(stack.runtime.settings.auth.access_ttl_seconds + 1)
            end = await s.event()
            assert end is not None and end.event == "stream.token_expired"
            assert await s.event() is None  # closed after it
    finally:
        h.clock = stack.runtime.clock
    assert h.count(alice["user"]["id"]) == 0


async def test_an_api_key_revoked_mid_stream_ends_it_at_the_next_heartbeat(stack: Stack) -> None:
    alice = await stack.user()
    r = await stack.http.post("/api/v1/api-keys", json={"name": "s"}, headers=alice["headers"])
    assert r.status_code == 201, r.text
    key = r.json()
    h = hub(stack)
    h.heartbeat_seconds = 0.05  # asked again at every heartbeat: make them come quickly
    try:
        async with sse(stack.http, {"Authorization": f"Bearer {key['secret']}"}) as s:
            assert (await s.frame()) is not None  # a heartbeat: the key is still good
            revoked = await stack.http.post(
                f"/api/v1/api-keys/{key['id']}/revoke", headers=alice["headers"]
            )
            assert revoked.status_code == 200
            end = await s.event()
            assert end is not None and end.event == "stream.token_expired"
            assert end.body["data"] == {"reason": "revoked"}
            assert await s.event() is None
    finally:
        h.heartbeat_seconds = stack.runtime.settings.stream.heartbeat_seconds
    assert h.count(alice["user"]["id"]) == 0


async def test_connection_limit_per_user_is_429(stack: Stack) -> None:
    alice, bob = await stack.user(), await stack.user()
    limit = stack.runtime.settings.stream.max_connections_per_user
    async with contextlib.AsyncExitStack() as streams:
        for _ in range(limit):
            await streams.enter_async_context(sse(stack.http, alice["headers"]))
        r = await stack.get(alice, "/api/v1/stream")
        assert r.status_code == 429
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "stream.too_many_connections"
        assert r.headers["retry-after"] == "5"
        async with sse(stack.http, bob["headers"]):  # others are not affected
            pass
    async with sse(stack.http, alice["headers"]):  # released: room again
        pass


async def test_unauthenticated_and_bad_cursor_are_problems(stack: Stack) -> None:
    alice = await stack.user()
    r = await stack.http.get("/api/v1/stream")
    assert r.status_code == 401 and r.json()["code"] == "auth.unauthorized"
    r = await stack.http.get("/api/v1/stream", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["code"] == "auth.invalid_token"
    r = await stack.get(alice, "/api/v1/stream", last_event_id="abc")
    assert r.status_code == 400 and r.json()["code"] == "stream.invalid_cursor"
    r = await stack.get(alice, "/api/v1/stream", last_event_id="²")
    assert r.status_code == 400 and r.json()["code"] == "stream.invalid_cursor"
    r = await stack.http.get("/api/v1/stream", headers=alice["headers"] | {"Last-Event-ID": "12x"})
    assert r.status_code == 400 and r.json()["code"] == "stream.invalid_cursor"


async def test_the_session_cookie_authenticates_the_stream(stack: Stack) -> None:
    alice = await stack.user()
    cookies = {"pocketpay_session": alice["access_token"]}
    browser = httpx.AsyncClient(base_url=stack.base_url, cookies=cookies)
    async with browser, sse(browser, {}) as s:
        await stack.pay(alice, 400, until=None)
        frames = await s.until("payments.payment.created")
    assert frames[-1].body["data"]["owner_id"] == alice["user"]["id"]


async def test_a_cursor_past_the_retention_gets_resume_expired(stack: Stack) -> None:
    alice = await stack.user()
    async with sse(stack.http, alice["headers"]) as s:
        await stack.pay(alice, 600, until=None)
        seen = await s.until("payments.payment.settled")
        seen += await wallet_at(s, 600, seen)
        old = seen[0].id  # the oldest: its row goes in the purge
    assert old is not None
    retention = stack.runtime.settings.stream.retention_hours
    later = SystemClock().now() + timedelta(hours=retention, seconds=1)
    assert await log_of(stack).purge(later) >= 1
    assert await log_of(stack).after(alice["user"]["id"], 0, 10) == []
    async with sse(stack.http, alice["headers"] | {"Last-Event-ID": old}) as s:
        expired = await s.event()
        assert expired is not None and expired.event == "stream.resume_expired"
        assert expired.id is None and expired.body["data"] == {"cursor": old}
        await stack.pay(alice, 300, until=None)  # then it carries on from now
        nxt = await s.until("payments.payment.created")
    assert nxt[-1].body["data"]["amount_minor"] == 300


async def test_a_redelivered_bus_event_makes_one_frame(stack: Stack) -> None:
    alice = await stack.user()
    env = Envelope(
        id="evt_redelivered_" + alice["user"]["id"][-12:],
        type="payments.payment.created",
        occurred_at=SystemClock().now(),
        data={"id": "pay_x", "owner_id": alice["user"]["id"], "amount_minor": 1},
    )
    async with sse(stack.http, alice["headers"]) as s:
        for _ in range(3):
            await stack.runtime.bus.publish(env)  # the bus dedupes; the log dedupes again
        await log_of(stack).append(env)
        first = await s.event()
        assert first is not None and first.body["id"] == env.id
        marker = await stack.pay(alice, 200, until=None)
        rest = await s.until("payments.payment.created")
    assert [f.body["id"] for f in rest].count(env.id) == 0
    assert rest[-1].body["data"]["id"] == marker["id"]


@settings(max_examples=50, deadline=None)
@given(
    owner=st.one_of(st.none(), st.text(min_size=1, max_size=8)),
    sender=st.one_of(st.none(), st.text(min_size=1, max_size=8)),
    recipient=st.one_of(st.none(), st.text(min_size=1, max_size=8)),
)
def test_users_of_names_exactly_the_users_in_the_event(
    owner: str | None, sender: str | None, recipient: str | None
) -> None:
    data: dict[str, Any] = {"owner_id": owner, "sender_id": sender, "recipient_id": recipient}
    env = Envelope("evt_1", "x.y.z", SystemClock().now(), json.loads(json.dumps(data)))
    named = {u for u in (owner, sender, recipient) if u}
    assert users_of(env) == sorted(named)
