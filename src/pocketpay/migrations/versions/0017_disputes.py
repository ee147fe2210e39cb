"""disputes

``payments_disputes``: the chargebacks and inquiries the PSP opened on our payments, with
Stripe's status, the evidence deadline and the evidence text we sent. On PostgreSQL the table
is in the ``payments`` schema (0004's default privileges give ``pocketpay_payments`` its
rights).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02 14:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def _schema() -> str | None:
    return "payments" if op.get_bind().dialect.name == "postgresql" else None


def upgrade() -> None:
    schema = _schema()
    op.create_table(
        "payments_disputes",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("psp_dispute_id", sa.String(length=80), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("owner_id", sa.String(length=60), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("evidence_due_by", sa.DateTime(timezone=True), nullable=True),
        sa.Column("evidence_text", sa.Text(), nullable=True),
        sa.Column("evidence_submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
        sa.UniqueConstraint("psp_dispute_id"),
        schema=schema,
    )
    op.create_index(
        "ix_payments_disputes_owner_seq", "payments_disputes", ["owner_id", "seq"], schema=schema
    )
    op.create_index(
        "ix_payments_disputes_payment_id", "payments_disputes", ["payment_id"], schema=schema
    )


def downgrade() -> None:
    op.drop_table("payments_disputes", schema=_schema())
