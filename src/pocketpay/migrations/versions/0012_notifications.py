"""notifications

The notifications component's tables (contacts, preferences, webhook endpoints, deliveries
and their attempts, outbox and inbox). On PostgreSQL they live in a ``notifications`` schema,
reached by a login role ``pocketpay_notifications`` with rights on that schema alone (as 0009
did for billing). Also the gateway's outbox (``gateway_outbox``, in the gateway's schema):
sign-up writes ``gateway.user.created`` there, which is how notifications learns a user's
email; the users who exist already are copied into ``notifications_contacts`` here, once.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 10:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

ROLE = "pocketpay_notifications"
SEARCH_PATH = "gateway, payments, ledger, monitor, billing, notifications, bus, public"
BEFORE = "gateway, payments, ledger, monitor, billing, bus, public"
DML = "SELECT, INSERT, UPDATE, DELETE"


def _pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _schema(name: str) -> str | None:
    return name if _pg() else None


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


def _role_and_schema() -> None:
    db = _database()
    op.execute("CREATE SCHEMA IF NOT EXISTS notifications")
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
    op.execute(f"GRANT USAGE ON SCHEMA notifications, bus TO {ROLE}")
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA notifications GRANT {DML} ON TABLES TO {ROLE}")
    op.execute(
        "ALTER DEFAULT PRIVILEGES IN SCHEMA notifications "
        f"GRANT USAGE, SELECT ON SEQUENCES TO {ROLE}"
    )
    op.execute(f"GRANT SELECT, INSERT ON bus.bus_dead_letters TO {ROLE}")
    op.execute(f"GRANT SELECT ON public.alembic_version TO {ROLE}")
    op.execute(f"ALTER ROLE {ROLE} IN DATABASE {db} SET search_path = notifications, bus")


def _outbox(name: str, schema: str | None) -> None:
    op.create_table(
        name,
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
    op.create_index(f"ix_{name}_published_at", name, ["published_at"], schema=schema)


def _endpoint_tables(schema: str | None) -> None:
    op.create_table(
        "notifications_endpoints",
        _seq(),
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("previous_secret", sa.String(100), nullable=True),
        _ts("previous_expires_at", True),
        _ts("failing_since", True),
        sa.Column("disabled_reason", sa.String(200), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
        schema=schema,
    )
    op.create_index(
        "ix_notifications_endpoints_user_seq",
        "notifications_endpoints",
        ["user_id", "seq"],
        schema=schema,
    )
    op.create_table(
        "notifications_deliveries",
        _seq(),
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("channel", sa.String(10), nullable=False),
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("endpoint_id", sa.String(40), nullable=True),
        sa.Column("target", sa.String(2048), nullable=False),
        sa.Column("event_id", sa.String(80), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("next_attempt_at", True),
        _ts("first_attempt_at", True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
        schema=schema,
    )
    op.create_index(
        "ix_notifications_deliveries_next_attempt_at",
        "notifications_deliveries",
        ["next_attempt_at"],
        schema=schema,
    )
    op.create_index(
        "ix_notifications_deliveries_endpoint_seq",
        "notifications_deliveries",
        ["endpoint_id", "seq"],
        schema=schema,
    )
    op.create_table(
        "notifications_attempts",
        _seq(),
        sa.Column("delivery_id", sa.String(40), nullable=False),
        _ts("attempted_at"),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("response_excerpt", sa.String(500), nullable=False),
        sa.Column("error", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        schema=schema,
    )
    op.create_index(
        "ix_notifications_attempts_delivery_id",
        "notifications_attempts",
        ["delivery_id"],
        schema=schema,
    )


def _user_tables(schema: str | None) -> None:
    op.create_table(
        "notifications_contacts",
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("user_id"),
        schema=schema,
    )
    op.create_table(
        "notifications_preferences",
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("email", sa.Boolean(), nullable=False),
        sa.Column("slack_webhook_url", sa.String(2048), nullable=True),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("user_id"),
        schema=schema,
    )


def upgrade() -> None:
    schema = _schema("notifications")
    if _pg():
        _role_and_schema()
    _user_tables(schema)
    _endpoint_tables(schema)
    _outbox("notifications_outbox", schema)
    op.create_table(
        "notifications_inbox",
        sa.Column("event_id", sa.String(80), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        _ts("processed_at"),
        sa.PrimaryKeyConstraint("event_id"),
        schema=schema,
    )
    _outbox("gateway_outbox", _schema("gateway"))
    # The users who signed up before the gateway had an outbox (a migration may read across
    # schemas: it runs as the owner, never as a component's role).
    contacts = "notifications.notifications_contacts" if _pg() else "notifications_contacts"
    users = "gateway.gateway_users" if _pg() else "gateway_users"
    op.execute(
        f"INSERT INTO {contacts} (user_id, email, updated_at) "
        f"SELECT id, email, created_at FROM {users}"
    )


def downgrade() -> None:
    op.drop_table("gateway_outbox", schema=_schema("gateway"))
    schema = _schema("notifications")
    for table in (
        "notifications_inbox",
        "notifications_outbox",
        "notifications_attempts",
        "notifications_deliveries",
        "notifications_endpoints",
        "notifications_preferences",
        "notifications_contacts",
    ):
        op.drop_table(table, schema=schema)
    if _pg():
        db = _database()
        op.execute(f"ALTER DATABASE {db} SET search_path = {BEFORE}")
        op.execute(f"SET search_path = {BEFORE}")
        op.execute("DROP SCHEMA IF EXISTS notifications")
