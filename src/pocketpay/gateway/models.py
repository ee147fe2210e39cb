"""Tables owned by the gateway: users, refresh tokens, idempotency keys."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
)
from sqlalchemy import Table as _Table

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
