"""Engines for both backends and the small helpers every repository needs.

SQLite (embedded mode) runs in WAL mode with one pooled connection: every unit of work is
serialized inside the process, which makes balance guards and idempotency races exact without
relying on SQLite's busy-retry loop. PostgreSQL uses asyncpg with a normal pool.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Column, Integer, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


def seq_column() -> Column[int]:
    """An auto-increment ``seq`` primary key: BIGINT on PostgreSQL, INTEGER on SQLite (where
    only INTEGER PRIMARY KEY is the auto-incrementing rowid). Orders streams and pages."""
    return Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url, pool_size=1, max_overflow=0, pool_timeout=60, connect_args={"timeout": 30}
        )
        _sqlite_pragmas(engine)
        return engine
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False, pool_timeout=10
    )


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: no upgrade deadlocks between processes
        # (the CLI and a running server may share the file).
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def single_statements(engine: AsyncEngine) -> AsyncEngine:
    """The engine (same pool) for work that is atomic statement by statement: reads, and
    writes of one statement each (or a compare-and-set sequence that is safe between them).

    On PostgreSQL its connections are in AUTOCOMMIT: a statement is its own transaction, so
    it costs one round trip instead of three (BEGIN, statement, COMMIT or ROLLBACK), about
    0.2-0.3 ms of CPU each here. Use ``begin()`` for writes and ``connect()`` for reads, as
    with any engine: on SQLite (one pooled connection, BEGIN IMMEDIATE) it is the engine
    itself and keeps its transactions."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


async def ping(engine: AsyncEngine) -> float:
    """``SELECT 1``; returns the round trip in milliseconds."""
    start = time.perf_counter()
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return (time.perf_counter() - start) * 1000


def dialect(conn: AsyncConnection) -> str:
    return conn.dialect.name


def insert_ignore(conn: AsyncConnection, table: Any, *, returning: bool = False) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` for the connection's dialect (PostgreSQL, SQLite).

    The statement is built once per (dialect, table) and reused: pass the row to
    ``conn.execute(stmt, {...})`` rather than ``.values(...)``, so SQLAlchemy finds the
    compiled form in its cache instead of building bind parameters and a cache key for every
    value of every call (that construction was a third of a payment create's CPU). With
    ``returning`` it gives back the inserted row (none when the row existed)."""
    return _insert_ignore(conn.dialect.name, table, returning)


@functools.cache
def _insert_ignore(dialect_name: str, table: Any, returning: bool) -> Any:
    stmt: Any
    if dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(table).on_conflict_do_nothing()
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table).on_conflict_do_nothing()
    return stmt.returning(*table.c) if returning else stmt


# SQLSTATEs that say the database could not be used, not that the statement was wrong:
# connection exceptions (08...), shutdowns and start-ups (57P01-57P03), too many connections.
_UNAVAILABLE_STATES = ("08", "57P01", "57P02", "57P03", "53300")


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database (or the way to it) was unavailable: a failure worth
    retrying later, never a reason to dead-letter an event or call a request bad."""
    if isinstance(exc, OSError):  # ConnectionError, TimeoutError, refused, reset
        return True
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        state = str(getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", "") or "")
        if state.startswith(_UNAVAILABLE_STATES):
            return True
        # A database closed to connections (ALTER DATABASE ... ALLOW_CONNECTIONS false) is
        # 55000, a state too broad to match on its own.
        return "not currently accepting connections" in str(exc.orig)
    return False
