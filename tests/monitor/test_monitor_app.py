"""The monitor app over ASGI against scripted components: /status, /alerts, the alert flow,
extra signals, the loop, metrics and the monitor's own health."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from monitor_support import FakeComponent, NoSleep, RecordingChannel, codec, fleet, token
from prometheus_client.parser import text_string_to_metric_families

from pocketpay.kit.clock import ManualClock
from pocketpay.monitor import create_app
from pocketpay.monitor.service import Monitor
from pocketpay.settings import MonitorSettings


@dataclass
class Rig:
    app: FastAPI
    client: httpx.AsyncClient
    comps: dict[str, FakeComponent]
    slack: RecordingChannel
    email: RecordingChannel
    clock: ManualClock
    transport: Any

    @property
    def monitor(self) -> Monitor:
        monitor: Monitor = self.app.state.monitor
        return monitor

    async def poll(self, times: int = 1) -> None:
        for _ in range(times):
            self.clock.advance(15)
            await self.monitor.poll_once()

    async def status(self) -> dict[str, Any]:
        resp = await self.client.get("/status")
        assert resp.status_code == 200
        body: dict[str, Any] = resp.json()
        return body


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {token('admin')}"}


@pytest.fixture
async def rig(clock: ManualClock) -> AsyncIterator[Rig]:
    comps = {n: FakeComponent(n) for n in ("gateway", "ledger", "payments")}
    comps["ledger"].backlog = {"pending": 2, "oldest_age_seconds": 1.5}
    comps["payments"].provider = {
        "status": "ok",
        "breaker": "closed",
        "latency_ms": 12.0,
        "calls_5m": 40,
        "errors_5m": 1,
        "error_rate_5m": 0.025,
    }
    targets, http, transport = fleet(*comps.values())
    settings = MonitorSettings(targets=targets, poll_timeout_seconds=2)
    slack, email = RecordingChannel("slack"), RecordingChannel("email")
    app = create_app(
        settings,
        clock,
        tokens=codec(),
        http=http,
        run_poller=False,
        channels=[slack, email],
        sleep=NoSleep(),
    )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mon.test")
    yield Rig(app, client, comps, slack, email, clock, transport)
    await client.aclose()
    await http.aclose()


async def test_status_before_any_poll_is_unknown(rig: Rig) -> None:
    body = await rig.status()
    assert body["status"] == "unknown"
    assert body["components"]["ledger"]["status"] == "unknown"
    assert body["last_poll_at"] is None


async def test_status_all_ok(rig: Rig) -> None:
    await rig.poll()
    body = await rig.status()
    assert body["status"] == "ok"
    ledger = body["components"]["ledger"]
    assert ledger["status"] == "ok" and ledger["readiness"] == "ready"
    assert ledger["checks"]["db"]["result"] == "ok"
    assert isinstance(ledger["checks"]["db"]["latency_ms"], float)
    assert ledger["since"] == ledger["last_poll_at"] == rig.clock.now().isoformat()
    assert ledger["consecutive_failures"] == 0 and ledger["last_error"] is None
    assert body["ledger_lag"]["pending"] == 2 and body["ledger_lag"]["status"] == "ok"
    assert body["psp"]["error_rate"] == 0.025 and body["psp"]["calls"] == 40
    assert body["psp"]["breaker"] == "closed" and body["psp"]["window_seconds"] == 300
    assert body["channels"]["slack"]["failed"] == 0
    assert body["alerts_open"] == 0
    html = rig.app.state.dashboard.panel()
    assert "1.5 s" in html and "2.5 %" in html and "1 / 40 calls" in html


async def test_worst_component_decides(rig: Rig) -> None:
    rig.comps["gateway"].degraded = True
    await rig.poll()
    assert (await rig.status())["status"] == "degraded"
    rig.comps["ledger"].ready = False
    await rig.poll()
    body = await rig.status()
    assert body["status"] == "down"
    ledger = body["components"]["ledger"]
    assert ledger["status"] == "down" and ledger["readiness"] == "not_ready"
    assert ledger["checks"]["db"]["result"] == "fail"
    assert "database is locked" in ledger["last_error"]
    assert ledger["consecutive_failures"] == 1


async def test_one_failed_poll_no_alert_three_one_alert_recovery_one_resolution(
    rig: Rig,
) -> None:
    rig.comps["payments"].ready = False
    await rig.poll()
    assert rig.slack.sent == [] and rig.email.sent == []
    await rig.poll(2)
    assert [(n.kind, n.component) for n in rig.slack.sent] == [("opened", "payments")]
    assert [n.kind for n in rig.email.sent] == ["opened"]
    await rig.poll(5)
    assert len(rig.slack.sent) == 1
    [alert] = (await rig.client.get("/alerts", headers=admin())).json()["alerts"]
    assert alert["component"] == "payments" and alert["rule"] == "not_ready"
    assert alert["resolved_at"] is None and sorted(alert["notified"]) == ["email", "slack"]
    assert (await rig.status())["alerts_open"] == 1

    rig.comps["payments"].ready = True
    await rig.poll(2)
    assert [n.kind for n in rig.slack.sent] == ["opened", "resolved"]
    assert [n.kind for n in rig.email.sent] == ["opened", "resolved"]
    body = (await rig.client.get("/alerts", headers=admin())).json()
    assert body["open"] == 0 and body["alerts"][0]["resolved_at"] is not None


async def test_unreachable_component_is_down(rig: Rig) -> None:
    rig.transport.down.add("gateway.test")
    await rig.poll(3)
    gateway = (await rig.status())["components"]["gateway"]
    assert gateway["status"] == "down" and gateway["readiness"] == "unreachable"
    assert "ConnectError" in gateway["last_error"]
    assert [n.component for n in rig.slack.sent] == ["gateway"]


async def test_a_hanging_component_times_out(clock: ManualClock) -> None:
    slow = FakeComponent("ledger", hang=True)
    targets, http, _ = fleet(slow)
    settings = MonitorSettings(targets=targets, poll_timeout_seconds=0.05)
    app = create_app(settings, clock, tokens=codec(), http=http, run_poller=False, channels=[])
    await app.state.monitor.poll_once()
    state = app.state.monitor.status()["components"]["ledger"]
    assert state["readiness"] == "unreachable" and state["last_error"] == "timed out after 0.05s"
    slow.release.set()
    await http.aclose()


async def test_ledger_lag_alert_and_resolution(rig: Rig) -> None:
    rig.comps["ledger"].backlog = {"pending": 120, "oldest_age_seconds": 95.0}
    await rig.poll()
    assert [(n.kind, n.rule) for n in rig.slack.sent] == [("opened", "ledger_lag")]
    assert "95s old" in rig.slack.sent[0].message
    body = await rig.status()
    assert body["ledger_lag"]["status"] == "high" and body["status"] == "degraded"
    rig.comps["ledger"].backlog = {"pending": 0, "oldest_age_seconds": 0.0}
    await rig.poll(2)
    assert [n.kind for n in rig.slack.sent] == ["opened", "resolved"]


async def test_psp_error_rate_alert_and_resolution(rig: Rig) -> None:
    provider = rig.comps["payments"].provider
    assert provider is not None
    provider.update(calls_5m=3, errors_5m=3)  # too few calls to judge
    await rig.poll()
    assert rig.slack.sent == []
    provider.update(calls_5m=20, errors_5m=7, breaker="open")
    await rig.poll()
    assert [(n.kind, n.rule) for n in rig.slack.sent] == [("opened", "psp_error_rate")]
    assert "35% of 20 PSP calls failed" in rig.slack.sent[0].message
    assert (await rig.status())["psp"]["status"] == "high"
    provider.update(calls_5m=20, errors_5m=1, breaker="closed")
    await rig.poll(2)
    assert [n.kind for n in rig.slack.sent] == ["opened", "resolved"]


async def test_missing_extra_signals_are_tolerated(rig: Rig) -> None:
    rig.comps["ledger"].backlog = None
    rig.comps["payments"].provider = None
    await rig.poll()
    body = await rig.status()
    assert body["status"] == "ok"
    assert body["ledger_lag"] is None and body["psp"] is None
    assert body["components"]["ledger"]["signal_error"] is None


async def test_malformed_signal_is_reported_not_fatal(rig: Rig) -> None:
    rig.comps["ledger"].backlog = {"pending": "many"}
    await rig.poll()
    ledger = (await rig.status())["components"]["ledger"]
    assert ledger["status"] == "ok" and "malformed /health/backlog" in ledger["signal_error"]


async def test_flapping_component_sends_one_notice(rig: Rig) -> None:
    for i in range(12):
        rig.comps["gateway"].ready = i % 2 == 1
        await rig.poll()
    assert [(n.kind, n.rule) for n in rig.slack.sent] == [("opened", "not_ready.flapping")]
    alerts = (await rig.client.get("/alerts?state=open", headers=admin())).json()["alerts"]
    assert [a["rule"] for a in alerts] == ["not_ready.flapping"]


async def test_failed_channel_shows_in_status_and_other_channel_still_gets_it(
    rig: Rig,
) -> None:
    rig.slack.fail = True
    rig.comps["ledger"].ready = False
    await rig.poll(3)
    assert [n.kind for n in rig.email.sent] == ["opened"]
    body = await rig.status()
    assert body["channels"]["slack"]["failing"] is True
    assert body["channels"]["slack"]["failed"] == 1
    assert body["channels"]["slack"]["attempts"] == 4  # channel_retries=3
    assert "slack is down" in body["channels"]["slack"]["last_error"]
    [alert] = (await rig.client.get("/alerts", headers=admin())).json()["alerts"]
    assert alert["notified"] == ["email"]
    assert {(d["channel"], d["ok"]) for d in alert["deliveries"]} == {
        ("slack", False),
        ("email", True),
    }
    ready = (await rig.client.get("/readyz")).json()
    assert ready["status"] == "degraded" and ready["checks"]["channels"] == "degraded"
    html = rig.app.state.dashboard.panel()
    assert 'data-signal="channels"' in html and "slack is down" in html


async def test_reminder_every_half_hour(rig: Rig) -> None:
    rig.comps["ledger"].ready = False
    await rig.poll(3)
    rig.clock.advance(1800)
    await rig.poll()
    assert [n.kind for n in rig.slack.sent] == ["opened", "reminder"]
    [alert] = (await rig.client.get("/alerts", headers=admin())).json()["alerts"]
    assert alert["reminders"] == 1


async def test_alerts_filters(rig: Rig) -> None:
    rig.comps["ledger"].ready = False
    rig.comps["gateway"].ready = False
    await rig.poll(3)
    rig.comps["gateway"].ready = True
    await rig.poll(2)
    get = rig.client.get
    assert len((await get("/alerts", headers=admin())).json()["alerts"]) == 2
    opened = (await get("/alerts?state=open", headers=admin())).json()["alerts"]
    assert [a["component"] for a in opened] == ["ledger"]
    resolved = (await get("/alerts?state=resolved", headers=admin())).json()["alerts"]
    assert [a["component"] for a in resolved] == ["gateway"]
    only = (await get("/alerts?component=gateway", headers=admin())).json()["alerts"]
    assert [a["component"] for a in only] == ["gateway"]
    assert (await get("/alerts?limit=0", headers=admin())).status_code == 422


async def test_monitor_health_and_metrics(rig: Rig) -> None:
    assert (await rig.client.get("/healthz")).json()["status"] == "ok"
    before = (await rig.client.get("/readyz")).json()
    assert before["status"] == "degraded" and before["checks"]["poller"] == "degraded"
    rig.comps["gateway"].ready = False
    await rig.poll(3)
    ready = await rig.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["poller"] == "ok"
    rig.clock.advance(3 * 15 + 1)  # the poller stalls
    assert (await rig.client.get("/readyz")).status_code == 503

    text = (await rig.client.get("/metrics")).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("pocketpay_component_ready", (("component", "gateway"),))] == 0
    assert samples[("pocketpay_component_ready", (("component", "ledger"),))] == 1
    assert samples[("pocketpay_alerts_open", ())] == 1


async def test_the_loop_polls_every_interval_without_overlap(clock: ManualClock) -> None:
    comp = FakeComponent("ledger")
    targets, http, _ = fleet(comp)
    app = create_app(
        MonitorSettings(targets=targets), clock, tokens=codec(), http=http, channels=[]
    )
    monitor: Monitor = app.state.monitor
    async with app.router.lifespan_context(app):
        assert monitor.running
        for _ in range(10_000):  # ManualClock.sleep only yields: no real waiting
            if monitor.polls >= 5:
                break
            await monitor.wait_for_update(monitor.version, 1.0)
        assert monitor.polls >= 5
    assert not monitor.running
    assert comp.max_in_flight == 1
    assert clock.monotonic() >= 4 * 15
    await http.aclose()
