"""Live updates over the WebSocket (``GET /api/v1/ws``), on both backends: the same frames as
SSE plus ``cursor``, resume_from, token expiry (close 4401), the connection limit and auth
refused before the upgrade, the cookie only from this origin."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from pocketpay.gateway.stream_hub import StreamHub
from pocketpay.kit.clock import ManualClock, SystemClock
from tests.support import Stack

PAYMENT = ["created", "authorized", "captured", "settled"]


def ws_url(stack: Stack, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    base = stack.base_url.replace("http://", "ws://") + "/api/v1/ws"
    return f"{base}?{query}" if query else base


@contextlib.asynccontextmanager
async def ws(
    stack: Stack, headers: dict[str, str], **params: str
) -> AsyncIterator[ClientConnection]:
    async with connect(ws_url(stack, **params), additional_headers=headers, proxy=None) as c:
        yield c


async def frames_until(c: ClientConnection, event_type: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(15):
        while True:
            msg = json.loads(await c.recv())
            if msg["type"] == "stream.heartbeat":
                continue
            seen.append(msg)
            if msg["type"] == event_type:
                return seen


def statuses(frames: list[dict[str, Any]], pid: str) -> list[str]:
    return [
        f["type"].rsplit(".", 1)[1]
        for f in frames
        if f["type"].startswith("payments.payment.") and f["data"]["id"] == pid
    ]


async def test_ws_streams_in_order_and_resumes_from_a_cursor(stack: Stack) -> None:
    alice = await stack.user()
    async with ws(stack, alice["headers"]) as c:
        payment = await stack.pay(alice, 1500, until=None)
        first = await frames_until(c, "payments.payment.authorized")
    assert set(first[0]) == {"id", "type", "occurred_at", "data", "cursor"}
    cursors = [int(f["cursor"]) for f in first]
    assert cursors == sorted(set(cursors))
    async with ws(stack, alice["headers"], resume_from=first[-1]["cursor"]) as c:
        rest = await frames_until(c, "payments.payment.settled")
    assert statuses(first + rest, payment["id"]) == PAYMENT
    assert not {f["id"] for f in first} & {f["id"] for f in rest}
    assert int(rest[0]["cursor"]) > cursors[-1]


async def test_ws_token_expiry_closes_with_4401(stack: Stack) -> None:
    alice = await stack.user()
    hub: StreamHub = stack.runtime.components["gateway"].state["stream_hub"]
    clock = ManualClock(SystemClock().now())
    hub.clock = clock
    try:
        async with ws(stack, alice["headers"]) as c:
            await stack.pay(alice, 500, until=None)
            await frames_until(c, "payments.payment.created")
            clock.advance(stack.runtime.settings.auth.access_ttl_seconds + 1)
            last = await frames_until(c, "stream.token_expired")
            assert last[-1]["cursor"] is None
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(15):
                    await c.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    finally:
        hub.clock = stack.runtime.clock


async def test_ws_refusals_before_the_upgrade(stack: Stack) -> None:
    alice = await stack.user()
    with pytest.raises(InvalidStatus) as refused:
        async with ws(stack, {}):
            pass
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body or b"{}")["code"] == "auth.unauthorized"
    limit = stack.runtime.settings.stream.max_connections_per_user
    async with contextlib.AsyncExitStack() as open_ones:
        for _ in range(limit):
            await open_ones.enter_async_context(ws(stack, alice["headers"]))
        with pytest.raises(InvalidStatus) as refused:
            async with ws(stack, alice["headers"]):
                pass
        assert refused.value.response.status_code == 429
        body = json.loads(refused.value.response.body or b"{}")
        assert body["code"] == "stream.too_many_connections"


async def test_ws_cookie_only_from_this_origin(stack: Stack) -> None:
    alice = await stack.user()
    cookie = {"Cookie": f"pocketpay_session={alice['access_token']}"}
    with pytest.raises(InvalidStatus) as refused:
        async with ws(stack, cookie | {"Origin": "https://evil.example"}):
            pass
    assert refused.value.response.status_code == 403
    async with ws(stack, cookie | {"Origin": stack.base_url}) as c:
        await stack.pay(alice, 300, until=None)
        got = await frames_until(c, "payments.payment.created")
    assert got[-1]["data"]["owner_id"] == alice["user"]["id"]
