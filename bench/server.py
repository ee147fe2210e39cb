"""Starts PocketPay (``pocketpay up``) as a subprocess on a fresh database, for one phase.

Embedded: a fresh var dir (SQLite file, in-process bus, sandbox PSP).
PostgreSQL: a fresh database ``pocketpay_bench_*`` and a fresh JetStream stream
``POCKETPAY_BENCH_*``, both removed when the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
NATS_URL = "nats://127.0.0.1:4222"
# The checkout's root (bench/..): `bench` is not an installed package.
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STREAM_SUBJECTS = ("gateway.>", "payments.>", "ledger.>", "billing.>", "notifications.>")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    mode: str
    base_url: str
    pid: int
    db_url: str  # SQLAlchemy async URL of the server's database
    var_dir: Path
    log_path: Path
    stream: str = ""
    jwt_secret: str = ""
    pg_database: str = ""
    nats_pid: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _pocketpay_cmd(workers: int = 1) -> list[str]:
    script = Path(sys.executable).with_name("pocketpay")
    cmd = [str(script), "up"] if script.exists() else [sys.executable, "-m", "pocketpay.cli", "up"]
    # Only when asked: `up --workers N` (N app processes on PostgreSQL + NATS, one port, the
    # sandbox in its own process) is new, and the single-process command stays as it was.
    if workers > 1:
        # Free ports for the sandbox and the monitor (their defaults may be taken by a test
        # deployment on this shared machine).
        cmd += ["--workers", str(workers)]
        cmd += ["--sandbox-port", str(free_port()), "--monitor-port", str(free_port())]
    return cmd


async def _create_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _overlaps(a: str, b: str) -> bool:
    """Rough NATS subject overlap check, enough for the stream subjects we use."""
    pa, pb = a.split("."), b.split(".")
    for x, y in zip(pa, pb, strict=False):
        if ">" in (x, y):
            return True
        if x != y and "*" not in (x, y):
            return False
    return len(pa) == len(pb)


async def _check_streams(nats_url: str) -> None:
    """JetStream refuses two streams with overlapping subjects: fail early and clearly."""
    import nats

    nc = await nats.connect(
        nats_url, connect_timeout=3, max_reconnect_attempts=0, allow_reconnect=False
    )
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            subjects = info.config.subjects or []
            if any(_overlaps(s, t) for s in subjects for t in STREAM_SUBJECTS):
                raise RuntimeError(
                    f"NATS stream {info.config.name!r} already holds the subjects "
                    f"{subjects}; a bench stream cannot be created next to it. Delete it "
                    "(if nothing uses it) or point --nats-url at another server."
                )
    finally:
        await nc.close()


async def _delete_stream(nats_url: str, stream: str) -> None:
    import nats

    nc = await nats.connect(
        nats_url, connect_timeout=3, max_reconnect_attempts=0, allow_reconnect=False
    )
    try:
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


def _popen_quiet(cmd: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


def _spawn(
    cmd: list[str], env: dict[str, str], var_dir: Path, log_path: Path
) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        # cwd = the var dir, so no stray .env in the caller's directory changes the settings.
        return subprocess.Popen(cmd, env=env, cwd=var_dir, stdout=log, stderr=subprocess.STDOUT)


async def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait, 10)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]   {msg}", file=sys.stderr, flush=True)


async def _wait_ready(base_url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 90
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{_tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                r = await http.get("/healthz")
                if r.status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"server did not answer /healthz within 90 s: {log_path}")


@contextlib.asynccontextmanager
async def private_nats() -> AsyncIterator[str]:
    """A throwaway ``nats-server -js`` on a free port: the machine's shared server may hold a
    test suite's stream with the same subjects, and JetStream allows only one."""
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    store = Path(tempfile.mkdtemp(prefix="pocketpay-bench-nats-"))
    port = free_port()
    proc = _popen_quiet([binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)])
    try:
        url = f"nats://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"could not start {binary}") from None
                await asyncio.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 10)
        shutil.rmtree(store, ignore_errors=True)


def nats_pid(url: str) -> int | None:
    """The pid of the nats-server listening on ``url``'s port (for CPU accounting)."""
    port = url.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if entry.joinpath("comm").read_text().strip() != "nats-server":
                continue
            args = entry.joinpath("cmdline").read_bytes().split(b"\0")
            if port.encode() in args or (port == "4222" and b"-p" not in args):
                return int(entry.name)
    return None


@contextlib.asynccontextmanager
async def running_server(
    mode: str,
    label: str,
    *,
    pg_admin_url: str = PG_ADMIN_URL,
    nats_url: str = NATS_URL,
    keep: bool = False,
    workers: int = 1,
    settings: dict[str, str] | None = None,
) -> AsyncIterator[Server]:
    """``settings``: more POCKETPAY_* variables for this server (a phase's own settings)."""
    tag = f"{os.getpid()}_{label}_{secrets.token_hex(3)}"
    var_dir = Path(tempfile.mkdtemp(prefix=f"pocketpay-bench-{mode}-{label}-"))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    jwt_secret = secrets.token_urlsafe(48)
    env = {k: v for k, v in os.environ.items() if not k.startswith("POCKETPAY_")}
    env |= {
        "POCKETPAY_HOST": "127.0.0.1",
        "POCKETPAY_PORT": str(port),
        "POCKETPAY_VAR_DIR": str(var_dir),
        "POCKETPAY_OBSERVABILITY__LOG_LEVEL": "WARNING",
        "POCKETPAY_AUTH__JWT_SECRET": jwt_secret,
        # Rate limits stay on (their cost is measured) but never refuse: every bench client
        # is one user sending as fast as it can, and the balance phase is 64 clients of one.
        "POCKETPAY_RATE_LIMITS__USER_PER_SECOND": "1000000",
        "POCKETPAY_RATE_LIMITS__USER_BURST": "1000000",
    } | (settings or {})
    db_name = ""
    stream = ""
    if mode == "postgres":
        await _check_streams(nats_url)
        db_name = f"pocketpay_bench_{tag}".lower()
        await _create_database(pg_admin_url, db_name)
        stream = f"POCKETPAY_BENCH_{tag}".upper()
        db_url = "postgresql+asyncpg://" + pg_admin_url.split("://", 1)[1].rsplit("/", 1)[0]
        db_url += f"/{db_name}"
        env |= {
            "POCKETPAY_DATABASE_URL": db_url,
            "POCKETPAY_BUS_URL": nats_url,
            "POCKETPAY_BUS__STREAM": stream,
        }
    else:
        db_url = f"sqlite+aiosqlite:///{var_dir / 'pocketpay.db'}"
        env |= {"POCKETPAY_BUS_URL": "embedded"}
    log_path = var_dir / "server.log"
    proc = _spawn(_pocketpay_cmd(workers), env, var_dir, log_path)
    try:
        t0 = time.monotonic()
        await _wait_ready(base_url, proc, log_path)
        _log(f"server {label} up in {time.monotonic() - t0:.1f} s")
        yield Server(
            mode,
            base_url,
            proc.pid,
            db_url,
            var_dir,
            log_path,
            stream,
            jwt_secret,
            db_name,
            nats_pid(nats_url) if mode == "postgres" else None,
        )
    finally:
        t0 = time.monotonic()
        await _stop(proc)
        if mode == "postgres" and not keep:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_drop_database(pg_admin_url, db_name), 15)
            with contextlib.suppress(Exception):  # the NATS server may be gone already
                await asyncio.wait_for(_delete_stream(nats_url, stream), 5)
        if not keep:
            shutil.rmtree(var_dir, ignore_errors=True)
        _log(f"server {label} stopped in {time.monotonic() - t0:.1f} s")


@contextlib.asynccontextmanager
async def running_reference(
    mode: str, label: str, *, pg_admin_url: str = PG_ADMIN_URL, **_: object
) -> AsyncIterator[Server]:
    """bench/reference_app.py under uvicorn, as PocketPay runs, on a fresh database: a
    PostgreSQL database ``pocketpay_bench_*`` (postgres mode) or a SQLite file (embedded)."""
    tag = f"{os.getpid()}_{label}_{secrets.token_hex(3)}"
    var_dir = Path(tempfile.mkdtemp(prefix=f"pocketpay-bench-{mode}-{label}-"))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    db_name = ""
    if mode == "postgres":
        db_name = f"pocketpay_bench_{tag}".lower()
        await _create_database(pg_admin_url, db_name)
        db = pg_admin_url.rsplit("/", 1)[0] + f"/{db_name}"
    else:
        db = f"sqlite:///{var_dir / 'reference.db'}"
    env = os.environ | {"PYTHONPATH": CHECKOUT}
    log_path = var_dir / "server.log"
    cmd = [sys.executable, "-m", "bench.reference_app", "--port", str(port), "--db", db]
    proc = _spawn(cmd, env, var_dir, log_path)
    try:
        t0 = time.monotonic()
        await _wait_ready(base_url, proc, log_path)
        _log(f"reference {label} up in {time.monotonic() - t0:.1f} s")
        yield Server(mode, base_url, proc.pid, db, var_dir, log_path, pg_database=db_name)
    finally:
        await _stop(proc)
        if db_name:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_drop_database(pg_admin_url, db_name), 15)
        shutil.rmtree(var_dir, ignore_errors=True)
