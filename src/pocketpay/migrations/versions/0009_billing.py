"""billing

The billing component's tables (plans, customers, subscriptions, invoices and their lines,
charges, the test clock, outbox and inbox). On PostgreSQL they live in a ``billing`` schema,
reached by a login role ``pocketpay_billing`` with rights on that schema alone (as 0004 set up
the other components), plus the bus dead letters and ``alembic_version`` as the others have.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ROLE = "pocketpay_billing"
SEARCH_PATH = "gateway, payments, ledger, monitor, billing, bus, public"
DML = "SELECT, INSERT, UPDATE, DELETE"


def _pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _schema() -> str | None:
    return "billing" if _pg() else None


def _seq() -> sa.Column[int]:
    return sa.Column(
        "seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True
    )


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _database() -> str:
    bind = op.get_bind()
    name = bind.execute(sa.text("SELECT current_database()")).scalar_one()
    return str(bind.dialect.identifier_preparer.quote(name))


def upgrade() -> None:
    schema = _schema()
    if _pg():
        db = _database()
        op.execute("CREATE SCHEMA IF NOT EXISTS billing")
        op.execute(f"ALTER DATABASE {db} SET search_path = {SEARCH_PATH}")
        op.execute(f"SET search_path = {SEARCH_PATH}")
        op.execute(
            f"""
            DO $$
            BEGIN
                IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
                    BEGIN
                        CREATE ROLE {ROLE} LOGIN;
                    EXCEPTION WHEN duplicate_object OR unique_violation THEN
                        NULL;
                    END;
                END IF;
            END
            $$"""
        )
        op.execute(f"GRANT USAGE ON SCHEMA billing, bus TO {ROLE}")
        op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA billing GRANT {DML} ON TABLES TO {ROLE}")
        op.execute(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA billing GRANT USAGE, SELECT ON SEQUENCES TO {ROLE}"
        )
        op.execute(f"GRANT SELECT, INSERT ON bus.bus_dead_letters TO {ROLE}")
        op.execute(f"GRANT SELECT ON public.alembic_version TO {ROLE}")
        op.execute(f"ALTER ROLE {ROLE} IN DATABASE {db} SET search_path = billing, bus")
    op.create_table(
        "billing_plans",
        _seq(),
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("interval", sa.String(5), nullable=False),
        sa.Column("interval_count", sa.Integer(), nullable=False),
        sa.Column("trial_days", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        _ts("created_at"),
        _ts("archived_at", True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
        schema=schema,
    )
    op.create_table(
        "billing_customers",
        _seq(),
        sa.Column("owner_id", sa.String(60), nullable=False),
        sa.Column("invoices_numbered", sa.Integer(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("owner_id"),
        schema=schema,
    )
    op.create_table(
        "billing_subscriptions",
        _seq(),
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("owner_id", sa.String(60), nullable=False),
        sa.Column("plan_id", sa.String(40), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("payment_source", sa.String(10), nullable=False),
        sa.Column("payment_method", sa.String(40), nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        _ts("anchor"),
        _ts("trial_end", True),
        sa.Column("period", sa.Integer(), nullable=False),
        _ts("current_period_start"),
        _ts("current_period_end"),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        _ts("canceled_at", True),
        _ts("next_action_at", True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
        schema=schema,
    )
    op.create_index(
        "ix_billing_subscriptions_next_action_at",
        "billing_subscriptions",
        ["next_action_at"],
        schema=schema,
    )
    op.create_index(
        "ix_billing_subscriptions_owner_seq",
        "billing_subscriptions",
        ["owner_id", "seq"],
        schema=schema,
    )
    op.create_table(
        "billing_invoices",
        _seq(),
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("owner_id", sa.String(60), nullable=False),
        sa.Column("subscription_id", sa.String(40), nullable=False),
        sa.Column("number", sa.String(30), nullable=True),
        sa.Column("status", sa.String(15), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        _ts("period_start"),
        _ts("period_end"),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("amount_paid_minor", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("next_attempt_at", True),
        sa.Column("last_decline_code", sa.String(60), nullable=True),
        _ts("created_at"),
        _ts("finalized_at", True),
        _ts("paid_at", True),
        _ts("voided_at", True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
        sa.UniqueConstraint("subscription_id", "period_start", name="uq_billing_invoices_period"),
        schema=schema,
    )
    op.create_index(
        "ix_billing_invoices_next_attempt_at",
        "billing_invoices",
        ["next_attempt_at"],
        schema=schema,
    )
    op.create_index(
        "ix_billing_invoices_owner_seq", "billing_invoices", ["owner_id", "seq"], schema=schema
    )
    op.create_table(
        "billing_invoice_lines",
        _seq(),
        sa.Column("invoice_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(12), nullable=False),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        _ts("period_start", True),
        _ts("period_end", True),
        sa.PrimaryKeyConstraint("seq"),
        schema=schema,
    )
    op.create_index(
        "ix_billing_invoice_lines_invoice_id",
        "billing_invoice_lines",
        ["invoice_id"],
        schema=schema,
    )
    op.create_table(
        "billing_charges",
        sa.Column("id", sa.String(60), nullable=False),
        sa.Column("invoice_id", sa.String(40), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("payment_id", sa.String(40), nullable=True),
        sa.Column("decline_code", sa.String(60), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id"),
        schema=schema,
    )
    op.create_index(
        "ix_billing_charges_invoice_id", "billing_charges", ["invoice_id"], schema=schema
    )
    op.create_index(
        "ix_billing_charges_payment_id", "billing_charges", ["payment_id"], schema=schema
    )
    op.create_table(
        "billing_clock",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("offset_seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        schema=schema,
    )
    op.create_table(
        "billing_outbox",
        _seq(),
        sa.Column("event_id", sa.String(40), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        _ts("occurred_at"),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("trace", sa.JSON(), nullable=False),
        _ts("published_at", True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("event_id"),
        schema=schema,
    )
    op.create_index(
        "ix_billing_outbox_published_at", "billing_outbox", ["published_at"], schema=schema
    )
    op.create_table(
        "billing_inbox",
        sa.Column("event_id", sa.String(80), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        _ts("processed_at"),
        sa.PrimaryKeyConstraint("event_id"),
        schema=schema,
    )


def downgrade() -> None:
    schema = _schema()
    for table in (
        "billing_inbox",
        "billing_outbox",
        "billing_clock",
        "billing_charges",
        "billing_invoice_lines",
        "billing_invoices",
        "billing_subscriptions",
        "billing_customers",
        "billing_plans",
    ):
        op.drop_table(table, schema=schema)
    if _pg():
        op.execute("DROP SCHEMA IF EXISTS billing")
