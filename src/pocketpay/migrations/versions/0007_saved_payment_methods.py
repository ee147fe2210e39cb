"""saved payment methods

``payments_customers`` (the PSP customer of each user who saved a card) and
``payments_payment_methods`` (cards kept at the PSP, charged later: billing's off-session
renewals, or a top-up with a saved card). A payment made with a saved method records the
PSP's customer and payment method ids. On PostgreSQL the tables are in the ``payments``
schema (0004's default privileges give ``pocketpay_payments`` its rights).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _schema() -> str | None:
    return "payments" if op.get_bind().dialect.name == "postgresql" else None


def upgrade() -> None:
    schema = _schema()
    op.create_table(
        "payments_customers",
        sa.Column("owner_id", sa.String(length=60), nullable=False),
        sa.Column("psp_customer_id", sa.String(length=80), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner_id"),
        schema=schema,
    )
    op.create_table(
        "payments_payment_methods",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("owner_id", sa.String(length=60), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("psp_customer_id", sa.String(length=80), nullable=False),
        sa.Column("psp_payment_method", sa.String(length=80), nullable=False),
        sa.Column("brand", sa.String(length=20), nullable=False),
        sa.Column("last4", sa.String(length=4), nullable=False),
        sa.Column("exp_month", sa.Integer(), nullable=False),
        sa.Column("exp_year", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detached_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
        schema=schema,
    )
    op.create_index(
        "ix_payments_payment_methods_owner_seq",
        "payments_payment_methods",
        ["owner_id", "seq"],
        schema=schema,
    )
    with op.batch_alter_table("payments_payments", schema=schema) as batch_op:
        batch_op.add_column(sa.Column("psp_customer_id", sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column("psp_payment_method", sa.String(length=80), nullable=True))


def downgrade() -> None:
    schema = _schema()
    with op.batch_alter_table("payments_payments", schema=schema) as batch_op:
        batch_op.drop_column("psp_payment_method")
        batch_op.drop_column("psp_customer_id")
    table = "payments_payment_methods"
    op.drop_index("ix_payments_payment_methods_owner_seq", table_name=table, schema=schema)
    op.drop_table("payments_payment_methods", schema=schema)
    op.drop_table("payments_customers", schema=schema)
