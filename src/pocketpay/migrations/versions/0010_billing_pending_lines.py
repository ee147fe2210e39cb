"""billing pending lines

Lines waiting for a subscription's next invoice (``billing_pending_lines``): the prorations of
a plan change made with ``create_prorations``, and the credit an invoice carries forward when
its lines sum below zero. ``invoice_id`` is set by the transaction that adds the line to an
invoice. On PostgreSQL the table lives in the ``billing`` schema (0009's default privileges
give ``pocketpay_billing`` its rights).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _schema() -> str | None:
    return "billing" if op.get_bind().dialect.name == "postgresql" else None


def upgrade() -> None:
    schema = _schema()
    op.create_table(
        "billing_pending_lines",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True),
        sa.Column("subscription_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(12), nullable=False),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("invoice_id", sa.String(40), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        schema=schema,
    )
    op.create_index(
        "ix_billing_pending_lines_subscription_id",
        "billing_pending_lines",
        ["subscription_id"],
        schema=schema,
    )


def downgrade() -> None:
    op.drop_table("billing_pending_lines", schema=_schema())
