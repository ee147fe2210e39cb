"""payouts

``payments_payouts``: withdrawals from a wallet to a bank account, with their status (Stripe's)
and their recovery point (``stage``); only the account's last 4 digits, routing number and
country are kept. On PostgreSQL the table is in the ``payments`` schema (0004's default
privileges give ``pocketpay_payments`` its rights).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 10:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def _schema() -> str | None:
    return "payments" if op.get_bind().dialect.name == "postgresql" else None


def upgrade() -> None:
    schema = _schema()
    op.create_table(
        "payments_payouts",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("owner_id", sa.String(length=60), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("stage", sa.String(length=10), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("routing_number", sa.String(length=9), nullable=False),
        sa.Column("last4", sa.String(length=4), nullable=False),
        sa.Column("psp_bank_account_id", sa.String(length=80), nullable=False),
        sa.Column("psp_payout_id", sa.String(length=80), nullable=True),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("failure_code", sa.String(length=60), nullable=True),
        sa.Column("failure_message", sa.String(length=500), nullable=True),
        sa.Column("check_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
        schema=schema,
    )
    op.create_index(
        "ix_payments_payouts_owner_seq", "payments_payouts", ["owner_id", "seq"], schema=schema
    )
    op.create_index("ix_payments_payouts_check_at", "payments_payouts", ["check_at"], schema=schema)


def downgrade() -> None:
    op.drop_table("payments_payouts", schema=_schema())
