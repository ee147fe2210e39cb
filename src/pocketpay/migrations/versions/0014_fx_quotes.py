"""fx quotes

``ledger_fx_quotes``: the prices of currency conversions, each executable once before it
expires; the conversion is the quote's ``conversion_id`` plus its three transfers
(``ledger/conversions.py``). On PostgreSQL the table lives in the ``ledger`` schema (0004's
default privileges give ``pocketpay_ledger`` its rights).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 10:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def _schema() -> str | None:
    return "ledger" if op.get_bind().dialect.name == "postgresql" else None


def upgrade() -> None:
    schema = _schema()
    op.create_table(
        "ledger_fx_quotes",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("owner_id", sa.String(60), nullable=False),
        sa.Column("sell_currency", sa.String(3), nullable=False),
        sa.Column("buy_currency", sa.String(3), nullable=False),
        sa.Column("sell_amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("buy_amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("converted_minor", sa.BigInteger(), nullable=False),
        sa.Column("fee_minor", sa.BigInteger(), nullable=False),
        sa.Column("rate", sa.String(40), nullable=False),
        sa.Column("rate_source", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("conversion_id", sa.String(40), nullable=True),
        sa.Column("converted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("conversion_id"),
        schema=schema,
    )
    op.create_index("ix_ledger_fx_quotes_owner_id", "ledger_fx_quotes", ["owner_id"], schema=schema)
    op.create_index(
        "ix_ledger_fx_quotes_conversions",
        "ledger_fx_quotes",
        ["owner_id", "converted_at"],
        schema=schema,
    )


def downgrade() -> None:
    op.drop_table("ledger_fx_quotes", schema=_schema())
