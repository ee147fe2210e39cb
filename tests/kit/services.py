"""Reachability checks for the external services some tests need (NATS JetStream, PostgreSQL).

``require_nats(url)`` / ``require_postgres(url)`` return the URL when the service answers; when
it does not, the calling test is skipped with the reason, or failed if the environment sets
``POCKETPAY_REQUIRE_SERVICES=1`` (CI and ``make test-services`` must not skip silently). Call
them from a fixture or a test, sync or async: the probe runs on its own thread and event loop.
Results are cached per URL for the session.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import NoReturn

import pytest

NATS_URL = os.environ.get("POCKETPAY_TEST_NATS_URL", "nats://127.0.0.1:4222")
POSTGRES_URL = os.environ.get(
    "POCKETPAY_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
PROBE_TIMEOUT_SECONDS = 5.0


def services_required() -> bool:
    return os.environ.get("POCKETPAY_REQUIRE_SERVICES", "") == "1"


def _unavailable(reason: str) -> NoReturn:
    if services_required():
        pytest.fail(f"{reason} (POCKETPAY_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


def _probe(check: Callable[[], Awaitable[None]]) -> str | None:
    """Run ``check`` on a fresh loop in a thread; the error text, or None if it passed."""

    def run() -> None:
        asyncio.run(asyncio.wait_for(check(), PROBE_TIMEOUT_SECONDS))

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        try:
            pool.submit(run).result(timeout=PROBE_TIMEOUT_SECONDS + 2)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}".rstrip(": ")
    return None


@functools.cache
def _nats_problem(url: str) -> str | None:
    async def check() -> None:
        import nats

        # A plain TCP connect first: nats-py reports a refused port only as NoServersError.
        parsed = urllib.parse.urlsplit(url)
        _reader, writer = await asyncio.open_connection(
            parsed.hostname or "127.0.0.1", parsed.port or 4222
        )
        writer.close()

        async def quiet(_exc: Exception) -> None:
            return None

        nc = await nats.connect(
            url,
            connect_timeout=2,
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0,
            error_cb=quiet,
        )
        try:
            await nc.jetstream().account_info()  # fails when JetStream is not enabled
        finally:
            await nc.close()

    return _probe(check)


@functools.cache
def _postgres_problem(url: str) -> str | None:
    async def check() -> None:
        import asyncpg
        from sqlalchemy.engine import make_url

        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(dsn, timeout=2)
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    return _probe(check)


def require_nats(url: str = NATS_URL) -> str:
    """``url`` if NATS with JetStream answers there; else skip (or fail, see module doc)."""
    problem = _nats_problem(url)
    if problem is not None:
        _unavailable(f"NATS not reachable at {url} ({problem})")
    return url


def require_postgres(url: str = POSTGRES_URL) -> str:
    """``url`` if PostgreSQL answers ``SELECT 1`` there; else skip (or fail, see module doc)."""
    problem = _postgres_problem(url)
    if problem is not None:
        _unavailable(f"PostgreSQL not reachable at {url} ({problem})")
    return url
