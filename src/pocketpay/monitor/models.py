"""The monitor's one table: alert history. Owned by the monitor alone (architecture rule 1)."""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table, Text

metadata = MetaData()

alerts = Table(
    "monitor_alerts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("component", String(64), nullable=False),
    Column("rule", String(64), nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False, index=True),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    Column("message", Text, nullable=False),
    Column("resolution", Text, nullable=True),
    Column("last_message", Text, nullable=False),
    Column("notified", JSON, nullable=False),  # channel names that got the opening message
    Column("deliveries", JSON, nullable=False),  # last few delivery outcomes
    Column("reminders", Integer, nullable=False, default=0),
)
