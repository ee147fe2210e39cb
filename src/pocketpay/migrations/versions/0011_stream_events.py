"""stream events

``gateway_stream_events``: the gateway's per-user event log behind live updates
(``gateway/stream_log.py``). ``seq`` is a stream's resume cursor (SSE ``Last-Event-ID``,
WebSocket ``resume_from``); the unique (user_id, event_id) makes a redelivered bus event
insert nothing; (user_id, seq) serves "this user's events after my cursor"; ``created_at``
the retention purge. On PostgreSQL the table lives in the ``gateway`` schema, where 0004's
default privileges give ``pocketpay_gateway`` its rights.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 10:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TABLE = "gateway_stream_events"


def _schema() -> str | None:
    return "gateway" if op.get_bind().dialect.name == "postgresql" else None


def upgrade() -> None:
    schema = _schema()
    op.create_table(
        TABLE,
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True),
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("event_id", sa.String(80), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("user_id", "event_id", name="uq_gateway_stream_events_user_event"),
        schema=schema,
        sqlite_autoincrement=True,  # a purged seq is never reused
    )
    op.create_index("ix_gateway_stream_events_user_seq", TABLE, ["user_id", "seq"], schema=schema)
    op.create_index("ix_gateway_stream_events_created_at", TABLE, ["created_at"], schema=schema)


def downgrade() -> None:
    op.drop_table(TABLE, schema=_schema())
