"""A scale-mode deployment on one machine, for end-to-end tests: every component is its own
``python -m pocketpay.cli serve <component>`` process on PostgreSQL + NATS JetStream, wired
with the same environment variables an operator would set (see deploy/README.md).

Isolation from the other suites:

* its own PostgreSQL database (dropped and created again), migrated by the processes
  themselves as they start (all at once: that exercises the migration lock);
* its own NATS JetStream server (a private ``nats-server`` on a free port with a throwaway
  store) when the binary is installed. A stream *name* alone does not isolate: the stream's
  subjects are fixed (``payments.>``, ``ledger.>``, ...) and NATS refuses a second stream
  whose subjects overlap an existing one (err_code 10065), so on a shared server the e2e
  stream would collide with ``POCKETPAY_TEST`` of the in-process suites. Without the binary
  the shared server is used when no other stream claims those subjects.

Every process is bounded: readiness has a deadline, shutdown is SIGTERM then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

from tests.kit.services import NATS_URL, require_nats, require_postgres
from tests.support import free_port, pg_url

T = TypeVar("T")

# Per run: two runs at once (a developer and CI on one machine) must not drop each other.
DB_NAME = f"pocketpay_e2e_{os.getpid()}"
INTERNAL_TOKEN = "e2e-internal-token-" + "i" * 24
JWT_SECRET = "e2e-jwt-secret-" + "j" * 40
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
STREAM_SUBJECTS = ("gateway.>", "payments.>", "ledger.>", "billing.>", "notifications.>")


@dataclass
class Proc:
    name: str  # e.g. "payments-2"
    component: str
    port: int
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Fleet:
    workdir: Path
    database_url: str
    nats_url: str
    stream: str
    procs: list[Proc] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    ready_seconds: float = 0.0

    def of(self, component: str) -> list[Proc]:
        return [p for p in self.procs if p.component == component]

    def one(self, component: str) -> Proc:
        return self.of(component)[0]

    @property
    def gateway(self) -> str:
        return self.one("gateway").url

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} (:{p.port}) ---\n{p.log_tail()}" for p in self.procs)

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """``pocketpay <args>`` with this fleet's environment (e.g. ``check``)."""
        return subprocess.run(
            [sys.executable, "-m", "pocketpay.cli", *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every process, wait (bounded), SIGKILL the stragglers. Idempotent."""
        for p in self.procs:
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for p in self.procs:
            try:
                p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait(timeout=5)
                self.exit_codes.setdefault(p.name, None)  # None: had to be killed
            self.exit_codes.setdefault(p.name, p.popen.returncode)
        return self.exit_codes


def until(check: Callable[[], T | None], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.05)


# -- services --------------------------------------------------------------------------------


def _admin_dsn() -> str:
    """The server's ``postgres`` database (the test URL's own database may not exist yet)."""
    from sqlalchemy.engine import make_url

    url = make_url(require_postgres(pg_url("postgres")))
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def fresh_database(name: str = DB_NAME) -> str:
    """Drop and create ``name``; returns its SQLAlchemy (asyncpg) URL. Not migrated."""
    import asyncpg

    async def recreate() -> None:
        conn = await asyncpg.connect(_admin_dsn(), timeout=5)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            await conn.execute(f"CREATE DATABASE {name}")
        finally:
            await conn.close()

    asyncio.run(recreate())
    return pg_url(name)


def drop_database(name: str = DB_NAME) -> None:
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(_admin_dsn(), timeout=5)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await conn.close()

    with contextlib.suppress(Exception):
        asyncio.run(drop())


def _wait_port(port: int, timeout: float) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@contextlib.contextmanager
def nats_server(workdir: Path) -> Iterator[str]:
    """A private JetStream server if ``nats-server`` is installed, else the shared one."""
    binary = shutil.which("nats-server")
    if binary is None:
        url = require_nats(NATS_URL)
        _refuse_overlapping_streams(url)
        yield url
        return
    port = free_port()
    store = workdir / "nats"
    store.mkdir(parents=True, exist_ok=True)
    log = (workdir / "nats-server.log").open("wb")
    proc = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_port(port, 10)
        yield require_nats(f"nats://127.0.0.1:{port}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def _refuse_overlapping_streams(url: str) -> None:
    import nats
    import pytest

    from tests.kit.services import services_required

    async def others() -> list[str]:
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            infos = await nc.jetstream().streams_info()
        finally:
            await nc.close()
        return [
            s.config.name or "?"
            for s in infos
            if set(s.config.subjects or []) & set(STREAM_SUBJECTS)
            and not (s.config.name or "").startswith("POCKETPAY_E2E")
        ]

    taken = asyncio.run(others())
    if taken:
        reason = (
            f"no nats-server binary for a private JetStream, and streams {taken} on {url} "
            "already claim PocketPay's subjects (NATS refuses overlapping streams)"
        )
        if services_required():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


def reset_stream(url: str, stream: str) -> None:
    import nats

    async def delete() -> None:
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            with contextlib.suppress(Exception):  # not there: fine
                await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()

    asyncio.run(delete())


# -- processes -------------------------------------------------------------------------------


def fleet_env(fleet: Fleet, urls: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """The environment of every process: the operator's view of scale mode."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("POCKETPAY_")}
    return (
        base
        | {
            "POCKETPAY_DATABASE_URL": fleet.database_url,
            "POCKETPAY_BUS_URL": fleet.nats_url,
            "POCKETPAY_BUS__STREAM": fleet.stream,
            "POCKETPAY_URLS": json.dumps(urls),
            "POCKETPAY_INTERNAL_TOKEN": INTERNAL_TOKEN,
            "POCKETPAY_AUTH__JWT_SECRET": JWT_SECRET,
            "POCKETPAY_PSP__API_BASE": urls["sandbox"],
            "POCKETPAY_SANDBOX__WEBHOOK_URL": f"{urls['gateway']}/api/v1/webhooks/stripe",
            "POCKETPAY_VAR_DIR": str(fleet.workdir / "var"),
            "PYTHONUNBUFFERED": "1",
        }
        | extra
    )


def start(
    fleet: Fleet,
    layout: dict[str, int],
    extra_env: dict[str, str] | None = None,
    component_env: dict[str, dict[str, str]] | None = None,
) -> None:
    """Start ``layout`` ({component: copies}) at once; internal URLs name the first copy.

    ``component_env`` adds variables to one component's processes only (e.g. its own
    ``POCKETPAY_DATABASE_URL``, connecting as the component's role)."""
    ports = {c: [free_port() for _ in range(n)] for c, n in layout.items()}
    urls = {c: f"http://127.0.0.1:{p[0]}" for c, p in ports.items()}
    fleet.env = fleet_env(fleet, urls, extra_env or {})
    logs = fleet.workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for component, component_ports in ports.items():
        for i, port in enumerate(component_ports, start=1):
            name = f"{component}-{i}"
            log_path = logs / f"{name}.log"
            with log_path.open("wb") as out:
                popen = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "pocketpay.cli",
                        "serve",
                        component,
                        "--port",
                        str(port),
                    ],
                    env=fleet.env | (component_env or {}).get(component, {}),
                    cwd=fleet.workdir,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C in the test runner is ours to relay
                )
            fleet.procs.append(Proc(name, component, port, popen, log_path))


def wait_ready(fleet: Fleet, timeout: float = READY_TIMEOUT_SECONDS) -> None:
    """Every process answers ``/readyz`` with 200 "ready" (bounded; a crash fails at once)."""
    started = time.monotonic()
    deadline = started + timeout
    waiting = {p.name: p for p in fleet.procs}
    last: dict[str, str] = {}
    with httpx.Client(timeout=2.0) as http:
        while waiting:
            for name, p in list(waiting.items()):
                if p.popen.poll() is not None:
                    raise AssertionError(
                        f"{name} exited with {p.popen.returncode} before it was ready:\n"
                        f"{p.log_tail()}"
                    )
                try:
                    r = http.get(f"{p.url}/readyz")
                except httpx.HTTPError as exc:
                    last[name] = type(exc).__name__
                    continue
                last[name] = f"{r.status_code} {r.text[:300]}"
                if r.status_code == 200 and r.json().get("status") == "ready":
                    del waiting[name]
            if waiting and time.monotonic() > deadline:
                detail = "\n".join(f"{n}: {last.get(n)}" for n in waiting)
                raise AssertionError(f"not ready after {timeout}s:\n{detail}\n{fleet.logs()}")
            time.sleep(0.1)
    fleet.ready_seconds = time.monotonic() - started


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample in an exposition ``text`` (0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    head = f"{name}{{{want}}}" if want else name
    for line in text.splitlines():
        if line.startswith(head + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@contextlib.contextmanager
def running_fleet(
    workdir: Path, layout: dict[str, int], extra_env: dict[str, str], db_name: str = DB_NAME
) -> Iterator[Fleet]:
    """A fresh database, a private NATS, ``layout`` started and ready; all removed after."""
    database_url = fresh_database(db_name)
    try:
        with nats_server(workdir) as nats_url:
            stream = f"POCKETPAY_E2E_{os.urandom(4).hex().upper()}"
            reset_stream(nats_url, stream)
            fleet = Fleet(workdir, database_url, nats_url, stream)
            try:
                start(fleet, layout, extra_env)
                wait_ready(fleet)
                yield fleet
            finally:
                fleet.stop()
                reset_stream(nats_url, stream)
    finally:
        drop_database(db_name)
