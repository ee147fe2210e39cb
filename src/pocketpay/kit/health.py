"""Liveness, readiness and dependency diagnostics, the same on every component.

* ``GET /healthz``: the process is up; no dependency is touched.
* ``GET /readyz``: fast checks of critical dependencies, each under its own timeout.
  200 ``ready``; 200 ``degraded`` when a non-critical check fails or a check reports degraded
  (an open PSP breaker); 503 ``not_ready`` when a critical check fails.
* ``GET /health/deps``: every check with latency and details, for people, not probes.
* ``/health`` and ``/live`` answer as ``/healthz``, ``/ready`` as ``/readyz``.

A component with a bus (``add_bus``) also gets the non-critical ``dead_letters`` check: its
consumers' and its relay's dead letters not replayed yet. Any makes it ``degraded`` with the
count (the monitor alerts on it; see ``monitor.rules.DEAD_LETTERS``) and the check sets the
``pocketpay_bus_dead_letters`` gauge.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from pocketpay.kit.metrics import BUS_DEAD_LETTERS, render

Status = Literal["ok", "degraded", "fail"]


@dataclass
class CheckResult:
    status: Status
    detail: dict[str, Any] = field(default_factory=dict)
    latency_ms: float = 0.0


CheckFn = Callable[[], Awaitable[CheckResult]]


@dataclass
class Check:
    name: str
    fn: CheckFn
    critical: bool = True
    timeout_seconds: float = 0.3
    in_readiness: bool = True


def format_uptime(seconds: float) -> str:
    s = int(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h{m}m{sec}s"
    if m:
        return f"{m}m{sec}s"
    return f"{sec}s"


class Health:
    def __init__(self, component: str) -> None:
        self.component = component
        self.checks: list[Check] = []
        self.started = time.monotonic()

    def add_db(self, engine: Any) -> None:
        """``SELECT 1``. SQLite waits for the process's one pooled connection, so it gets a
        longer budget than a PostgreSQL round trip (100-300 ms)."""
        from pocketpay.kit.db import ping

        async def check() -> CheckResult:
            return CheckResult("ok", {"latency_ms": round(await ping(engine), 2)})

        timeout = 1.0 if engine.dialect.name == "sqlite" else 0.3
        self.add("db", check, timeout_seconds=timeout)

    def add_bus(self, bus: Any) -> None:
        async def check() -> CheckResult:
            return CheckResult("ok", {"latency_ms": round(await bus.ping(), 2)})

        self.add("bus", check, timeout_seconds=1.0)
        self.add_dead_letters(lambda: bus.dead_letter_count(self.component))

    def add_dead_letters(self, count: Callable[[], Awaitable[int]]) -> None:
        """``dead_letters``: degraded while ``count()`` (unreplayed dead letters) is above 0."""

        async def check() -> CheckResult:
            n = await count()
            BUS_DEAD_LETTERS.labels(self.component).set(n)
            if n == 0:
                return CheckResult("ok", {"count": 0})
            hint = "pocketpay dlq list, then pocketpay dlq replay once fixed"
            return CheckResult("degraded", {"count": n, "error": f"{n} dead letters", "hint": hint})

        self.add("dead_letters", check, critical=False, timeout_seconds=1.0)

    def add(
        self,
        name: str,
        fn: CheckFn,
        *,
        critical: bool = True,
        timeout_seconds: float = 0.3,
        in_readiness: bool = True,
    ) -> None:
        self.checks.append(Check(name, fn, critical, timeout_seconds, in_readiness))

    async def _run(self, check: Check) -> CheckResult:
        start = time.perf_counter()
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
            async with asyncio.timeout(check.timeout_seconds):
                result = await check.fn()
        except TimeoutError:
            result = CheckResult("fail", {"error": f"timed out after {check.timeout_seconds}s"})
        except Exception as exc:
            result = CheckResult("fail", {"error": f"{type(exc).__name__}: {exc}"[:300]})
        result.latency_ms = round((time.perf_counter() - start) * 1000, 2)
        return result

    async def run(self, *, readiness: bool) -> dict[str, tuple[Check, CheckResult]]:
        checks = [c for c in self.checks if c.in_readiness or not readiness]
        results = await asyncio.gather(*(self._run(c) for c in checks))
        return {c.name: (c, r) for c, r in zip(checks, results, strict=True)}

    async def readiness(self) -> tuple[int, dict[str, Any]]:
        results = await self.run(readiness=True)
        status = "ready"
        for check, res in results.values():
            if res.status == "fail" and check.critical:
                status = "not_ready"
                break
            if res.status != "ok":
                status = "degraded"
        body = {
            "status": status,
            "component": self.component,
            "checks": {name: res.status for name, (_, res) in results.items()},
            "latency_ms": {name: res.latency_ms for name, (_, res) in results.items()},
            "details": {name: res.detail for name, (_, res) in results.items() if res.detail},
        }
        return (503 if status == "not_ready" else 200), body

    async def deps(self) -> dict[str, Any]:
        results = await self.run(readiness=False)
        return {
            "component": self.component,
            "uptime": format_uptime(time.monotonic() - self.started),
            "checks": {
                name: {
                    "status": res.status,
                    "critical": check.critical,
                    "latency_ms": res.latency_ms,
                    **res.detail,
                }
                for name, (check, res) in results.items()
            },
        }


def health_router(health: Health) -> APIRouter:
    router = APIRouter(tags=["health"])

    # /health and /live (liveness) and /ready (readiness): the paths other tools and seed
    # configurations probe, answered exactly as /healthz and /readyz, kept out of the schema.
    @router.get("/live", include_in_schema=False)
    @router.get("/health", include_in_schema=False)
    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "uptime": format_uptime(time.monotonic() - health.started)}

    @router.get("/ready", include_in_schema=False)
    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        code, body = await health.readiness()
        return JSONResponse(body, status_code=code)

    @router.get("/health/deps")
    async def deps() -> dict[str, Any]:
        return await health.deps()

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        data, ctype = render()
        return Response(data, media_type=ctype)

    return router
