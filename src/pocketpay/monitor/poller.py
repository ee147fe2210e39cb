"""One poll of every target: ``GET /readyz`` (plus the ledger backlog or the PSP statistics),
all targets concurrently, each under its own timeout.

The poller only observes and normalizes; deciding what an observation means (alerts, overall
status) is the job of ``rules`` and ``service``. A target that cannot be reached, times out or
answers something that is not a readiness document is reported, never raised.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import httpx

from pocketpay.kit.clock import Clock
from pocketpay.monitor.config import BACKLOG_PATH, PROVIDER_PATH, READY_PATH, Target

Readiness = Literal["ready", "degraded", "not_ready", "unreachable"]
_READINESS: tuple[str, ...] = ("ready", "degraded", "not_ready")
_MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class CheckView:
    result: str  # "ok" | "degraded" | "fail" as the component reported it
    latency_ms: float | None


@dataclass(frozen=True)
class Backlog:
    pending: int
    oldest_age_seconds: float


@dataclass(frozen=True)
class ProviderStats:
    status: str
    breaker: str
    latency_ms: float
    calls_5m: int
    errors_5m: int
    error_rate_5m: float


@dataclass(frozen=True)
class PollResult:
    component: str
    readiness: Readiness
    polled_at: datetime
    latency_ms: float
    checks: dict[str, CheckView] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    backlog: Backlog | None = None
    provider: ProviderStats | None = None
    signal_error: str | None = None

    @property
    def is_ready(self) -> bool:
        """Degraded still serves traffic: only not_ready and unreachable count as down."""
        return self.readiness in ("ready", "degraded")


@dataclass(frozen=True)
class _Ready:
    readiness: Readiness
    checks: dict[str, CheckView]
    details: dict[str, Any]
    error: str | None


Signal = Backlog | ProviderStats


def _short(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


def _describe(exc: BaseException, timeout_seconds: float) -> str:
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return f"timed out after {timeout_seconds:g}s"
    return _short(f"{type(exc).__name__}: {exc}".rstrip(": "))


def _parse_checks(body: dict[str, Any]) -> dict[str, CheckView]:
    checks = body.get("checks")
    latencies = body.get("latency_ms")
    if not isinstance(checks, dict):
        return {}
    lat = latencies if isinstance(latencies, dict) else {}
    out: dict[str, CheckView] = {}
    for name, result in checks.items():
        value = lat.get(name)
        latency = float(value) if isinstance(value, int | float) else None
        out[str(name)] = CheckView(str(result), latency)
    return out


def _failing_summary(checks: dict[str, CheckView], details: dict[str, Any]) -> str | None:
    bad = []
    for name, view in checks.items():
        if view.result == "ok":
            continue
        detail = details.get(name)
        reason = detail.get("error") if isinstance(detail, dict) else None
        bad.append(f"{name}: {view.result}" + (f" ({reason})" if reason else ""))
    return _short("; ".join(bad)) if bad else None


def parse_readiness(status_code: int, body: object) -> _Ready:
    """A readiness answer as the kit's ``Health`` produces it, or the reason it is not one."""
    if not isinstance(body, dict) or body.get("status") not in _READINESS:
        return _Ready("not_ready", {}, {}, f"HTTP {status_code}: not a readiness document")
    checks = _parse_checks(body)
    details = body.get("details") if isinstance(body.get("details"), dict) else {}
    assert isinstance(details, dict)
    state: Readiness = body["status"]
    if status_code == 503 or status_code >= 500:
        state = "not_ready"
    elif status_code != 200:
        return _Ready("not_ready", checks, details, f"HTTP {status_code}")
    error = _failing_summary(checks, details) if state != "ready" else None
    if state == "not_ready" and error is None:
        error = f"HTTP {status_code}: not ready"
    return _Ready(state, checks, details, error)


def parse_signal(path: str, body: object) -> Signal:
    """The ledger backlog or the PSP statistics; raises ValueError on a malformed document."""
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    try:
        if path == BACKLOG_PATH:
            return Backlog(int(body["pending"]), float(body["oldest_age_seconds"]))
        assert path == PROVIDER_PATH, path
        return ProviderStats(
            status=str(body.get("status", "ok")),
            breaker=str(body.get("breaker", "closed")),
            latency_ms=float(body.get("latency_ms", 0.0)),
            calls_5m=int(body["calls_5m"]),
            errors_5m=int(body["errors_5m"]),
            error_rate_5m=float(body.get("error_rate_5m", 0.0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed {path}: {exc}") from exc


class Poller:
    def __init__(
        self,
        targets: list[Target],
        http: httpx.AsyncClient,
        clock: Clock,
        *,
        timeout_seconds: float,
    ) -> None:
        assert timeout_seconds > 0
        self.targets = targets
        self._http = http
        self._clock = clock
        self.timeout_seconds = timeout_seconds

    async def poll_all(self) -> list[PollResult]:
        """Every target at once; the slowest is bounded by the per-target timeout."""
        return list(await asyncio.gather(*(self.poll(t) for t in self.targets)))

    async def poll(self, target: Target) -> PollResult:
        polled_at = self._clock.now()
        started = time.perf_counter()  # measurement only, not logic
        ready, signal = await asyncio.gather(self._ready(target), self._signal(target))
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        sig, sig_error = signal
        return PollResult(
            component=target.name,
            readiness=ready.readiness,
            polled_at=polled_at,
            latency_ms=latency_ms,
            checks=ready.checks,
            details=ready.details,
            error=ready.error,
            backlog=sig if isinstance(sig, Backlog) else None,
            provider=sig if isinstance(sig, ProviderStats) else None,
            signal_error=sig_error,
        )

    async def _get(self, url: str) -> tuple[int, object]:
        async with asyncio.timeout(self.timeout_seconds):
            resp = await self._http.get(url, timeout=self.timeout_seconds)
            try:
                return resp.status_code, resp.json()
            except ValueError:
                return resp.status_code, None

    async def _ready(self, target: Target) -> _Ready:
        try:
            status_code, body = await self._get(target.url(READY_PATH))
        except (TimeoutError, httpx.HTTPError, OSError) as exc:
            return _Ready("unreachable", {}, {}, _describe(exc, self.timeout_seconds))
        return parse_readiness(status_code, body)

    async def _signal(self, target: Target) -> tuple[Signal | None, str | None]:
        """The extra signal, if this target has one; a missing route (404) is no error."""
        path = target.extra_path
        if path is None:
            return None, None
        try:
            status_code, body = await self._get(target.url(path))
        except (TimeoutError, httpx.HTTPError, OSError) as exc:
            return None, f"{path}: {_describe(exc, self.timeout_seconds)}"
        if status_code == 404:
            return None, None
        if status_code != 200:
            return None, f"{path}: HTTP {status_code}"
        try:
            return parse_signal(path, body), None
        except ValueError as exc:
            return None, _short(str(exc))
