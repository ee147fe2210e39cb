"""``pocketpay up --workers 2`` end to end, on PostgreSQL + NATS JetStream: one parent that
binds the public port and supervises two app workers (gateway + payments + ledger each), the
sandbox PSP and the monitor.

What the tests observe from outside, as an operator would:

* the parent's children, from ``/proc`` (two workers holding the inherited socket, one
  sandbox, one monitor);
* which worker holds each connection to the public port: the kernel's table of established
  TCP sockets (``/proc/net/tcp``) matched with each worker's open descriptors, so "both
  workers serve requests" is seen without any header or log line made for the test;
* a card top-up through the public port reaching the wallet (PSP in the sandbox process, bus
  on NATS, the ledger's consumer in one of the workers);
* SIGTERM to the parent: a clean, bounded stop, every child gone, the port closed; and a
  worker that dies takes the others down with exit status 1.

The tests share one deployment and run in file order; the last one starts its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e import fleet as fl
from tests.e2e.fleet import until
from tests.support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.nats]

WORKERS = 2
PASSWORD = "correct-horse-battery"
READY_TIMEOUT_SECONDS = 60.0
# The parent's own bound (cli.STOP_TIMEOUT_SECONDS is 20 s) plus room for a loaded machine.
STOP_BOUND_SECONDS = 30.0
FAST = {
    "POCKETPAY_SANDBOX__SETTLE_DELAY_SECONDS": "0.5",
    "POCKETPAY_PSP__SETTLE_POLL_SECONDS": "0.2",
    "POCKETPAY_PSP__ATTEMPT_RETRY_SECONDS": "2",
    "POCKETPAY_BUS__RELAY_POLL_SECONDS": "0.1",
    "POCKETPAY_BUS__RETRY_DELAY_MS": "50",
    "POCKETPAY_MONITOR__INTERVAL_SECONDS": "0.5",
    "POCKETPAY_MONITOR__POLL_TIMEOUT_SECONDS": "2",
}


@dataclass
class Services:
    workdir: Path
    database_url: str
    nats_url: str
    stream: str


@dataclass
class Up:
    """One ``pocketpay up --workers`` parent and what it was started with."""

    popen: subprocess.Popen[bytes]
    port: int
    sandbox_port: int
    monitor_port: int
    log_path: Path
    env: dict[str, str]
    seen: set[int] = field(default_factory=set)  # every child pid observed

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> dict[int, list[str]]:
        """The parent's live children: pid -> command line."""
        found: dict[int, list[str]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                # "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
                fields = stat.rsplit(")", 1)[1].split()
                if int(fields[1]) == self.popen.pid and fields[0] != "Z":
                    cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
                    found[int(entry.name)] = cmd.split("\0")[:-1]
        self.seen |= set(found)
        return found

    def workers(self) -> list[int]:
        return sorted(pid for pid, cmd in self.children().items() if "--fd" in cmd)


def _alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie, dead but not reaped, does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    workdir = tmp_path_factory.mktemp("e2e-workers")
    db_name = f"pocketpay_e2e_workers_{uuid.uuid4().hex[:6]}"
    database_url = fl.fresh_database(db_name)
    try:
        with fl.nats_server(workdir) as nats_url:
            stream = f"POCKETPAY_E2E_{os.urandom(4).hex().upper()}"
            fl.reset_stream(nats_url, stream)
            try:
                yield Services(workdir, database_url, nats_url, stream)
            finally:
                fl.reset_stream(nats_url, stream)
    finally:
        fl.drop_database(db_name)


def start_up(services: Services, name: str) -> Up:
    """``pocketpay up --workers 2`` on free ports. The internal token and the JWT secret are
    not given: the parent generates them into var_dir once and hands them to the children."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POCKETPAY_")} | {
        "POCKETPAY_DATABASE_URL": services.database_url,
        "POCKETPAY_BUS_URL": services.nats_url,
        "POCKETPAY_BUS__STREAM": services.stream,
        "POCKETPAY_VAR_DIR": str(services.workdir / "var"),
        "PYTHONUNBUFFERED": "1",
        **FAST,
    }
    ports = [free_port() for _ in range(3)]
    log_path = services.workdir / f"{name}.log"
    with log_path.open("wb") as out:
        popen = subprocess.Popen(
            [
                *(sys.executable, "-m", "pocketpay.cli", "up", "--workers", str(WORKERS)),
                *("--port", str(ports[0]), "--sandbox-port", str(ports[1])),
                *("--monitor-port", str(ports[2])),
            ],
            env=env,
            cwd=services.workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the test runner is ours to relay
        )
    return Up(popen, ports[0], ports[1], ports[2], log_path, env)


def wait_ready(up: Up) -> None:
    """The public port, the sandbox and the monitor answer, and the monitor sees every
    component up through the workers' public health routes."""

    def ready() -> bool:
        if up.popen.poll() is not None:
            raise AssertionError(f"up exited with {up.popen.returncode}:\n{up.log()[-4000:]}")
        try:
            public = httpx.get(f"{up.url}/readyz", timeout=2)
            sandbox = httpx.get(f"http://127.0.0.1:{up.sandbox_port}/healthz", timeout=2)
            status = httpx.get(f"http://127.0.0.1:{up.monitor_port}/status", timeout=2)
        except httpx.HTTPError:
            return False
        components = status.json().get("components", {}) if status.status_code == 200 else {}
        return (
            public.status_code == 200
            and sandbox.status_code == 200
            and {n: c.get("status") for n, c in components.items()}
            # No SMTP server here: notifications reports itself degraded (emails wait).
            == {n: "ok" for n in ("gateway", "payments", "ledger", "billing", "sandbox")}
            | {"notifications": "degraded"}
        )

    try:
        until(ready, READY_TIMEOUT_SECONDS, "up --workers ready")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{up.log()[-4000:]}") from None


def stop(up: Up) -> int | None:
    """SIGTERM the parent (bounded; then SIGKILL it and any child it left). Idempotent."""
    if up.popen.poll() is None:
        up.popen.send_signal(signal.SIGTERM)
        try:
            up.popen.wait(timeout=STOP_BOUND_SECONDS)
        except subprocess.TimeoutExpired:
            up.popen.kill()
            up.popen.wait(timeout=5)
            for pid in up.seen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return None
    return up.popen.returncode


@pytest.fixture(scope="module")
def up(services: Services) -> Iterator[Up]:
    running = start_up(services, "up")
    try:
        wait_ready(running)
        yield running
    finally:
        stop(running)


# -- observing connections -------------------------------------------------------------------


def open_connection(port: int) -> socket.socket:
    """A keep-alive connection that has had one ``GET /healthz`` answered 200; left open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk, "connection closed mid-body"
        body += chunk
    return sock


def established(server_port: int, client_ports: set[int]) -> dict[int, int]:
    """Server-side sockets of the given connections: socket inode -> client port, read from
    the kernel's TCP table (state 01 is ESTABLISHED)."""
    found: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                local_port = int(cols[1].rsplit(":", 1)[1], 16)
                remote_port = int(cols[2].rsplit(":", 1)[1], 16)
                if local_port == server_port and remote_port in client_ports and cols[3] == "01":
                    found[int(cols[9])] = remote_port
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


# -- a tiny API driver -----------------------------------------------------------------------


def signup(http: httpx.Client) -> dict[str, str]:
    email = f"w-{uuid.uuid4().hex[:8]}@example.com"
    r = http.post("/api/v1/auth/signup", json={"email": email, "password": PASSWORD, "name": "w"})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def usd_wallet(http: httpx.Client, auth: dict[str, str]) -> dict[str, Any]:
    r = http.get("/api/v1/wallets", headers=auth)
    assert r.status_code == 200, r.text
    return next((w for w in r.json()["data"] if w["currency"] == "USD"), {})


# -- tests -----------------------------------------------------------------------------------


def test_the_parent_supervises_two_workers_the_sandbox_and_the_monitor(up: Up) -> None:
    children = up.children()
    commands = sorted(" ".join(cmd[cmd.index("serve") :]) for cmd in children.values())
    worker = f"serve gateway,payments,ledger,billing,notifications --port {up.port} --fd "
    assert len(commands) == WORKERS + 2, commands
    assert sum(c.startswith(worker) for c in commands) == WORKERS, commands
    assert f"serve sandbox --port {up.sandbox_port}" in commands
    assert f"serve monitor --port {up.monitor_port}" in commands
    # One listening socket, bound by the parent: the workers hold it, the parent let go.
    listening = {
        pid for pid in up.workers() if socket_inodes(pid) & set(_listening_inodes(up.port))
    }
    assert len(listening) == WORKERS, listening
    assert not socket_inodes(up.popen.pid) & set(_listening_inodes(up.port))


def _listening_inodes(port: int) -> list[int]:
    inodes = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "0A":  # LISTEN
                    inodes.append(int(cols[9]))
    return inodes


def test_both_workers_answer_on_the_public_port(up: Up) -> None:
    """Connections opened one after another on the one port are accepted by both workers:
    each connection (answered 200) is held by the worker that accepted it."""
    workers = up.workers()
    assert len(workers) == WORKERS
    held: dict[int, int] = {}
    connections: list[socket.socket] = []
    try:
        for _ in range(10):  # rounds: a worker may accept a few connections in a row
            for _ in range(8):
                connections.append(open_connection(up.port))
                time.sleep(0.01)
            clients = {c.getsockname()[1] for c in connections}
            by_inode = established(up.port, clients)
            held = {pid: len(socket_inodes(pid) & set(by_inode)) for pid in workers}
            if all(held.values()):
                break
        assert sum(held.values()) == len(connections), (held, len(connections))
        assert all(held.values()), f"connections per worker: {held}"
    finally:
        for c in connections:
            c.close()


def test_a_card_top_up_reaches_the_wallet(up: Up) -> None:
    with httpx.Client(base_url=up.url, timeout=15) as http:
        auth = signup(http)
        body = {
            "amount_minor": 5000,
            "currency": "USD",
            "payment_method": "pm_card_visa",
            "capture_method": "automatic",
        }
        key = {"Idempotency-Key": uuid.uuid4().hex}
        r = http.post("/api/v1/payments", json=body, headers=auth | key)
        assert r.status_code == 202, r.text
        pid = r.json()["id"]

        def settled() -> dict[str, Any] | None:
            p: dict[str, Any] = http.get(f"/api/v1/payments/{pid}", headers=auth).json()
            return p if p["status"] == "settled" else None

        assert until(settled, 30, f"payment {pid} settled")["amount_captured_minor"] == 5000
        wallet = until(
            lambda: (w := usd_wallet(http, auth)).get("available_minor") == 5000 and w,
            30,
            "wallet credited",
        )
        assert wallet["posted_minor"] == 5000
        # The idempotency store is the database, whichever worker takes the retry.
        for _ in range(4):
            with httpx.Client(base_url=up.url, timeout=15) as fresh:  # a new connection
                again = fresh.post("/api/v1/payments", json=body, headers=auth | key)
            assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
            assert again.json()["id"] == pid


def test_sigterm_stops_the_parent_and_every_child_in_bounded_time(up: Up) -> None:
    children = set(up.children())
    assert len(children) == WORKERS + 2
    started = time.monotonic()
    code = stop(up)
    took = time.monotonic() - started
    assert code == 0, (code, up.log()[-4000:])
    assert took < STOP_BOUND_SECONDS
    assert not [pid for pid in up.seen if _alive(pid)], "children left running"
    log = up.log()
    for bad in ("Traceback", "did not stop", "exited with"):
        assert bad not in log, log[-4000:]
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", up.port), timeout=2):
        pass
    check = subprocess.run(
        [sys.executable, "-m", "pocketpay.cli", "check", "--no-psp"],
        env=up.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "ledger consistent" in check.stdout


def test_a_worker_that_dies_stops_the_rest_with_status_1(services: Services) -> None:
    up = start_up(services, "up-dies")
    try:
        wait_ready(up)
        victim = up.workers()[0]
        os.kill(victim, signal.SIGKILL)
        up.popen.wait(timeout=STOP_BOUND_SECONDS)
        assert up.popen.returncode == 1, up.log()[-4000:]
        assert "worker-" in up.log() and f"exited with {-signal.SIGKILL}" in up.log()
        assert not [pid for pid in up.seen if _alive(pid)], "children left running"
    finally:
        stop(up)
