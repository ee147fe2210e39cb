"""What the monitor knows about each component, and the ``/status`` document built from it.

Component status is what the last poll said (``ok | degraded | down``, ``unknown`` before the
first one); alerts are debounced separately by ``rules``. The overall status is the worst
component's; a ledger lag or PSP error rate over its threshold makes an ``ok`` overall
``degraded``, since the platform is then working, but not well.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pocketpay.monitor.poller import Backlog, CheckView, PollResult, ProviderStats
from pocketpay.settings import MonitorSettings

ComponentStatus = Literal["unknown", "ok", "degraded", "down"]
_FROM_READINESS: dict[str, ComponentStatus] = {
    "ready": "ok",
    "degraded": "degraded",
    "not_ready": "down",
    "unreachable": "down",
}
_RANK: dict[str, int] = {"ok": 0, "degraded": 1, "down": 2}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass
class ComponentState:
    name: str
    base_url: str
    status: ComponentStatus = "unknown"
    readiness: str | None = None
    since: datetime | None = None
    last_poll_at: datetime | None = None
    last_ok_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    consecutive_failures: int = 0
    latency_ms: float | None = None
    checks: dict[str, CheckView] = field(default_factory=dict)
    signal_error: str | None = None

    def update(self, result: PollResult) -> None:
        status = _FROM_READINESS[result.readiness]
        if status != self.status:
            self.since = result.polled_at
        self.status, self.readiness = status, result.readiness
        self.last_poll_at, self.latency_ms = result.polled_at, result.latency_ms
        self.checks = dict(result.checks)
        self.signal_error = result.signal_error
        self.consecutive_failures = 0 if result.is_ready else self.consecutive_failures + 1
        if result.is_ready:
            self.last_ok_at = result.polled_at
        if result.error:
            self.last_error, self.last_error_at = result.error, result.polled_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "readiness": self.readiness,
            "base_url": self.base_url,
            "since": _iso(self.since),
            "last_poll_at": _iso(self.last_poll_at),
            "last_ok_at": _iso(self.last_ok_at),
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
            "consecutive_failures": self.consecutive_failures,
            "latency_ms": self.latency_ms,
            "checks": {
                name: {"result": c.result, "latency_ms": c.latency_ms}
                for name, c in sorted(self.checks.items())
            },
            "signal_error": self.signal_error,
        }


@dataclass
class Signals:
    """The last known ledger backlog and PSP statistics, kept when a later poll misses them."""

    backlog: Backlog | None = None
    backlog_at: datetime | None = None
    provider: ProviderStats | None = None
    provider_at: datetime | None = None

    def update(self, result: PollResult) -> None:
        if result.backlog is not None:
            self.backlog, self.backlog_at = result.backlog, result.polled_at
        if result.provider is not None:
            self.provider, self.provider_at = result.provider, result.polled_at


def psp_error_rate(stats: ProviderStats) -> float:
    return stats.errors_5m / stats.calls_5m if stats.calls_5m > 0 else 0.0


def lag_high(backlog: Backlog, settings: MonitorSettings) -> bool:
    return backlog.oldest_age_seconds > settings.lag_threshold_seconds


def psp_high(stats: ProviderStats, settings: MonitorSettings) -> bool:
    return (
        stats.calls_5m >= settings.psp_min_calls
        and psp_error_rate(stats) > settings.psp_error_rate_threshold
    )


def lag_document(signals: Signals, settings: MonitorSettings) -> dict[str, Any] | None:
    b = signals.backlog
    if b is None:
        return None
    return {
        "status": "high" if lag_high(b, settings) else "ok",
        "pending": b.pending,
        "oldest_age_seconds": b.oldest_age_seconds,
        "threshold_seconds": settings.lag_threshold_seconds,
        "observed_at": _iso(signals.backlog_at),
    }


def psp_document(signals: Signals, settings: MonitorSettings) -> dict[str, Any] | None:
    p = signals.provider
    if p is None:
        return None
    return {
        "status": "high" if psp_high(p, settings) else "ok",
        "error_rate": round(psp_error_rate(p), 4),
        "calls": p.calls_5m,
        "errors": p.errors_5m,
        "threshold": settings.psp_error_rate_threshold,
        "min_calls": settings.psp_min_calls,
        "window_seconds": settings.psp_error_window_seconds,
        "provider_status": p.status,
        "breaker": p.breaker,
        "latency_ms": p.latency_ms,
        "observed_at": _iso(signals.provider_at),
    }


def overall_status(components: list[ComponentState], signals_high: bool) -> str:
    known = [c.status for c in components if c.status != "unknown"]
    if not known:
        return "unknown"
    worst = max(known, key=lambda s: _RANK[s])
    return "degraded" if worst == "ok" and signals_high else worst
