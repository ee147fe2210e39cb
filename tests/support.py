"""Shared test harness: a whole PocketPay stack served by a real uvicorn in the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from sqlalchemy import text

from pocketpay.kit.clock import Clock
from pocketpay.kit.db import create_engine
from pocketpay.kit.jobs import task_stacks
from pocketpay.migrate import upgrade
from pocketpay.runtime import EMBEDDED, Runtime
from pocketpay.schema import SCHEMAS
from pocketpay.settings import Settings
from tests.kit.services import NATS_URL, require_nats, require_postgres

T = TypeVar("T")
# A run without POCKETPAY_TEST_DATABASE_URL uses a database of its own, never CI's
# (.ci/run names pocketpay_test explicitly): a developer's forgotten variable must not drop
# the database of a CI run going on beside it.
_PG_ENV = os.environ.get(
    "POCKETPAY_TEST_DATABASE_URL",
    "postgresql+asyncpg://postgres@127.0.0.1:5432/pocketpay_test_local",
)
# The database name in POCKETPAY_TEST_DATABASE_URL is honoured, so parallel runs can be kept
# apart (each run drops, migrates and truncates its own database).
PG_TEST_DB = _PG_ENV.rsplit("/", 1)[1] or "pocketpay_test_local"
PASSWORD = "correct-horse-battery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serving(app: Any, port: int) -> AsyncIterator[str]:
    """Serve ``app`` (with its lifespan) on 127.0.0.1:port in this event loop."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="on",
        log_level="warning",
        timeout_graceful_shutdown=3,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(2000):
        if server.started or task.done():
            break
        await asyncio.sleep(0.005)
    if not server.started:
        await task
        raise RuntimeError("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        done, _ = await asyncio.wait({task}, timeout=30)
        if not done:  # name what holds the shutdown up, then stop waiting for connections
            print(f"uvicorn shutdown overran 30 s; tasks: {task_stacks()}")
            server.force_exit = True
        await task


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 15.0) -> T:
    """Poll ``check`` until it returns something truthy (asynchronous effects: bus, webhooks)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


def pg_url(database: str = PG_TEST_DB) -> str:
    return _PG_ENV.rsplit("/", 1)[0] + f"/{database}"


_pg_ready: set[str] = set()


async def prepare_postgres(database: str = PG_TEST_DB) -> str:
    """A migrated test database, emptied: created and migrated once per session."""
    url = pg_url(database)
    require_postgres(pg_url("postgres"))
    if url not in _pg_ready:
        admin = create_engine(pg_url("postgres"))
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            await conn.execute(text(f"CREATE DATABASE {database}"))
        await admin.dispose()
        await asyncio.to_thread(upgrade, url)
        _pg_ready.add(url)
    engine = create_engine(url)
    async with engine.begin() as conn:
        # Every component's schema (migration 0004); public holds only alembic_version.
        names = (
            (
                await conn.execute(
                    text(
                        "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) "
                        "FROM pg_tables WHERE schemaname = ANY(:schemas)"
                    ),
                    {"schemas": list(SCHEMAS)},
                )
            )
            .scalars()
            .all()
        )
        assert names, f"no PocketPay tables in schemas {SCHEMAS} of {database}"
        await conn.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY"))
    await engine.dispose()
    return url


async def reset_nats_stream(stream: str) -> None:
    import nats

    require_nats(NATS_URL)
    nc = await nats.connect(NATS_URL, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        with contextlib.suppress(Exception):  # not there yet
            await js.delete_stream(stream)
    finally:
        await nc.close()


def sqlite_template() -> Path:
    """Migrating once and copying the file is much faster than migrating per test."""
    path = Path(os.environ.get("PYTEST_TMPDIR", "/tmp")) / f"pp-template-{os.getpid()}.db"
    if not path.exists():
        upgrade(f"sqlite+aiosqlite:///{path}")
    return path


async def make_settings(
    backend: str, var_dir: Path, port: int, pg_database: str = PG_TEST_DB, **extra: Any
) -> Settings:
    values: dict[str, Any] = {
        "var_dir": var_dir,
        "port": port,
        "psp": {
            "settle_poll_seconds": 0.05,
            "attempt_retry_seconds": 0.5,
            "breaker_reset_seconds": 1.0,
        },
        "sandbox": {"settle_delay_seconds": 0.3},
        "bus": {"relay_poll_seconds": 0.05, "retry_delay_ms": 20, "max_deliver": 3},
        "auth": {"jwt_secret": "test-secret-" + "x" * 40},
    }
    if backend == "postgres":
        values["database_url"] = await prepare_postgres(pg_database)
        values["bus_url"] = NATS_URL
        # A stream and subject prefix of this test run's own: runs sharing the NATS server
        # (two developers, or CI and a developer) cannot take each other's events.
        stream = f"PPTEST_{os.getpid()}"
        await reset_nats_stream(stream)
        values["bus"]["stream"] = stream
        values["bus"]["subject_prefix"] = f"pptest{os.getpid()}."
    else:
        db = var_dir / "pocketpay.db"
        db.write_bytes(await asyncio.to_thread(lambda: sqlite_template().read_bytes()))
        values["database_url"] = f"sqlite+aiosqlite:///{db}"
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = values[key] | value
        else:
            values[key] = value
    return Settings(**values)


@dataclass
class Stack:
    runtime: Runtime
    http: httpx.AsyncClient
    base_url: str
    backend: str

    @property
    def sandbox(self) -> Any:
        assert self.runtime.sandbox_app is not None
        return self.runtime.sandbox_app.state.sandbox

    async def user(self, email: str | None = None) -> dict[str, Any]:
        email = email or f"u{uuid.uuid4().hex[:10]}@example.com"
        r = await self.http.post(
            "/api/v1/auth/signup", json={"email": email, "password": PASSWORD, "name": "Test"}
        )
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        body["headers"] = {"Authorization": f"Bearer {body['access_token']}"}
        return body

    async def post(
        self, user: dict[str, Any], path: str, json: Any = None, key: str | None = "auto"
    ) -> httpx.Response:
        headers = dict(user["headers"])
        if key == "auto":
            key = uuid.uuid4().hex
        if key is not None:
            headers["Idempotency-Key"] = key
        return await self.http.post(path, json=json, headers=headers)

    async def get(self, user: dict[str, Any], path: str, **params: Any) -> httpx.Response:
        return await self.http.get(path, headers=user["headers"], params=params)

    async def pay(
        self,
        user: dict[str, Any],
        amount: int = 5000,
        currency: str = "USD",
        pm: str = "pm_card_visa",
        capture: str = "automatic",
        until: str | None = "captured",
    ) -> dict[str, Any]:
        r = await self.post(
            user,
            "/api/v1/payments",
            {
                "amount_minor": amount,
                "currency": currency,
                "payment_method": pm,
                "capture_method": capture,
            },
        )
        assert r.status_code == 202, r.text
        payment: dict[str, Any] = r.json()
        if until:
            payment = await self.wait_status(user, payment["id"], until)
        return payment

    async def wait_status(self, user: dict[str, Any], pid: str, *statuses: str) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            body: dict[str, Any] = (await self.get(user, f"/api/v1/payments/{pid}")).json()
            return body if body["status"] in statuses else None

        return await eventually(check)

    async def wallet(self, user: dict[str, Any], currency: str = "USD") -> dict[str, int]:
        data = (await self.get(user, "/api/v1/wallets")).json()["data"]
        for w in data:
            if w["currency"] == currency:
                return dict(w)
        return {"currency": currency, "available_minor": 0, "pending_minor": 0, "posted_minor": 0}  # type: ignore[dict-item]

    async def wait_available(
        self, user: dict[str, Any], amount: int, currency: str = "USD"
    ) -> dict[str, int]:
        async def check() -> dict[str, int] | None:
            w = await self.wallet(user, currency)
            return w if w["available_minor"] == amount else None

        return await eventually(check)

    async def ledger_problems(self) -> list[str]:
        from pocketpay.ledger.check import run_check

        return await run_check(self.runtime.engine)


@asynccontextmanager
async def running_stack(
    backend: str,
    var_dir: Path,
    components: tuple[str, ...] = EMBEDDED,
    clock: Clock | None = None,
    **extra: Any,
) -> AsyncIterator[Stack]:
    port = free_port()
    settings = await make_settings(backend, var_dir, port, **extra)
    runtime = Runtime(settings, components, clock)
    try:
        async with (
            serving(runtime.app, port) as base_url,
            httpx.AsyncClient(base_url=base_url, timeout=30) as http,
        ):
            yield Stack(runtime, http, base_url, backend)
    finally:
        if backend == "postgres":
            await reset_nats_stream(settings.bus.stream)  # leave no stream behind


@asynccontextmanager
async def ledger_only(backend: str, var_dir: Path) -> AsyncIterator[tuple[Any, Any, Any]]:
    """The ledger component alone (no server): (its ``LedgerApi``, an ``HttpLedgerClient``
    over its internal API in process, the engine)."""
    from pocketpay.kit.client import InternalClient
    from pocketpay.ledger.client import HttpLedgerClient

    runtime = Runtime(await make_settings(backend, var_dir, free_port()), ("ledger",))
    internal = InternalClient(
        "ledger",
        "http://ledger",
        token=runtime.settings.resolved_internal_token(),
        transport=httpx.ASGITransport(app=runtime.app),
    )
    try:
        yield runtime.components["ledger"].state["api"], HttpLedgerClient(internal), runtime.engine
    finally:
        await internal.aclose()
        await runtime.engine.dispose()
