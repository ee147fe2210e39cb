"""The base of every typed internal client.

The same client code serves both run modes: in the embedded mode its transport is the owning
component's ASGI app in this process, at scale it is plain HTTP to that component's URL.
Errors come back as problem+json and are raised again as ``AppError`` with the same code.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import stamina
import structlog

from pocketpay.kit.errors import AppError, Unavailable
from pocketpay.kit.tracing import client_span, current_trace_context


class InternalClient:
    def __init__(
        self,
        component: str,
        base_url: str,
        *,
        token: str,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_seconds: float = 10.0,
    ) -> None:
        # Every internal API requires the token (kit.component.internal_auth), in-process too.
        if not token:
            raise ValueError("an internal client needs the internal token")
        self.component = component
        headers = {"X-Internal-Token": token}
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
        self._http = httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            headers=headers,
            timeout=timeout_seconds,
            limits=limits,
        )

    async def ping(self, timeout_seconds: float = 0.25) -> float:
        """``GET /healthz`` once, no retry, short timeout: for readiness checks, which must
        stay fast when the other side is down. Returns milliseconds; raises if it fails."""
        start = time.perf_counter()
        resp = await self._http.get("/healthz", timeout=timeout_seconds)
        resp.raise_for_status()
        return (time.perf_counter() - start) * 1000

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> Any:
        """The JSON answer; an error answer raises its ``AppError``."""
        resp = await self._checked(method, path, json, params, request_id)
        return resp.json()

    async def request_bytes(
        self, method: str, path: str, *, params: dict[str, Any] | None = None
    ) -> bytes:
        """The raw answer (a PDF, ...); an error answer raises its ``AppError``."""
        return (await self._checked(method, path, None, params, None)).content

    async def _checked(
        self,
        method: str,
        path: str,
        json: Any,
        params: dict[str, Any] | None,
        request_id: str | None,
    ) -> httpx.Response:
        headers = current_trace_context()
        request_id = request_id or structlog.contextvars.get_contextvars().get("request_id")
        if request_id:
            headers["X-Request-Id"] = request_id
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            with client_span(f"{self.component} {method} {path.split('?')[0]}"):
                headers |= current_trace_context()
                resp = await self._send(method, path, json, clean, headers)
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"{self.component} is unreachable: {type(exc).__name__}",
                code=f"{self.component}.unavailable",
            ) from exc
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = {"detail": resp.text[:200], "status": resp.status_code}
            if not isinstance(body, dict) or "code" not in body:
                body = {
                    "code": f"{self.component}.error",
                    "status": resp.status_code,
                    "detail": str(body)[:200],
                }
            err = AppError.from_dict(body)
            if "retry-after" in resp.headers:  # overload and in-progress answers keep their hint
                err.headers["Retry-After"] = resp.headers["retry-after"]
            raise err
        return resp

    async def _send(
        self, method: str, path: str, json: Any, params: dict[str, Any], headers: dict[str, str]
    ) -> httpx.Response:
        if method != "GET":
            return await self._http.request(method, path, json=json, params=params, headers=headers)
        # Reads are safe to retry on a connection blip; writes are retried by their callers
        # with idempotency keys, never blindly here.
        async for attempt in stamina.retry_context(
            on=httpx.TransportError, attempts=3, wait_initial=0.05, wait_max=0.5
        ):
            with attempt:
                return await self._http.request(method, path, params=params, headers=headers)
        raise AssertionError("unreachable")
