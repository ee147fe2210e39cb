"""PSP attempts the reconciler gave up on are an alert: payments' ``stuck_attempts`` readiness
check turns degraded with the count, the monitor opens one ``stuck_attempts`` alert and
resolves it once none is left. Like the dead-letters alert: any stuck attempt alerts at once,
and the alert shows in ``/status``, ``/alerts`` and the dashboard like the others.

The readiness check here answers what payments' check answers (``payments.app``:
``{"stuck": n}``, degraded when n > 0); tests/api/test_stuck.py feeds the real one through the
same observation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from monitor_support import RoutingTransport, codec, token

from pocketpay.kit.clock import ManualClock
from pocketpay.kit.health import CheckResult, Health
from pocketpay.monitor import create_app
from pocketpay.monitor.auth import COOKIE
from pocketpay.monitor.poller import PollResult, parse_readiness
from pocketpay.monitor.rules import STUCK_ATTEMPTS, AlertRules, Thresholds
from pocketpay.monitor.service import Monitor, stuck_attempts_observation
from pocketpay.settings import MonitorSettings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class ScriptedPayments:
    """A payments readiness whose number of stuck attempts a test sets."""

    def __init__(self) -> None:
        self.stuck = 0
        self.health = Health("payments")
        self.health.add("db", self._ok)
        self.health.add("stuck_attempts", self._stuck, critical=False, timeout_seconds=1.0)

    async def _ok(self) -> CheckResult:
        return CheckResult("ok")

    async def _stuck(self) -> CheckResult:
        return CheckResult("degraded" if self.stuck else "ok", {"stuck": self.stuck})

    def app(self) -> FastAPI:
        router = APIRouter(prefix="/components/payments")

        @router.get("/readyz")
        async def readyz() -> JSONResponse:
            code, body = await self.health.readiness()
            return JSONResponse(body, status_code=code)

        app = FastAPI()
        app.include_router(router)
        return app


async def poll(health: Health, at: datetime) -> PollResult:
    code, body = await health.readiness()
    ready = parse_readiness(code, body)
    return PollResult(
        health.component, ready.readiness, at, 1.0, ready.checks, ready.details, ready.error
    )


async def test_stuck_attempts_open_one_alert_that_resolves() -> None:
    payments = ScriptedPayments()
    rules = AlertRules(Thresholds(fail_threshold=3, recover_threshold=2))
    at = T0
    first = await poll(payments.health, at)
    assert first.readiness == "ready"
    assert stuck_attempts_observation(first).bad is False
    assert rules.evaluate([stuck_attempts_observation(first)], at) == []

    payments.stuck = 2
    notices = []
    for _ in range(4):
        at += timedelta(seconds=15)
        result = await poll(payments.health, at)
        assert result.readiness == "degraded" and result.is_ready  # serving, but alerting
        notices += rules.evaluate([stuck_attempts_observation(result)], at)
    assert [(n.kind, n.component, n.rule) for n in notices] == [
        ("opened", "payments", STUCK_ATTEMPTS)
    ]  # at once (no fail_threshold debounce), and once
    assert "2 stuck PSP attempts" in notices[0].message
    assert "/api/v1/admin/stuck" in notices[0].message

    payments.stuck = 0
    notices = []
    for _ in range(2):
        at += timedelta(seconds=15)
        notices += rules.evaluate([stuck_attempts_observation(await poll(payments.health, at))], at)
    assert [(n.kind, n.rule) for n in notices] == [("resolved", STUCK_ATTEMPTS)]
    assert "no stuck PSP attempts left" in notices[0].message


def test_no_verdict_without_the_check() -> None:
    """A component without the check (every one but payments), or whose check failed, says
    nothing about stuck attempts: no alert opens, none resolves."""
    checks = parse_readiness(200, {"status": "ready", "checks": {"db": "ok"}})
    bare = PollResult("ledger", "ready", T0, 1.0, checks.checks, checks.details)
    assert stuck_attempts_observation(bare).bad is None
    failed = parse_readiness(
        200,
        {
            "status": "degraded",
            "checks": {"db": "ok", "stuck_attempts": "fail"},
            "details": {"stuck_attempts": {"error": "timed out"}},
        },
    )
    broken = PollResult("payments", "degraded", T0, 1.0, failed.checks, failed.details)
    assert stuck_attempts_observation(broken).bad is None


@pytest.fixture
async def monitor_app(clock: ManualClock) -> AsyncIterator[tuple[FastAPI, ScriptedPayments]]:
    payments = ScriptedPayments()
    http = httpx.AsyncClient(transport=RoutingTransport({"payments.test": payments.app()}))
    app = create_app(
        MonitorSettings(
            targets={"payments": "http://payments.test/components/payments"},
            fail_threshold=3,
            recover_threshold=2,
        ),
        clock,
        tokens=codec(),
        http=http,
        run_poller=False,
        channels=[],
    )
    yield app, payments
    await http.aclose()


async def test_alert_shows_in_status_alerts_and_dashboard(
    monitor_app: tuple[FastAPI, ScriptedPayments], clock: ManualClock
) -> None:
    app, payments = monitor_app
    monitor: Monitor = app.state.monitor
    admin = {"Authorization": f"Bearer {token('admin')}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mon.test") as client:
        payments.stuck = 1
        notices = await monitor.poll_once()
        assert [(n.kind, n.rule) for n in notices] == [("opened", STUCK_ATTEMPTS)]

        status = (await client.get("/status")).json()
        assert status["alerts_open"] == 1
        assert status["status"] == "degraded"
        pay = status["components"]["payments"]
        assert pay["status"] == "degraded"
        assert pay["checks"]["stuck_attempts"]["result"] == "degraded"

        alerts = (await client.get("/alerts", params={"state": "open"}, headers=admin)).json()
        assert [(a["component"], a["rule"]) for a in alerts["alerts"]] == [
            ("payments", STUCK_ATTEMPTS)
        ]
        assert "1 stuck PSP attempts" in alerts["alerts"][0]["message"]

        client.cookies.set(COOKIE, token("admin"))
        html = (await client.get("/admin/health")).text
        assert "Stuck PSP attempts" in html and "1 alert open" in html

        payments.stuck = 0
        notices = []
        for _ in range(2):
            clock.advance(15)
            notices += await monitor.poll_once()
        assert [(n.kind, n.rule) for n in notices] == [("resolved", STUCK_ATTEMPTS)]
        assert (await client.get("/status")).json()["alerts_open"] == 0
        [record] = (await client.get("/alerts", headers=admin)).json()["alerts"]
        assert record["rule"] == STUCK_ATTEMPTS and record["resolved_at"] is not None
