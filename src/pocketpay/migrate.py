"""Run the Alembic migrations programmatically (``pocketpay migrate``).

In scale mode every ``pocketpay serve`` migrates before it serves, so several processes can
start against the same fresh PostgreSQL database at once. Two concurrent Alembic runs race:
both see no ``alembic_version`` and both ``CREATE TABLE``; the loser fails with a duplicate
key on ``pg_type``. ``upgrade`` therefore holds a PostgreSQL advisory lock (on its own
session) around the Alembic run: the first process migrates, the others wait, then find the
schema at head and do nothing. SQLite needs no lock (one process owns the file).

On PostgreSQL the migrations also create each component's schema and login role (migration
0004); ``component_roles`` reports them, for ``pocketpay migrate`` to print.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncConnection

from pocketpay.kit.db import is_sqlite

HERE = Path(__file__).parent / "migrations"
# pg_advisory_lock key shared by every PocketPay process migrating a database ("pocketpay").
MIGRATION_LOCK_KEY = 0x706F636B6574
LOCK_TIMEOUT_SECONDS = 120.0


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    if is_sqlite(url):
        from sqlalchemy.engine import make_url

        db = make_url(url).database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        command.upgrade(alembic_config(url), revision)
        return
    with migration_lock(url):
        command.upgrade(alembic_config(url), revision)


def component_roles(url: str) -> dict[str, str]:
    """{role: its schema} for each component role that exists and may use its schema here.

    Empty on SQLite (no schemas, no roles). Must not be called from a running event loop.
    """
    if is_sqlite(url):
        return {}
    return asyncio.run(_component_roles(url))


async def _component_roles(url: str) -> dict[str, str]:
    from sqlalchemy import text

    from pocketpay.kit.db import create_engine
    from pocketpay.schema import ROLES

    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT r.rolname FROM pg_roles r "
                    "JOIN pg_namespace n ON r.rolname = 'pocketpay_' || n.nspname "
                    "WHERE r.rolname = ANY(:roles) AND r.rolcanlogin "
                    "AND has_schema_privilege(r.rolname, n.oid, 'USAGE')"
                ),
                {"roles": list(ROLES.values())},
            )
            present = set(rows.scalars())
    finally:
        await engine.dispose()
    return {role: component for component, role in ROLES.items() if role in present}


@contextlib.contextmanager
def migration_lock(url: str, timeout_seconds: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """Hold a session-level PostgreSQL advisory lock for the duration of the block.

    The lock lives on a dedicated connection driven by a private event loop, because
    Alembic's env.py runs its own ``asyncio.run`` in this thread meanwhile (the private loop
    is idle then, which is fine: the server keeps the session and its lock). Must not be
    called from a running event loop (use ``asyncio.to_thread``), same as Alembic itself.
    If this process dies, the server drops the session and with it the lock.
    """
    loop = asyncio.new_event_loop()
    try:
        conn = loop.run_until_complete(_lock(url, timeout_seconds))
        try:
            yield
        finally:
            loop.run_until_complete(_unlock(conn))
    finally:
        loop.close()


async def _lock(url: str, timeout_seconds: float) -> AsyncConnection:
    from sqlalchemy import text

    from pocketpay.kit.db import create_engine

    engine = create_engine(url, pool_size=1)
    conn = await engine.connect()
    try:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        # lock_timeout bounds the wait: a migration stuck elsewhere fails us loudly.
        await conn.execute(text(f"SET lock_timeout = {int(timeout_seconds * 1000)}"))
        await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
    except BaseException:
        await conn.close()
        await engine.dispose()
        raise
    return conn


async def _unlock(conn: AsyncConnection) -> None:
    from sqlalchemy import text

    try:
        await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
    finally:
        await conn.close()
        await conn.engine.dispose()
