"""api keys

``gateway_api_keys``: secret API keys (``gateway/api_keys.py``), stored as the SHA-256 of the
secret, looked up by that hash (unique index) on every request a key authenticates. On
PostgreSQL the table is created in the ``gateway`` schema, where 0004's default privileges
give ``pocketpay_gateway`` its rights.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLE = "gateway_api_keys"


def _schema() -> str | None:
    return "gateway" if op.get_bind().dialect.name == "postgresql" else None


def upgrade() -> None:
    schema = _schema()
    op.create_table(
        TABLE,
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("hint", sa.String(length=20), nullable=False),
        sa.Column("scopes", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        schema=schema,
    )
    op.create_index(
        "ix_gateway_api_keys_secret_hash", TABLE, ["secret_hash"], unique=True, schema=schema
    )
    op.create_index("ix_gateway_api_keys_user_id", TABLE, ["user_id"], unique=False, schema=schema)


def downgrade() -> None:
    schema = _schema()
    op.drop_index("ix_gateway_api_keys_user_id", table_name=TABLE, schema=schema)
    op.drop_index("ix_gateway_api_keys_secret_hash", table_name=TABLE, schema=schema)
    op.drop_table(TABLE, schema=schema)
