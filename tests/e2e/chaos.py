"""Helpers for the chaos test (``test_chaos.py``): a private NATS server that can be killed and
restarted, SIGKILL + restart of fleet processes, PostgreSQL connection cuts, and a client that
retries like a real one (same Idempotency-Key on every unknown outcome).

Nothing here sleeps to synchronise: readiness is polled with a deadline; the only sleeps are
the client's backoff and the pauses between faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e import fleet as fl
from tests.e2e.fleet import Fleet, Proc
from tests.kit.services import require_nats, services_required
from tests.support import free_port

NATS_BINARY = "/usr/sbin/nats-server"
RESTART_READY_SECONDS = 60.0


# -- a private, killable NATS JetStream ------------------------------------------------------


class PrivateNats:
    """``nats-server -js`` on a free port with its own store dir. ``kill`` is SIGKILL;
    ``start`` again uses the same port and store, so JetStream recovers its stream and its
    durable consumers from disk, as a real restart would."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.store = workdir / "nats"
        self.store.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "nats-server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = NATS_BINARY if Path(NATS_BINARY).exists() else shutil.which("nats-server")
        assert binary is not None
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        fl._wait_port(self.port, 15)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@contextlib.contextmanager
def chaos_fleet(
    workdir: Path, layout: dict[str, int], extra_env: dict[str, str], db_name: str
) -> Iterator[tuple[Fleet, PrivateNats]]:
    """Like ``fleet.running_fleet`` but with a NATS server the test may kill."""
    if not Path(NATS_BINARY).exists() and shutil.which("nats-server") is None:
        reason = "no nats-server binary: the chaos test needs a NATS server of its own to kill"
        if services_required():
            pytest.fail(f"{reason} (POCKETPAY_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(reason)
    database_url = fl.fresh_database(db_name)
    nats = PrivateNats(workdir)
    try:
        nats.start()
        require_nats(nats.url)
        fleet = Fleet(workdir, database_url, nats.url, "POCKETPAY_CHAOS")
        try:
            fl.start(fleet, layout, extra_env)
            fl.wait_ready(fleet)
            yield fleet, nats
        finally:
            fleet.stop()
    finally:
        nats.stop()
        fl.drop_database(db_name)


# -- process faults --------------------------------------------------------------------------


def sigkill(proc: Proc) -> None:
    if proc.popen.poll() is None:
        proc.popen.send_signal(signal.SIGKILL)
    proc.popen.wait(timeout=10)


def respawn(fleet: Fleet, proc: Proc) -> None:
    """Start ``proc``'s component again on the same port with the same environment (the
    other processes' URLs name that port); its log is appended to."""
    with proc.log_path.open("ab") as out:
        out.write(f"\n===== chaos: restarted at {time.time():.3f} =====\n".encode())
        out.flush()
        proc.popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pocketpay.cli",
                "serve",
                proc.component,
                "--port",
                str(proc.port),
            ],
            env=fleet.env,
            cwd=fleet.workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_serving(procs: list[Proc], timeout: float = RESTART_READY_SECONDS) -> dict[str, str]:
    """Each of ``procs`` answers ``/readyz`` with 200 (ready, or degraded by a non-critical
    check such as an open PSP breaker). Returns the statuses; fails on a crash or the deadline."""
    deadline = time.monotonic() + timeout
    waiting = {p.name: p for p in procs}
    seen: dict[str, str] = {}
    with httpx.Client(timeout=2.0) as http:
        while waiting:
            for name, p in list(waiting.items()):
                if p.popen.poll() is not None:
                    raise AssertionError(
                        f"{name} exited with {p.popen.returncode}:\n{p.log_tail(60)}"
                    )
                try:
                    r = http.get(f"{p.url}/readyz")
                except httpx.HTTPError as exc:
                    seen[name] = type(exc).__name__
                    continue
                seen[name] = f"{r.status_code} {r.text[:300]}"
                if r.status_code == 200:
                    seen[name] = r.json().get("status", "?")
                    del waiting[name]
            if waiting and time.monotonic() > deadline:
                detail = "\n".join(f"{n}: {seen.get(n)}" for n in waiting)
                raise AssertionError(f"not serving after {timeout}s:\n{detail}")
            time.sleep(0.1)
    return seen


async def cut_postgres(admin_dsn: str, db_name: str) -> int:
    """Terminate every backend connected to ``db_name`` except ours; how many."""
    import asyncpg

    conn = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            db_name,
        )
    finally:
        await conn.close()
    return len(rows)


# -- a client that retries like a real one ---------------------------------------------------


@dataclass
class Op:
    """One Idempotency-Key and what the client saw for it."""

    kind: str  # pay | transfer | refund
    user_id: str
    key: str
    path: str
    body: dict[str, Any]
    tries: int = 0
    status: int | None = None  # the final answer's status; None: gave up
    answer: dict[str, Any] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)  # every unknown outcome seen

    @property
    def final(self) -> bool:
        return self.status is not None and not retryable(self.status, self.answer)


def retryable(status: int, body: dict[str, Any]) -> bool:
    """5xx, and 409 ``idempotency.in_progress`` (the first request with the key still runs, or
    died holding it). Other 409s (``payments.invalid_transition``) are final business answers
    that replay identically: retrying them cannot change them."""
    if status >= 500:
        return True
    return status == 409 and body.get("code") == "idempotency.in_progress"


async def send(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    op: Op,
    budget_seconds: float,
    rng: random.Random,
) -> Op:
    """POST ``op`` until a final answer, with the same key every time, within the budget.
    Backoff: capped exponential with jitter, or the server's Retry-After."""
    deadline = time.monotonic() + budget_seconds
    delay = 0.1
    while True:
        op.tries += 1
        wait = delay
        try:
            r = await http.post(
                op.path, json=op.body, headers=headers | {"Idempotency-Key": op.key}
            )
            try:
                body = r.json()
            except ValueError:
                body = {"raw": r.text[:200]}
            op.status, op.answer = r.status_code, body if isinstance(body, dict) else {}
            if not retryable(r.status_code, op.answer):
                return op
            op.history.append(f"{r.status_code} {op.answer.get('code')}")
            if retry_after := r.headers.get("Retry-After"):
                with contextlib.suppress(ValueError):
                    wait = max(wait, float(retry_after))
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            op.history.append(type(exc).__name__)
        if time.monotonic() + wait > deadline:
            op.status = None  # gave up: recorded, and the test fails on it
            return op
        await asyncio.sleep(wait * (0.5 + rng.random()))
        delay = min(delay * 2, 2.0)
