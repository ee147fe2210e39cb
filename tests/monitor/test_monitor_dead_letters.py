"""Any dead letter is an alert: the component's ``dead_letters`` readiness check (kit.health)
turns degraded with the count, the monitor opens one ``dead_letters`` alert and resolves it
once the dead letters are replayed. The readiness document goes through the same parsing as a
real poll."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.bus import (
    EmbeddedBus,
    Envelope,
    dead_letter,
    list_dead_letters,
    metadata,
    replay_dead_letter,
)
from pocketpay.kit.clock import SystemClock
from pocketpay.kit.db import create_engine
from pocketpay.kit.health import Health
from pocketpay.monitor.poller import PollResult, parse_readiness
from pocketpay.monitor.rules import DEAD_LETTERS, AlertRules, Thresholds
from pocketpay.monitor.service import dead_letters_observation

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def poll(health: Health, at: datetime) -> PollResult:
    code, body = await health.readiness()
    ready = parse_readiness(code, body)
    return PollResult(
        health.component, ready.readiness, at, 1.0, ready.checks, ready.details, ready.error
    )


async def test_dead_letters_open_one_alert_that_resolves_after_replay(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    bus = EmbeddedBus(engine, SystemClock())
    health = Health("ledger")
    health.add_bus(bus)
    rules = AlertRules(Thresholds(fail_threshold=3, recover_threshold=2))
    try:
        at = T0
        first = await poll(health, at)
        assert first.readiness == "ready" and first.checks[DEAD_LETTERS].result == "ok"
        assert rules.evaluate([dead_letters_observation(first)], at) == []

        env = Envelope("evt_1", "payments.payment.captured", T0, {})
        await dead_letter(engine, "ledger", env, "boom", 5, T0)
        await dead_letter(engine, "payments-processor", env, "boom", 5, T0)  # not the ledger's
        notices = []
        for _ in range(4):
            at += timedelta(seconds=15)
            result = await poll(health, at)
            assert result.readiness == "degraded" and result.is_ready  # serving, but alerting
            notices += rules.evaluate([dead_letters_observation(result)], at)
        assert [(n.kind, n.component, n.rule) for n in notices] == [
            ("opened", "ledger", DEAD_LETTERS)
        ]
        assert "1 unreplayed dead letters" in notices[0].message
        gauge = REGISTRY.get_sample_value("pocketpay_bus_dead_letters", {"component": "ledger"})
        assert gauge == 1

        [row] = [r for r in await _rows(engine) if r.durable == "ledger"]
        assert await replay_dead_letter(engine, bus, row.id, at) is True
        notices = []
        for _ in range(2):
            at += timedelta(seconds=15)
            notices += rules.evaluate([dead_letters_observation(await poll(health, at))], at)
        assert [(n.kind, n.rule) for n in notices] == [("resolved", DEAD_LETTERS)]
        assert REGISTRY.get_sample_value("pocketpay_bus_dead_letters", {"component": "ledger"}) == 0
    finally:
        await engine.dispose()


async def _rows(engine: AsyncEngine) -> list[Any]:
    return await list_dead_letters(engine)
