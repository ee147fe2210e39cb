"""Alert history: the last ``capacity`` alerts in memory (a bounded deque), written through to
an optional persistence (the ``monitor_alerts`` table on an injected async engine).

Memory is authoritative while the process runs; a persistence failure is logged and counted,
never allowed to stop alerting.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import structlog
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.clock import aware
from pocketpay.kit.ids import new_id
from pocketpay.monitor.models import alerts
from pocketpay.monitor.rules import Notice

log = structlog.get_logger(__name__)

MAX_DELIVERIES_KEPT = 20


@dataclass(frozen=True)
class Delivery:
    kind: str
    channel: str
    ok: bool
    at: datetime
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "channel": self.channel,
            "ok": self.ok,
            "at": self.at.isoformat(),
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Delivery:
        return cls(
            str(data["kind"]),
            str(data["channel"]),
            bool(data["ok"]),
            datetime.fromisoformat(str(data["at"])),
            data.get("error"),
        )


@dataclass
class AlertRecord:
    id: str
    component: str
    rule: str
    opened_at: datetime
    message: str
    last_message: str
    resolved_at: datetime | None = None
    resolution: str | None = None
    notified: list[str] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    reminders: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return self.component, self.rule

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "component": self.component,
            "rule": self.rule,
            "opened_at": self.opened_at.isoformat(),
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
            "message": self.message,
            "resolution": self.resolution,
            "last_message": self.last_message,
            "notified": list(self.notified),
            "deliveries": [d.to_dict() for d in self.deliveries],
            "reminders": self.reminders,
        }


class AlertPersistence(Protocol):
    async def save(self, record: AlertRecord) -> None: ...

    async def load(self, limit: int) -> list[AlertRecord]: ...


class AlertStore:
    def __init__(self, *, capacity: int = 500, persistence: AlertPersistence | None = None) -> None:
        assert capacity > 0
        self._recent: deque[AlertRecord] = deque(maxlen=capacity)
        self._open: dict[tuple[str, str], AlertRecord] = {}
        self._by_id: dict[str, AlertRecord] = {}
        self._persistence = persistence
        self.persistence_failures = 0

    @property
    def capacity(self) -> int:
        return self._recent.maxlen or 0

    async def load(self) -> list[AlertRecord]:
        """Fill memory from the persistence; returns the alerts still open."""
        if self._persistence is None:
            return []
        records = await self._persistence.load(self.capacity)
        for record in sorted(records, key=lambda r: r.opened_at):
            self._remember(record)
        return list(self._open.values())

    async def apply(self, notice: Notice) -> AlertRecord:
        """The record a notice belongs to, opened, updated or resolved by it."""
        record = self._open.get(notice.key)
        if record is None:
            record = self._new(notice)
        elif notice.kind == "reminder":
            record.reminders += 1
        if notice.kind == "resolved":
            record.resolved_at, record.resolution = notice.at, notice.message
            self._open.pop(record.key, None)
        record.last_message = notice.message
        await self._save(record)
        return record

    async def record_delivery(self, record: AlertRecord, delivery: Delivery) -> None:
        record.deliveries = [*record.deliveries, delivery][-MAX_DELIVERIES_KEPT:]
        if delivery.ok and delivery.kind == "opened" and delivery.channel not in record.notified:
            record.notified.append(delivery.channel)
        await self._save(record)

    def recent(self, limit: int = 50) -> list[AlertRecord]:
        """Newest first."""
        return list(reversed(self._recent))[: max(0, limit)]

    def open_alerts(self) -> list[AlertRecord]:
        return sorted(self._open.values(), key=lambda r: r.opened_at)

    def get(self, alert_id: str) -> AlertRecord | None:
        return self._by_id.get(alert_id)

    def _new(self, notice: Notice) -> AlertRecord:
        record = AlertRecord(
            new_id("alr"),
            notice.component,
            notice.rule,
            notice.since,
            notice.message,
            notice.message,
        )
        self._remember(record)
        return record

    def _remember(self, record: AlertRecord) -> None:
        if self._recent.maxlen is not None and len(self._recent) == self._recent.maxlen:
            self._by_id.pop(self._recent[0].id, None)
        self._recent.append(record)
        self._by_id[record.id] = record
        if record.is_open:
            self._open[record.key] = record

    async def _save(self, record: AlertRecord) -> None:
        if self._persistence is None:
            return
        try:
            await self._persistence.save(record)
        except Exception as exc:  # memory stays authoritative; alerting must go on
            self.persistence_failures += 1
            log.warning("monitor.alert_store.save_failed", alert_id=record.id, error=str(exc))


class SqlAlertPersistence:
    """Write-through to ``monitor_alerts``. Each save is its own unit of work: the monitor's
    poll job is the entrypoint that owns it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def save(self, record: AlertRecord) -> None:
        row = _to_row(record)
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(alerts).where(alerts.c.id == record.id).values(**row)
            )
            if result.rowcount == 0:
                await conn.execute(insert(alerts).values(id=record.id, **row))

    async def load(self, limit: int) -> list[AlertRecord]:
        query = select(alerts).order_by(alerts.c.opened_at.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_from_row(dict(r)) for r in rows]


def _to_row(record: AlertRecord) -> dict[str, Any]:
    data = record.to_dict()
    return {
        "component": record.component,
        "rule": record.rule,
        "opened_at": record.opened_at,
        "resolved_at": record.resolved_at,
        "message": record.message,
        "resolution": record.resolution,
        "last_message": record.last_message,
        "notified": data["notified"],
        "deliveries": data["deliveries"],
        "reminders": record.reminders,
    }


def _from_row(row: dict[str, Any]) -> AlertRecord:
    resolved = row["resolved_at"]
    return AlertRecord(
        id=str(row["id"]),
        component=str(row["component"]),
        rule=str(row["rule"]),
        opened_at=aware(row["opened_at"]),
        message=str(row["message"]),
        last_message=str(row["last_message"]),
        resolved_at=aware(resolved) if resolved is not None else None,
        resolution=row["resolution"],
        notified=list(row["notified"] or []),
        deliveries=[Delivery.from_dict(d) for d in row["deliveries"] or []],
        reminders=int(row["reminders"] or 0),
    )
