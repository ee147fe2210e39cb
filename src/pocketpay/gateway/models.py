"""Tables owned by the gateway: users, refresh tokens, idempotency keys, API keys, the
outbox, the per-user stream event log."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    UniqueConstraint,
)
from sqlalchemy import Table as _Table

from pocketpay.kit.db import seq_column
from pocketpay.kit.outbox import outbox_table

metadata = MetaData()

users = _Table(
    "gateway_users",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("password_hash", String(200), nullable=False),
    Column("role", String(10), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

refresh_tokens = _Table(
    "gateway_refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # sha256 of the opaque token
    Column("user_id", String(40), nullable=False, index=True),
    Column("family", String(40), nullable=False, index=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
)

idempotency_keys = _Table(
    "gateway_idempotency_keys",
    metadata,
    Column("owner_id", String(40), nullable=False),
    Column("key", String(255), nullable=False),
    Column("fingerprint", String(64), nullable=False),  # sha256 of method, path and body
    Column("status", String(12), nullable=False),  # in_progress | done
    Column("response_status", Integer, nullable=True),
    Column("response_body", JSON, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("locked_until", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("owner_id", "key"),
)

api_keys = _Table(
    "gateway_api_keys",
    metadata,
    Column("id", String(40), primary_key=True),  # key_<ULID>
    Column("user_id", String(40), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    # sha256 of the secret: a 256-bit random secret needs no slow hash, and every request
    # authenticated by a key looks it up by this column.
    Column("secret_hash", String(64), nullable=False, index=True, unique=True),
    Column("hint", String(20), nullable=False),  # pp_sk_...abcd, shown instead of the secret
    Column("scopes", String(100), nullable=False),  # comma-separated: full | read_only,payments
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=True),  # set by a roll with overlap
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

# Live updates (gateway/stream_log.py): one row per (user, domain event). ``seq`` is the
# streams' resume cursor; the unique (user_id, event_id) is the consumer's inbox.
stream_events = _Table(
    "gateway_stream_events",
    metadata,
    seq_column(),
    Column("user_id", String(40), nullable=False),
    Column("event_id", String(80), nullable=False),
    Column("type", String(100), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("data", JSON, nullable=False),
    UniqueConstraint("user_id", "event_id", name="uq_gateway_stream_events_user_event"),
    Index("ix_gateway_stream_events_user_seq", "user_id", "seq"),
    # A purged seq is never handed out again (SQLite would reuse the highest one otherwise,
    # and an old cursor would name a new row).
    sqlite_autoincrement=True,
)

# The gateway's events (``gateway.user.created`` at sign-up, which gives notifications the
# user's email), written in the transaction of the change and relayed to the bus.
outbox = outbox_table(metadata, "gateway")
