"""Alert history: bounded in memory, written through to SQLite, resumed after a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from monitor_support import FakeComponent, RecordingChannel, codec, fleet
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.clock import ManualClock
from pocketpay.kit.db import create_engine
from pocketpay.monitor import create_app
from pocketpay.monitor.models import metadata
from pocketpay.monitor.rules import Notice
from pocketpay.monitor.store import AlertStore, Delivery, SqlAlertPersistence
from pocketpay.settings import MonitorSettings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def notice(kind: str, at: datetime, component: str = "ledger") -> Notice:
    return Notice(kind, component, "not_ready", at, T0, f"{component} {kind}")  # type: ignore[arg-type]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'monitor.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


async def test_memory_is_bounded_and_newest_first() -> None:
    store = AlertStore(capacity=3)
    for i in range(5):
        at = T0 + timedelta(minutes=i)
        await store.apply(notice("opened", at, f"c{i}"))
    recent = store.recent(10)
    assert [r.component for r in recent] == ["c4", "c3", "c2"]
    assert len(store.open_alerts()) == 5  # open alerts are never forgotten
    assert store.get(recent[0].id) is recent[0]


async def test_open_reminder_resolve_one_record() -> None:
    store = AlertStore()
    a = await store.apply(notice("opened", T0))
    b = await store.apply(notice("reminder", T0 + timedelta(minutes=30)))
    c = await store.apply(notice("resolved", T0 + timedelta(minutes=40)))
    assert a is b is c
    assert c.reminders == 1 and c.resolved_at == T0 + timedelta(minutes=40)
    assert c.resolution == "ledger resolved" and c.message == "ledger opened"
    assert store.open_alerts() == []


async def test_written_through_and_loaded_back(engine: AsyncEngine) -> None:
    store = AlertStore(persistence=SqlAlertPersistence(engine))
    record = await store.apply(notice("opened", T0))
    await store.record_delivery(record, Delivery("opened", "email", True, T0))
    await store.record_delivery(record, Delivery("opened", "slack", False, T0, "HTTP 503"))
    resolved = await store.apply(notice("opened", T0, "gateway"))
    await store.apply(notice("resolved", T0 + timedelta(minutes=1), "gateway"))

    again = AlertStore(persistence=SqlAlertPersistence(engine))
    still_open = await again.load()
    assert [r.id for r in still_open] == [record.id]
    loaded = again.get(record.id)
    assert loaded is not None and loaded.notified == ["email"]
    assert loaded.deliveries[1].error == "HTTP 503" and loaded.opened_at == T0
    gone = again.get(resolved.id)
    assert gone is not None and gone.resolved_at == T0 + timedelta(minutes=1)


async def test_a_failing_database_does_not_stop_alerting() -> None:
    class Broken:
        async def save(self, record: object) -> None:
            raise OSError("disk full")

        async def load(self, limit: int) -> list[object]:
            return []

    store = AlertStore(persistence=Broken())  # type: ignore[arg-type]
    await store.apply(notice("opened", T0))
    assert store.persistence_failures == 1 and len(store.open_alerts()) == 1


async def test_an_alert_open_before_a_restart_resolves_after_it(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    comp = FakeComponent("ledger", ready=False)
    targets, http, _ = fleet(comp)
    settings = MonitorSettings(targets=targets)
    first = RecordingChannel("slack")
    app = create_app(
        settings,
        clock,
        tokens=codec(),
        http=http,
        run_poller=False,
        channels=[first],
        engine=engine,
    )
    for _ in range(3):
        await app.state.monitor.poll_once()
    assert [n.kind for n in first.sent] == ["opened"]

    comp.ready = True
    second = RecordingChannel("slack")
    app = create_app(
        settings,
        clock,
        tokens=codec(),
        http=http,
        run_poller=False,
        channels=[second],
        engine=engine,
    )
    async with app.router.lifespan_context(app):
        assert app.state.monitor.status()["alerts_open"] == 1
        await app.state.monitor.poll_once()
        await app.state.monitor.poll_once()
    assert [n.kind for n in second.sent] == ["resolved"]
    assert app.state.monitor.store.open_alerts() == []
    await http.aclose()
