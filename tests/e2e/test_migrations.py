"""Scale mode starts every process at once and each migrates first: concurrent migrations of
one fresh PostgreSQL database must serialize (two unguarded Alembic runs race to CREATE the
same tables, and the loser crashes on a duplicate pg_type key)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pocketpay.migrate import migration_lock
from pocketpay.schema import SCHEMAS
from tests.e2e import fleet as fl

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def fresh_db() -> Iterator[str]:
    name = f"pocketpay_e2e_mig_{int(time.time() * 1000) % 10**8}"
    url = fl.fresh_database(name)
    try:
        yield url
    finally:
        fl.drop_database(name)


def _query(url: str, sql: str) -> list[tuple[Any, ...]]:
    import asyncio

    import asyncpg
    from sqlalchemy.engine import make_url

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(run())


def _tables(url: str) -> set[str]:
    """Every table of ``public`` (alembic_version) and of the component schemas."""
    schemas = ", ".join(f"'{s}'" for s in ("public", *SCHEMAS))
    rows = _query(url, f"SELECT tablename FROM pg_tables WHERE schemaname IN ({schemas})")
    return {str(r[0]) for r in rows}


def _lock_waiters(url: str) -> int:
    """Sessions waiting for an advisory lock in this database (the migrator, blocked)."""
    sql = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    return int(_query(url, sql)[0][0])


def test_a_migration_waits_for_the_lock_then_finds_its_work(fresh_db: str) -> None:
    code = "import sys; from pocketpay.migrate import upgrade; upgrade(sys.argv[1])"
    with migration_lock(fresh_db):  # another process is "migrating"
        proc = subprocess.Popen(
            [sys.executable, "-c", code, fresh_db],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while _lock_waiters(fresh_db) == 0:
                assert proc.poll() is None, "migrated without waiting for the lock:\n" + (
                    proc.communicate()[0].decode()
                )
                assert time.monotonic() < deadline, "the migrator never waited for the lock"
                time.sleep(0.1)
            assert "alembic_version" not in _tables(fresh_db)  # waiting, not migrating
        except BaseException:
            proc.kill()
            proc.wait(timeout=10)
            raise
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode()
    assert {"alembic_version", "ledger_transfers", "payments_payments"} <= _tables(fresh_db)


def test_the_lock_wait_is_bounded(fresh_db: str) -> None:
    with migration_lock(fresh_db):
        started = time.monotonic()
        with pytest.raises(Exception, match="lock timeout"), migration_lock(fresh_db, 0.5):
            pass
        assert time.monotonic() - started < 5
