"""Alembic environment: runs the async engine of the configured database.

On PostgreSQL the component tables live in schemas of their own (migration 0004), so:

* the migration's connection searches every component schema (``SEARCH_PATH``), the same
  path 0004 makes the database's default: migrations name tables unqualified on both
  databases;
* ``alembic_version`` stays in ``public`` and is named so (``version_table_schema``): a
  component's role, whose search_path is its own schema and ``bus``, still finds it when its
  ``pocketpay serve`` checks that the database is current;
* autogenerate compares the database with the models placed in their schemas
  (``placed_metadata``), schema by schema: a table in the wrong schema shows up as a
  difference instead of passing unseen. PostgreSQL's reflection of the *default* schema
  (``schema=None``) lists every table visible through ``search_path``, i.e. all of them, so
  the default schema is pinned to ``public`` (where only ``alembic_version`` lives, and no
  model) and each component schema is compared by its name.
"""

from __future__ import annotations

import asyncio

from alembic import context
from alembic.environment import NameFilterParentNames, NameFilterType
from sqlalchemy import text
from sqlalchemy.engine import Connection

from pocketpay.kit.db import create_engine
from pocketpay.schema import SCHEMAS, all_metadata, placed_metadata

config = context.config
SEARCH_PATH = ", ".join((*SCHEMAS, "public"))


def _include_name(name: str | None, type_: NameFilterType, _parent: NameFilterParentNames) -> bool:
    if type_ == "schema":
        return name in SCHEMAS  # None (the default schema, public) holds no model
    return True


def _run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Schemas that do not exist yet (before 0004) are skipped by PostgreSQL.
        connection.execute(text(f"SET search_path TO {SEARCH_PATH}"))
        # Read once at connect (current_schema(): gateway once 0004 ran); see the docstring.
        connection.dialect.default_schema_name = "public"
        context.configure(
            connection=connection,
            target_metadata=placed_metadata(),
            compare_type=True,
            include_schemas=True,
            include_name=_include_name,
            version_table_schema="public",
        )
    else:
        context.configure(
            connection=connection,
            target_metadata=all_metadata(),
            render_as_batch=True,
            compare_type=True,
        )
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is not set"
    engine = create_engine(url, pool_size=1)
    async with engine.connect() as conn:
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `pocketpay migrate`")
asyncio.run(_main())
