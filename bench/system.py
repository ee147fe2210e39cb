"""What machine the figures come from, and who used the CPU during a phase (from /proc)."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")


def _first(path: str, key: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return "unknown"


def _run(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


async def _pg_version(admin_url: str) -> str:
    try:
        import asyncpg

        conn = await asyncpg.connect(admin_url, timeout=3)
        try:
            settings = {
                r["name"]: r["setting"]
                for r in await conn.fetch(
                    "SELECT name, setting FROM pg_settings WHERE name = ANY($1)",
                    ["shared_buffers", "synchronous_commit", "fsync", "max_connections"],
                )
            }
            return str(await conn.fetchval("SELECT version()")) + f" {settings}"
        finally:
            await conn.close()
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"


async def _nats_version(url: str) -> str:
    try:
        import nats

        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            v = nc.connected_server_version
            return f"nats-server {v.major}.{v.minor}.{v.patch} (JetStream)"
        finally:
            await nc.close()
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"


async def machine_info(pg_admin_url: str, nats_url: str, mode: str) -> dict[str, Any]:
    mem_kb = _first("/proc/meminfo", "MemTotal").split()[0]
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu_model": _first("/proc/cpuinfo", "model name"),
        "memory_gib": round(int(mem_kb) / 1024 / 1024, 1) if mem_kb.isdigit() else None,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "sqlite": __import__("sqlite3").sqlite_version,
    }
    versions = {}
    for pkg in ("uvicorn", "fastapi", "starlette", "sqlalchemy", "asyncpg", "httpx", "uvloop"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[pkg] = version(pkg)
    info["packages"] = versions
    if mode == "postgres":
        info["postgresql"] = await _pg_version(pg_admin_url)
        info["nats"] = await _nats_version(nats_url)
    return info


# -- CPU accounting -----------------------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: [state, ppid, ...] ([] if it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return raw.rsplit(")", 1)[1].split()


def _proc_cpu(pid: int) -> float:
    """utime + stime of one process, in seconds (0 if it is gone)."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICK if fields else 0.0


def _tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and all its descendants (``up --workers N`` runs several
    processes). Each live process counts its own utime + stime plus cutime + cstime, the time
    of the children it has already reaped, so a worker that exits is not lost. Children are
    found from the ppid field of every /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if len(fields) < 15:
            continue
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        cpu[pid] = sum(int(f) for f in fields[11:15]) / TICK
    total, todo, seen = 0.0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += cpu.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


def tree_pids(root: int) -> list[int]:
    """``root`` and its descendants' pids (for the profiler and the log)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _pids_named(name: str, cmdline_has: str = "") -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if entry.joinpath("comm").read_text().strip() != name:
                continue
            if cmdline_has and cmdline_has not in entry.joinpath("cmdline").read_text():
                continue
            pids.append(int(entry.name))
    return pids


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies summed over all CPUs, from /proc/stat."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in parts[:8]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


@dataclass
class CpuSnapshot:
    at: float
    server: float
    postgres: float
    nats: float
    loadgen: float
    busy: float
    total: float


class CpuMeter:
    """Snapshots CPU seconds of the server, PostgreSQL, NATS and this load generator.

    Server: the whole process tree under ``server_pid`` (one process today; with
    ``up --workers N`` the app workers and the sandbox are its children).

    PostgreSQL: only the backends serving ``pg_database`` (their process title names it), so
    other databases' work on a shared server is not counted (nor are WAL writer and
    checkpointer). NATS: ``nats_pid`` only, when given."""

    def __init__(self, server_pid: int, pg_database: str = "", nats_pid: int | None = None):
        self.server_pid = server_pid
        self.pg_database = pg_database
        self.nats_pid = nats_pid

    def snapshot(self) -> CpuSnapshot:
        t = os.times()
        busy, total = _machine_busy()
        pg = _pids_named("postgres", f" {self.pg_database} ") if self.pg_database else []
        nats = [self.nats_pid] if self.nats_pid else _pids_named("nats-server")
        return CpuSnapshot(
            at=time.monotonic(),
            server=_tree_cpu(self.server_pid),
            postgres=sum(_proc_cpu(p) for p in pg),
            nats=sum(_proc_cpu(p) for p in nats),
            loadgen=t.user + t.system,
            busy=busy,
            total=total,
        )

    @staticmethod
    def usage(a: CpuSnapshot, b: CpuSnapshot) -> dict[str, float]:
        """CPU use between two snapshots, in percent of one core (200 = both cores busy)."""
        wall = max(b.at - a.at, 1e-9)
        cores = os.cpu_count() or 1
        out = {  # a PostgreSQL backend that exits in between takes its CPU time with it
            name: round(max(0.0, 100 * (getattr(b, name) - getattr(a, name)) / wall), 1)
            for name in ("server", "postgres", "nats", "loadgen")
        }
        total = b.total - a.total
        out["machine"] = round(100 * cores * (b.busy - a.busy) / total, 1) if total else 0.0
        # Anything else running on the machine meanwhile (other jobs skew the figures).
        mine = sum(out[k] for k in ("server", "postgres", "nats", "loadgen"))
        out["other"] = round(max(0.0, out["machine"] - mine), 1)
        return out


def machine_busy_percent(seconds: float = 1.0) -> float:
    """How busy the whole machine is right now, in percent of one core."""
    a = _machine_busy()
    time.sleep(seconds)
    b = _machine_busy()
    total = b[1] - a[1]
    return round(100 * (os.cpu_count() or 1) * (b[0] - a[0]) / total, 1) if total else 0.0
