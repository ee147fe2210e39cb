"""component schemas and roles (PostgreSQL)

On PostgreSQL each component gets its own schema and its own login role with rights on its
schema alone (architecture rule 1). SQLite has no schemas: nothing changes there.

* Schemas ``gateway``, ``payments``, ``ledger``, ``monitor`` and ``bus``; every table moves
  into its component's schema (``ALTER TABLE ... SET SCHEMA``: its indexes, constraints and
  owned sequences follow). The models stay unqualified: the database's default
  ``search_path`` lists every schema, so the owner (the migrating role: embedded mode on
  PostgreSQL, ``pocketpay check``, ``pocketpay dlq``, tests) finds every table.
* Login roles ``pocketpay_<component>`` for gateway, payments, ledger and monitor, created
  when missing (roles are cluster-wide: several databases of one server share them). Each
  gets, in this database: USAGE and SELECT/INSERT/UPDATE/DELETE on its schema's tables (and
  default privileges for tables later migrations add there), USAGE/SELECT on its sequences,
  SELECT/INSERT on ``bus.bus_dead_letters`` (every component's bus and relay dead-letter and
  count their dead letters; the gateway's admin replay also marks them: UPDATE), SELECT on
  ``public.alembic_version`` (its ``pocketpay serve`` checks the schema is current, and does
  nothing), and ``search_path = <component>, bus``. No role may create anything; the
  ``bus_stream``/``bus_consumers`` tables belong to the embedded bus (SQLite only).
* Passwords are not set here: ``ALTER ROLE pocketpay_<component> PASSWORD '...'`` (README).

Downgrade moves the tables back to ``public`` and takes every right away; the roles stay (a
role is shared by every database of the server, another may still use it).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The tables as of revision 0003, by schema (frozen: later tables are placed by their own
# migration, e.g. ``op.create_table(..., schema=...)`` on PostgreSQL only).
TABLES = {
    "gateway": ("gateway_users", "gateway_refresh_tokens", "gateway_idempotency_keys"),
    "payments": (
        "payments_payments",
        "payments_attempts",
        "payments_timeline",
        "payments_refunds",
        "payments_psp_inbox",
        "payments_outbox",
        "payments_inbox",
    ),
    "ledger": (
        "ledger_accounts",
        "ledger_balances",
        "ledger_transfers",
        "ledger_outbox",
        "ledger_inbox",
    ),
    "monitor": ("monitor_alerts",),
    "bus": ("bus_stream", "bus_consumers", "bus_dead_letters"),
}
SEARCH_PATH = "gateway, payments, ledger, monitor, bus, public"
COMPONENTS = ("gateway", "payments", "ledger", "monitor")
DML = "SELECT, INSERT, UPDATE, DELETE"


def _role(component: str) -> str:
    return f"pocketpay_{component}"


def _bus_rights(component: str) -> str:
    return "SELECT, INSERT, UPDATE" if component == "gateway" else "SELECT, INSERT"


def _database() -> str:
    bind = op.get_bind()
    name = bind.execute(sa.text("SELECT current_database()")).scalar_one()
    return str(bind.dialect.identifier_preparer.quote(name))


def _create_role(role: str) -> None:
    # Idempotent, and safe against a migration of another database creating it meanwhile
    # (the loser of that race waits for the winner's commit, then gets a unique violation).
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                BEGIN
                    CREATE ROLE {role} LOGIN;
                EXCEPTION WHEN duplicate_object OR unique_violation THEN
                    NULL;
                END;
            END IF;
        END
        $$"""
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    db = _database()
    for schema, tables in TABLES.items():
        op.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for table in tables:
            op.execute(f"ALTER TABLE public.{table} SET SCHEMA {schema}")
    op.execute(f"ALTER DATABASE {db} SET search_path = {SEARCH_PATH}")
    op.execute(f"SET search_path = {SEARCH_PATH}")
    for component in COMPONENTS:
        role = _role(component)
        _create_role(role)
        op.execute(f"GRANT USAGE ON SCHEMA {component}, bus TO {role}")
        op.execute(f"GRANT {DML} ON ALL TABLES IN SCHEMA {component} TO {role}")
        op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {component} TO {role}")
        op.execute(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {component} GRANT {DML} ON TABLES TO {role}"
        )
        op.execute(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {component} "
            f"GRANT USAGE, SELECT ON SEQUENCES TO {role}"
        )
        op.execute(f"GRANT {_bus_rights(component)} ON bus.bus_dead_letters TO {role}")
        op.execute(f"GRANT SELECT ON public.alembic_version TO {role}")
        op.execute(f"ALTER ROLE {role} IN DATABASE {db} SET search_path = {component}, bus")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    db = _database()
    roles = set(
        bind.execute(
            sa.text("SELECT rolname FROM pg_roles WHERE rolname = ANY(:names)"),
            {"names": [_role(c) for c in COMPONENTS]},
        ).scalars()
    )
    for component in COMPONENTS:
        role = _role(component)
        if role not in roles:
            continue
        op.execute(f"ALTER ROLE {role} IN DATABASE {db} RESET search_path")
        op.execute(f"REVOKE SELECT ON public.alembic_version FROM {role}")
        op.execute(f"REVOKE ALL ON bus.bus_dead_letters FROM {role}")
        op.execute(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {component} "
            f"REVOKE USAGE, SELECT ON SEQUENCES FROM {role}"
        )
        op.execute(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {component} REVOKE {DML} ON TABLES FROM {role}"
        )
        op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {component} FROM {role}")
        op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {component} FROM {role}")
        op.execute(f"REVOKE USAGE ON SCHEMA {component}, bus FROM {role}")
    op.execute(f"ALTER DATABASE {db} RESET search_path")
    for schema, tables in TABLES.items():
        for table in tables:
            op.execute(f"ALTER TABLE {schema}.{table} SET SCHEMA public")
        op.execute(f"DROP SCHEMA {schema}")
    op.execute("SET search_path = public")
