"""Live updates: ``GET /api/v1/stream`` (Server-Sent Events) and ``GET /api/v1/ws``
(WebSocket) deliver the signed-in user's own events from the per-user log
(``stream_log.py``) through this process's hub (``stream_hub.py``).

Auth: ``Authorization: Bearer`` (access token or API key, as every route), else the web app's
HttpOnly cookie ``pocketpay_session`` (browsers cannot set headers on EventSource). An access
token's ``exp`` ends the stream: SSE sends ``stream.token_expired`` then closes, the WebSocket
closes with 4401. An API key is asked about again at every heartbeat: revoked (or rolled past
its overlap), the stream ends the same way, with ``{"reason": "revoked"}``. A WebSocket
authenticated by the cookie must come from this origin (a page of
another site could otherwise open it with the user's cookie).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import anyio
import jwt
from fastapi import APIRouter, Header, Query, Request, WebSocket
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.websockets import WebSocketDisconnect

from pocketpay.gateway.api_keys import is_api_key
from pocketpay.gateway.auth import AuthService
from pocketpay.gateway.problems import problems
from pocketpay.gateway.stream_hub import Frame, StreamConnection, StreamHub
from pocketpay.kit.errors import AppError, Forbidden, Unauthorized

SESSION_COOKIE = "pocketpay_session"
RETRY_MS = 2000  # the SSE reconnection hint sent at shutdown
CLOSE_EXPIRED = 4401
CLOSE_RESTART = 1012  # "service restart": reconnect later with resume_from
CLOSE_SLOW = 4408
_CURSOR = re.compile(r"[0-9]{1,18}")


class StreamEventOut(BaseModel):
    """One frame's data. SSE: ``id: <cursor>``, ``event: <type>``, ``data: <this>``. The
    WebSocket sends this object plus ``cursor``. Control frames (``stream.resume_expired``,
    ``stream.token_expired``, ``stream.slow_consumer``, ``stream.shutdown``) have no ``id``;
    ``data.cursor`` is where to resume when there is one."""

    id: str | None = Field(default=None, description="the domain event id (stable)")
    type: str = Field(examples=["payments.payment.settled", "ledger.wallet.updated"])
    occurred_at: str | None = None
    data: dict[str, Any] = Field(description="the object as the API returns it")
    cursor: str | None = Field(default=None, description="WebSocket only: resume_from value")


def _cookie_or_bearer(authorization: str | None, cookie: str | None) -> tuple[str, bool]:
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip(), False
    if cookie:
        return cookie, True
    raise Unauthorized(
        "Send 'Authorization: Bearer <access_token>' or sign in to the web app.",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _expires_at(token: str) -> datetime | None:
    """An access token's ``exp`` (already verified); None for an API key."""
    if is_api_key(token):
        return None
    claims = jwt.decode(token, options={"verify_signature": False})
    return datetime.fromtimestamp(int(claims["exp"]), UTC)


def _cursor(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not _CURSOR.fullmatch(value):  # ASCII digits only (str.isdigit takes "²")
        raise AppError(
            "The resume cursor must be a number from a frame's id.",
            code="stream.invalid_cursor",
            status=400,
        )
    return int(value)


def _body(frame: Frame) -> dict[str, Any]:
    if frame.event is not None:
        return frame.event.body()
    return {"id": None, "type": frame.type, "occurred_at": None, "data": frame.data}


def _sse(frame: Frame) -> ServerSentEvent:
    if frame.kind == "heartbeat":
        return ServerSentEvent(comment="heartbeat")
    body = json.dumps(_body(frame), separators=(",", ":"), default=str)
    seq = str(frame.event.seq) if frame.event is not None else None
    retry = RETRY_MS if frame.type == "stream.shutdown" else None
    return ServerSentEvent(data=body, event=frame.type, id=seq, retry=retry)


async def _sse_frames(
    hub: StreamHub, conn: StreamConnection, shutdown: anyio.Event
) -> AsyncIterator[ServerSentEvent]:
    async def on_shutdown() -> None:
        await shutdown.wait()
        conn.end(_shutdown_frame(conn))

    async with anyio.create_task_group() as tg:
        tg.start_soon(on_shutdown)
        try:
            while True:
                frame = await conn.next()
                yield _sse(frame)
                conn.sent(frame)  # resumed after the send: the client has it
                if frame.final:
                    break
        finally:
            tg.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await hub.release(conn)


def _shutdown_frame(conn: StreamConnection) -> Frame:
    return Frame("control", "stream.shutdown", data={"cursor": str(conn.delivered)}, final=True)


def _same_origin(origin: str | None, host: str | None) -> bool:
    return bool(origin and host and urlsplit(origin).netloc == host)


def build_router(auth: AuthService, hub: StreamHub) -> APIRouter:
    r = APIRouter(prefix="/api/v1", tags=["streams"])

    @r.get(
        "/stream",
        response_model=StreamEventOut,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
            **problems("auth.unauthorized", "stream.invalid_cursor", "stream.too_many_connections"),
        },
    )
    async def stream(
        request: Request,
        last_event_id: str | None = Query(default=None, description="as Last-Event-ID"),
        last_event_id_header: str | None = Header(default=None, alias="Last-Event-ID"),
        authorization: str | None = Header(default=None),
    ) -> EventSourceResponse:
        """Your events as Server-Sent Events: payments, refunds, transfers (sent and
        received), wallet balance changes and billing events, oldest first. Each frame's `id`
        is its cursor: reconnect with `Last-Event-ID` (or `?last_event_id=`) to receive what
        you missed. A cursor older than the log's retention gets `stream.resume_expired`
        first (refetch, then carry on). Heartbeat comments keep proxies from closing it."""
        token, _ = _cookie_or_bearer(authorization, request.cookies.get(SESSION_COOKIE))
        principal = await auth.authenticate(token, request)
        cursor = _cursor(last_event_id_header or last_event_id)
        conn = await hub.open(
            principal.user_id, cursor, _expires_at(token), auth.revalidator(token)
        )
        shutdown = anyio.Event()
        return EventSourceResponse(
            _sse_frames(hub, conn, shutdown),
            ping=0,  # the hub sends heartbeats (one timer per stream, shared with wakes)
            shutdown_event=shutdown,
            shutdown_grace_period=1.0,
        )

    @r.websocket("/ws")
    async def ws(websocket: WebSocket, resume_from: str | None = None) -> None:
        """Your events over a WebSocket (the SSE frames as JSON with `cursor`)."""
        try:
            conn = await _open_ws(websocket, resume_from)
        except AppError as exc:
            body = exc.to_dict() | {"request_id": None}
            await websocket.send_denial_response(
                JSONResponse(body, status_code=exc.status, headers=exc.headers)
            )
            return
        await websocket.accept()
        try:
            await _ws_pump(websocket, conn)
        finally:
            await hub.release(conn)

    async def _open_ws(websocket: WebSocket, resume_from: str | None) -> StreamConnection:
        headers = websocket.headers
        token, by_cookie = _cookie_or_bearer(
            headers.get("authorization"), websocket.cookies.get(SESSION_COOKIE)
        )
        if by_cookie and not _same_origin(headers.get("origin"), headers.get("host")):
            raise Forbidden("A WebSocket signed in by cookie must come from this site.")
        request = Request({**websocket.scope, "type": "http", "method": "GET"})
        principal = await auth.authenticate(token, request)
        return await hub.open(
            principal.user_id, _cursor(resume_from), _expires_at(token), auth.revalidator(token)
        )

    return r


async def _ws_pump(websocket: WebSocket, conn: StreamConnection) -> None:
    """Send frames until a final one (then close with its code) or the client leaves."""

    async def watch_client() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await websocket.receive_text()  # clients send nothing we use
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_client)
        while True:
            frame = await conn.next()
            await websocket.send_text(_ws_json(frame, conn))
            conn.sent(frame)
            if frame.final:
                await websocket.close(_close_code(frame.type), frame.type)
                break
        tg.cancel_scope.cancel()


def _ws_json(frame: Frame, conn: StreamConnection) -> str:
    if frame.kind == "heartbeat":
        return '{"type":"stream.heartbeat"}'
    body = _body(frame)
    body["cursor"] = str(frame.event.seq) if frame.event is not None else None
    return json.dumps(body, separators=(",", ":"), default=str)


def _close_code(type_: str) -> int:
    return {
        "stream.token_expired": CLOSE_EXPIRED,
        "stream.shutdown": CLOSE_RESTART,
        "stream.slow_consumer": CLOSE_SLOW,
    }.get(type_, 1000)
