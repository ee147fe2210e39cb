"""PocketPay benchmark: ``python -m bench.run [--mode embedded|postgres] [--clients 64]
[--seconds 10] [--which reference,creates,e2e,sustained,transfers,hot,balance,ceiling]
[--open-rate auto|N|off] [--workers N]``.

Every phase group starts its own ``pocketpay up`` subprocess on a fresh database (a fresh
SQLite var dir, or a fresh PostgreSQL database + JetStream stream), so the background work one
phase leaves behind (a payment backlog) does not skew the next. The load generator is a
closed loop of ``--clients`` asyncio tasks, one keep-alive connection each (aiohttp by
default, ``--http-client httpx`` for the old one), on loopback; the open-loop figures use a
fixed arrival schedule instead (see bench/load.py ``open_loop``).

Figures are reported beside yardsticks measured in the same run (the machine's speed drifts
2x hour to hour, so the ratios are what compare across runs): the reference app
(bench/reference_app.py) and the ceilings.

Phases:
  reference  bench/reference_app.py (FastAPI + asyncpg, or aiosqlite in embedded mode: only the
             three inserts of a create in one transaction; a one-SELECT read) under uvicorn as
             PocketPay runs, on a fresh database, with the same clients, warm-up and window
             as creates (reads: as balance's concurrent reads). Ratios PocketPay/reference.
  creates    POST /api/v1/payments, rate and latency at --clients concurrent clients; then
             (--open-rate) an open loop at half that rate on a fresh server: p50/p95/p99 from
             each request's scheduled time, dropped/late counted.
  e2e        a few payments one at a time on an idle system (create -> wallet credited), then
             a burst of --e2e-payments payments from --clients clients and the wait until the
             ledger has posted every capture (wallet credited): rate = payments / (first
             create -> last posting); per-payment create->posted latency from the rows' own
             timestamps; every wallet is then checked through GET /api/v1/wallets.
  sustained  payments offered open-loop at --e2e-rate for --e2e-seconds (default 60) on a fresh
             server; created minus ledger-posted (the backlog) sampled every second; reports
             the posted rate and whether the backlog grew (its slope over the second half).
  transfers  POST /api/v1/transfers between --clients pre-funded wallets (random recipient);
             then (--open-rate) an open loop at half that rate.
  hot        the same, every transfer into one wallet.
  fx         currency conversions: each operation a quote (1.00 USD to EUR) and its
             conversion (two requests), from --clients funded wallets.
  balance    GET /api/v1/wallets latency for a wallet with 100,000 ledger entries and one with
             10 (seeded in bulk), the first page of its entries, and its balance at a time in
             the middle of its history (GET /accounts/{id}/balance?at=).
  ceiling    the issue's reference ceilings measured now (PostgreSQL mode), and CPU speed.

Users are seeded directly (one real signup; the others reuse its password hash and get tokens
minted with the server's JWT secret): argon2 signups would dominate the set-up time.
Optional: --profile DIR runs ``py-spy record`` on the server during each measured window;
``python -m bench.profile_summary DIR/<mode>-<phase>.collapsed --main-thread`` summarizes.

Results: a table on stdout and bench/results/<mode>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from bench import seed
from bench.ceiling import ceilings, python_speed
from bench.load import (
    HTTP_CLIENTS,
    Clients,
    LoadResult,
    Reply,
    closed_loop,
    idem_headers,
    latency_summary,
    new_client,
    open_loop,
)
from bench.server import PG_ADMIN_URL, Server, private_nats, running_reference, running_server
from bench.system import CpuMeter, machine_busy_percent, machine_info

PHASES = (
    "reference",
    "creates",
    "e2e",
    "sustained",
    "transfers",
    "hot",
    "fx",
    "balance",
    "ceiling",
)
# --e2e-rate's default per mode (payments offered per second for --e2e-seconds): a rate the
# pipeline has to sustain on the way to the targets, so "backlog grew" is the news.
E2E_RATE = {"embedded": 50.0, "postgres": 100.0}
RESULTS = Path(__file__).with_name("results")
PAYMENT = {
    "amount_minor": 1000,
    "currency": "USD",
    "payment_method": "pm_card_visa",
    "capture_method": "automatic",
}


def per_op(cpu: dict[str, float], rate: float) -> dict[str, float]:
    """CPU milliseconds per operation of each process group: robust to a shared machine
    (a busy neighbour slows the rate but barely changes the CPU one operation costs)."""
    if rate <= 0:
        return {}
    keys = ("server", "postgres", "nats", "loadgen")
    return {k: round(10 * cpu[k] / rate, 2) for k in keys if cpu.get(k)}


def git_state() -> dict[str, str]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
        return out.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty_src": git("status", "--short", "src"),
    }


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Profiler:
    """Optional: ``py-spy record`` on the server during a measured window (if installed)."""

    def __init__(self, out_dir: Path | None, mode: str, workers: int = 1) -> None:
        self.out_dir = out_dir
        self.mode = mode
        self.workers = workers

    def start(self, server: Server, phase: str, seconds: float) -> subprocess.Popen[bytes] | None:
        if self.out_dir is None:
            return None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        out = self.out_dir / f"{self.mode}-{phase}.collapsed"
        cmd = [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "--pid",
            str(server.pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            "200",
            "--format",
            "raw",
            *(["--subprocesses"] if self.workers > 1 else []),
            "--output",
            str(out),
        ]
        try:
            return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError as exc:
            log(f"py-spy not available ({exc}); no profile")
            return None

    @staticmethod
    async def stop(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None:
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.terminate()


async def measured(
    cfg: argparse.Namespace,
    server: Server,
    phase: str,
    profiler: Profiler,
    run: Callable[[float], Awaitable[Any]],
) -> tuple[Any, dict[str, float]]:
    """Warm up, then run the measured window with CPU accounting (and the profiler)."""
    warm = await run(cfg.warmup) if cfg.warmup > 0 else None
    meter = CpuMeter(server.pid, server.pg_database, server.nats_pid)
    prof = profiler.start(server, phase, cfg.seconds)
    a = meter.snapshot()
    result = await run(cfg.seconds)
    b = meter.snapshot()
    if warm is not None:
        result.warmup_ok = warm.ok
    await Profiler.stop(prof)
    return result, CpuMeter.usage(a, b) | {"window_s": round(b.at - a.at, 2)}


def summarize(result: LoadResult, cpu: dict[str, float]) -> dict[str, Any]:
    """The load result with CPU % and CPU ms per successful operation over the CPU window."""
    out = result.summary() | {"cpu_percent": cpu}
    out["cpu_ms_per_op"] = per_op(cpu, result.ok / cpu["window_s"] if cpu["window_s"] else 0)
    return out


def open_rate(cfg: argparse.Namespace, closed_rate: float) -> float:
    """--open-rate: 'auto' = half the closed-loop maximum of the same run, N = N per s."""
    if cfg.open_rate in ("off", "0", ""):
        return 0.0
    if cfg.open_rate == "auto":
        return round(closed_rate / 2, 1)
    return float(cfg.open_rate)


async def measured_open(
    cfg: argparse.Namespace,
    server: Server,
    phase: str,
    profiler: Profiler,
    rate: float,
    req: Callable[[int, int], Awaitable[Reply]],
    ok_status: int,
) -> dict[str, Any]:
    log(f"  {phase}: open loop at {rate}/s")
    result, cpu = await measured(
        cfg,
        server,
        phase,
        profiler,
        lambda s: open_loop(rate, s, cfg.clients, req, ok_status),
    )
    return summarize(result, cpu)


async def settle(server: Server, limit_s: float = 15.0, below_percent: float = 30.0) -> float:
    """Wait (bounded) until the server's own CPU use drops, i.e. the work a closed loop left
    behind (events, consumers) is done, before the next measured window."""
    meter = CpuMeter(server.pid)
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        a = meter.snapshot()
        await asyncio.sleep(1.0)
        if CpuMeter.usage(a, meter.snapshot())["server"] < below_percent:
            break
    return round(time.monotonic() - t0, 1)


# -- phases -------------------------------------------------------------------------------------


def ref_users(count: int) -> list[dict[str, Any]]:
    """The reference app's callers: a distinct bearer token each (it does not verify JWTs)."""
    return [
        {"headers": {"Authorization": f"Bearer ref{i}-{uuid.uuid4().hex}"}} for i in range(count)
    ]


async def phase_reference(cfg: argparse.Namespace, profiler: Profiler) -> dict[str, Any]:
    """The yardstick beside creates and GET /wallets, same load generator and settings."""
    out: dict[str, Any] = {}
    async with (
        running_reference(cfg.mode, "reference", **cfg.services) as server,
        Clients(server.base_url, cfg.clients, cfg.http_client) as pool,
    ):
        users = ref_users(cfg.clients)

        async def create(i: int, _n: int) -> Reply:
            return await pool.post(i, "/api/v1/payments", PAYMENT, idem_headers(users[i]))

        async def read(i: int, _n: int) -> Reply:
            return await pool.get(i, "/api/v1/wallets", users[i]["headers"])

        result, cpu = await measured(
            cfg, server, "reference", profiler, lambda s: closed_loop(cfg.clients, s, create, 202)
        )
        out["creates"] = summarize(result, cpu)
        rate = open_rate(cfg, out["creates"]["rate_per_s"])
        if rate:
            out["creates_open"] = await measured_open(
                cfg, server, "reference-open", profiler, rate, create, 202
            )
        cfg_half = argparse.Namespace(**vars(cfg) | {"seconds": cfg.seconds / 2, "warmup": 1})
        result, cpu = await measured(
            cfg_half,
            server,
            "reference-reads",
            profiler,
            lambda s: closed_loop(cfg.clients, s, read, 200),
        )
        out["reads"] = summarize(result, cpu)
    return out


# The creates phases measure the create path itself. Their closed loop outruns the pipeline
# behind it by far, so admission control (psp.max_unauthorized) would shed most creates after
# two seconds: it is off there, and on (the default) in the e2e and sustained phases.
NO_ADMISSION = {"POCKETPAY_PSP__MAX_UNAUTHORIZED": "0"}


async def phase_creates(cfg: argparse.Namespace, profiler: Profiler) -> dict[str, Any]:
    async with (
        running_server(cfg.mode, "creates", settings=NO_ADMISSION, **cfg.services) as server,
        new_client(server.base_url, 4) as http,
        Clients(server.base_url, cfg.clients, cfg.http_client) as pool,
    ):
        users = await seed.seed_users(http, server.db_url, server.jwt_secret, cfg.clients, "c")
        log(f"  {len(users)} users signed up")

        async def req(i: int, _n: int) -> Reply:
            return await pool.post(i, "/api/v1/payments", PAYMENT, idem_headers(users[i]))

        result, cpu = await measured(
            cfg,
            server,
            "creates",
            profiler,
            lambda s: closed_loop(cfg.clients, s, req, 202),
        )
        statuses = await seed.payment_statuses(server.db_url)
    out = summarize(result, cpu) | {"payment_statuses_at_end": statuses}
    rate = open_rate(cfg, out["rate_per_s"])
    if rate:
        # A fresh server: the closed loop leaves a pipeline backlog (authorizations, webhooks,
        # postings) that would keep this one busy through the next window.
        out["open"] = await _creates_open(cfg, profiler, rate)
    return out


async def _creates_open(cfg: argparse.Namespace, profiler: Profiler, rate: float) -> dict[str, Any]:
    async with (
        running_server(cfg.mode, "creates-open", settings=NO_ADMISSION, **cfg.services) as server,
        new_client(server.base_url, 4) as http,
        Clients(server.base_url, cfg.clients, cfg.http_client) as pool,
    ):
        users = await seed.seed_users(http, server.db_url, server.jwt_secret, cfg.clients, "o")

        async def req(i: int, _n: int) -> Reply:
            return await pool.post(i, "/api/v1/payments", PAYMENT, idem_headers(users[i]))

        return await measured_open(cfg, server, "creates-open", profiler, rate, req, 202)


async def _solo_e2e(
    http: httpx.AsyncClient, user: dict[str, Any], count: int
) -> tuple[list[float], set[str]]:
    """Payments one at a time on an idle system: create, then poll the wallet until credited."""
    latencies, ids = [], set()
    posted = 0
    for _ in range(count):
        t0 = time.perf_counter()
        r = await http.post("/api/v1/payments", json=PAYMENT, headers=idem_headers(user))
        r.raise_for_status()
        ids.add(r.json()["id"])
        while True:
            w = (await http.get("/api/v1/wallets", headers=user["headers"])).json()["data"]
            now_posted = w[0]["posted_minor"] if w else 0
            if now_posted >= posted + PAYMENT["amount_minor"]:
                posted = now_posted
                break
            if time.perf_counter() - t0 > 30:
                raise RuntimeError("a payment was not credited within 30 s on an idle system")
            await asyncio.sleep(0.005)
        latencies.append(time.perf_counter() - t0)
    return latencies, ids


def _steady_rate(progress: list[tuple[float, int]], total: int) -> float:
    """Postings per second between 10% and 90% of the final count (the pipeline's pace once
    it is busy, without its start-up and the tail)."""
    if total < 10 or len(progress) < 3:
        return 0.0
    lo = next((p for p in progress if p[1] >= 0.1 * total), None)
    hi = next((p for p in progress if p[1] >= 0.9 * total), progress[-1])
    if lo is None or hi[0] <= lo[0]:
        return 0.0
    return round((hi[1] - lo[1]) / (hi[0] - lo[0]), 1)


async def phase_e2e(cfg: argparse.Namespace, profiler: Profiler) -> dict[str, Any]:
    async with (
        running_server(cfg.mode, "e2e", **cfg.services) as server,
        new_client(server.base_url, 4) as http,
        Clients(server.base_url, cfg.clients, cfg.http_client) as pool,
    ):
        users = await seed.seed_users(http, server.db_url, server.jwt_secret, cfg.clients + 1, "e")
        solo, users = users[-1], users[:-1]
        idle, idle_ids = await _solo_e2e(http, solo, cfg.e2e_idle)
        log(f"  idle create->credited p50 {latency_summary(idle)['p50_ms']} ms")

        sent = [0] * len(users)

        async def req(i: int, _n: int) -> Reply:
            r = await pool.post(i, "/api/v1/payments", PAYMENT, idem_headers(users[i]))
            if r.status_code == 202:
                sent[i] += 1
            return r

        meter = CpuMeter(server.pid, server.pg_database, server.nats_pid)
        engine = seed.engine_for(server.db_url)
        prof = profiler.start(server, "e2e", min(cfg.e2e_timeout, 30))
        a = meter.snapshot()
        t0 = time.perf_counter()
        try:
            creates = await closed_loop(
                cfg.clients, cfg.e2e_timeout / 2, req, 202, max_requests=cfg.e2e_payments
            )
            created_at = time.perf_counter() - t0
            want = sum(sent) + len(idle)
            posted = 0
            progress = []
            while time.perf_counter() - t0 < cfg.e2e_timeout:
                posted = await seed.count_posted_captures(engine)
                progress.append((round(time.perf_counter() - t0, 2), posted - len(idle)))
                if posted >= want:
                    break
                await asyncio.sleep(0.25)
            waited = time.perf_counter() - t0
        finally:
            await engine.dispose()
        b = meter.snapshot()
        await Profiler.stop(prof)
        # Through the public API: every wallet shows what its user paid.
        short = 0
        for i, user in enumerate(users):
            w = (await http.get("/api/v1/wallets", headers=user["headers"])).json()["data"]
            if (w[0]["posted_minor"] if w else 0) != sent[i] * PAYMENT["amount_minor"]:
                short += 1
        per_payment = await seed.create_to_posted(server.db_url)
        statuses = await seed.payment_statuses(server.db_url)
        dlq = await seed.dead_letters(server.db_url)
    burst = [v for pid, v in per_payment.items() if pid not in idle_ids]
    burst_posted = posted - len(idle)
    usage = CpuMeter.usage(a, b)
    steady = _steady_rate(progress, burst_posted)
    return {
        "payments": sum(sent),
        "clients": cfg.clients,
        "create_rate_per_s": round(sum(sent) / created_at, 1),
        "created_in_s": round(created_at, 2),
        "all_posted": posted >= want,
        "posted": burst_posted,
        "posted_in_s": round(waited, 2),
        "e2e_rate_per_s": round(burst_posted / waited, 1),
        "e2e_steady_rate_per_s": steady,
        "wallets_short_via_api": short,
        "create_to_posted": latency_summary(burst),
        "idle_create_to_credited": latency_summary(idle) | {"payments": len(idle)},
        "create_latency": latency_summary(creates.latencies),
        "cpu_percent": usage,
        "cpu_ms_per_op": per_op(usage, burst_posted / waited),
        "payment_statuses_at_end": statuses,
        "dead_letters": dlq,
        "progress": progress[:: max(1, len(progress) // 40)],
    }


def slope_per_s(points: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, value) points: how fast the value grows per second."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    return sum((t - mx) * (v - my) for t, v in points) / var if var else 0.0


def e2e_rate(cfg: argparse.Namespace, results: dict[str, Any]) -> float:
    """--e2e-rate: N per s; 'auto' = 80 % of the burst's steady e2e rate in this run (what
    the pipeline just showed it can post), else the mode's default."""
    if cfg.e2e_rate == "auto":
        steady = results.get("e2e", {}).get("e2e_steady_rate_per_s", 0.0)
        if steady:
            return round(0.8 * steady, 1)
        log("  --e2e-rate auto needs the e2e burst in the same run; using the mode's default")
        return E2E_RATE[cfg.mode]
    return float(cfg.e2e_rate) if cfg.e2e_rate else E2E_RATE[cfg.mode]


async def phase_sustained(
    cfg: argparse.Namespace, profiler: Profiler, rate: float
) -> dict[str, Any]:
    """Payments offered open-loop at ``rate`` for --e2e-seconds while the backlog (created
    minus ledger-posted captures) is sampled every second from the database."""
    seconds = cfg.e2e_seconds
    async with (
        running_server(cfg.mode, "sustained", **cfg.services) as server,
        new_client(server.base_url, 4) as http,
        Clients(server.base_url, cfg.clients, cfg.http_client) as pool,
    ):
        users = await seed.seed_users(http, server.db_url, server.jwt_secret, cfg.clients, "s")

        async def req(i: int, _n: int) -> Reply:
            return await pool.post(i, "/api/v1/payments", PAYMENT, idem_headers(users[i]))

        engine = seed.engine_for(server.db_url)
        samples: list[tuple[float, int, int]] = []  # (s since start, created, posted)
        t0 = time.perf_counter()

        async def sample() -> None:
            while True:
                created, posted = await seed.backlog_counts(engine)
                samples.append((round(time.perf_counter() - t0, 2), created, posted))
                await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - t0) % 1.0))

        log(f"  offering {rate}/s for {seconds:.0f} s")
        meter = CpuMeter(server.pid, server.pg_database, server.nats_pid)
        prof = profiler.start(server, "sustained", min(seconds, 30))
        a = meter.snapshot()
        sampler = asyncio.create_task(sample())
        try:
            creates = await open_loop(rate, seconds, cfg.clients, req, 202)
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            b = meter.snapshot()
            await Profiler.stop(prof)
            final = await seed.backlog_counts(engine)
            await engine.dispose()
        dlq = await seed.dead_letters(server.db_url)
    cpu = CpuMeter.usage(a, b) | {"window_s": round(b.at - a.at, 2)}
    window = [x for x in samples if x[0] <= seconds]
    half = [x for x in window if x[0] >= seconds / 2]
    backlog_half = [(t, c - p) for t, c, p in half]
    slope = slope_per_s(backlog_half)
    posted_rate = (
        (half[-1][2] - half[0][2]) / (half[-1][0] - half[0][0])
        if len(half) >= 2 and half[-1][0] > half[0][0]
        else 0.0
    )
    # Growing: the backlog gains more than 2 % of the offered rate (min 0.5) per second.
    grew = slope > max(0.5, 0.02 * rate)
    posted_total = final[1]
    return {
        "offered_rate_per_s": rate,
        "seconds": seconds,
        "create": creates.summary(),
        "created": final[0],
        "posted_at_end": posted_total,
        "posted_rate_per_s": round(posted_total / cpu["window_s"], 1) if cpu["window_s"] else 0,
        "posted_rate_second_half_per_s": round(posted_rate, 1),
        "backlog_at_end": final[0] - final[1],
        "backlog_slope_second_half_per_s": round(slope, 2),
        "backlog_grew": grew,
        "cpu_percent": cpu,
        # Per payment created in the window (while the backlog grows, per posted would charge
        # the creates' CPU to the few postings), and per payment posted.
        "cpu_ms_per_op": per_op(cpu, creates.ok / cpu["window_s"] if cpu["window_s"] else 0),
        "cpu_ms_per_posted": per_op(cpu, posted_total / cpu["window_s"] if cpu["window_s"] else 0),
        "dead_letters": dlq,
        "backlog_samples": [(t, c - p) for t, c, p in window][:: max(1, len(window) // 60)],
    }


async def phase_transfers(
    cfg: argparse.Namespace, profiler: Profiler, which: list[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with (
        running_server(cfg.mode, "transfers", **cfg.services) as server,
        new_client(server.base_url, 4) as http,
        Clients(server.base_url, cfg.clients, cfg.http_client) as pool,
    ):
        users = await seed.seed_users(http, server.db_url, server.jwt_secret, cfg.clients + 1, "t")
        hot, senders = users[-1], users[:-1]
        await seed.fund_wallets(server.db_url, [u["id"] for u in senders], 10**12, "USD")
        rng = random.Random(7)

        def body(to: dict[str, Any]) -> dict[str, Any]:
            return {"recipient": to["email"], "amount_minor": 1, "currency": "USD"}

        async def many(i: int, _n: int) -> Reply:
            j = rng.randrange(len(senders) - 1)
            to = senders[j + 1 if j >= i else j]
            return await pool.post(i, "/api/v1/transfers", body(to), idem_headers(senders[i]))

        async def into_hot(i: int, _n: int) -> Reply:
            return await pool.post(i, "/api/v1/transfers", body(hot), idem_headers(senders[i]))

        async def convert(i: int, _n: int) -> Reply:
            """A quote (1.00 USD to EUR) and its conversion: one operation, two requests."""
            sell = {"sell_currency": "USD", "buy_currency": "EUR", "sell_amount_minor": 100}
            quote = await pool.post(i, "/api/v1/fx/quotes", sell, idem_headers(senders[i]))
            if quote.status_code != 201:
                return quote
            chosen = {"quote_id": quote.json()["id"]}
            return await pool.post(i, "/api/v1/conversions", chosen, idem_headers(senders[i]))

        for phase, req in (("transfers", many), ("hot", into_hot), ("fx", convert)):
            if phase not in which:
                continue
            log(f"  {phase}")
            result, cpu = await measured(
                cfg,
                server,
                phase,
                profiler,
                lambda s, r=req: closed_loop(cfg.clients, s, r, 201),  # type: ignore[misc]
            )
            out[phase] = summarize(result, cpu)
            rate = open_rate(cfg, out[phase]["rate_per_s"]) if phase == "transfers" else 0.0
            if rate:
                waited = await settle(server)
                out[phase]["open"] = await measured_open(
                    cfg, server, "transfers-open", profiler, rate, many, 201
                ) | {"settled_before_s": waited}
        problems = await seed.ledger_check(server.db_url)
        hot_wallet = (await http.get("/api/v1/wallets", headers=hot["headers"])).json()["data"]
    for phase in out:
        out[phase]["ledger_check"] = problems[:5] or "consistent"
    if "hot" in out:
        got = hot_wallet[0]["posted_minor"] if hot_wallet else 0
        out["hot"]["hot_wallet_posted_minor"] = got
        out["hot"]["hot_wallet_expected_minor"] = out["hot"]["ok"] + out["hot"]["warmup_ok"]
    return out


async def phase_balance(cfg: argparse.Namespace, profiler: Profiler) -> dict[str, Any]:
    async with (
        running_server(cfg.mode, "balance", **cfg.services) as server,
        new_client(server.base_url, 4) as http,
        Clients(server.base_url, cfg.clients, cfg.http_client) as pool,
    ):
        big, small = await seed.seed_users(http, server.db_url, server.jwt_secret, 2, "b")
        now = datetime.now(UTC)
        seeded_s = await seed.seed_history(server.db_url, big["id"], cfg.history, "USD", now=now)
        await seed.seed_history(server.db_url, small["id"], 10, "USD", now=now)
        log(f"  seeded {cfg.history} entries in {seeded_s:.1f} s")
        for user, n in ((big, cfg.history), (small, 10)):
            w = (await http.get("/api/v1/wallets", headers=user["headers"])).json()["data"]
            assert w and w[0]["posted_minor"] == n, w

        async def timed(path: str, user: dict[str, Any]) -> float:
            t0 = time.perf_counter()
            r = await http.get(path, headers=user["headers"])
            r.raise_for_status()
            return time.perf_counter() - t0

        paths = {"wallets": "/api/v1/wallets", "entries": "/api/v1/wallets/USD/entries?limit=20"}
        # The balance at a time in the middle of each history (one index seek, either size).
        at_paths = {
            w: f"/api/v1/accounts/wal_{u['id']}_USD/balance?at="
            + quote(seed.entry_time(now, n, n // 2).isoformat())
            for w, u, n in (("big", big, cfg.history), ("small", small, 10))
        }
        seq: dict[str, list[float]] = {
            f"{k}_{w}": [] for k in (*paths, "balance_at") for w in ("big", "small")
        }
        for _ in range(5):  # warm
            for p in paths.values():
                await timed(p, big)
                await timed(p, small)
            await timed(at_paths["big"], big)
            await timed(at_paths["small"], small)
        # Interleaved, one request at a time. The entries page is read less often: it is the
        # slow one when it grows with history.
        for i in range(cfg.balance_reads):
            for k, p in paths.items():
                if k == "entries" and i % 5:
                    continue
                seq[f"{k}_big"].append(await timed(p, big))
                seq[f"{k}_small"].append(await timed(p, small))
            seq["balance_at_big"].append(await timed(at_paths["big"], big))
            seq["balance_at_small"].append(await timed(at_paths["small"], small))

        async def read_big(i: int, _n: int) -> Reply:
            return await pool.get(i, "/api/v1/wallets", big["headers"])

        cfg_half = argparse.Namespace(**vars(cfg) | {"seconds": cfg.seconds / 2, "warmup": 1})
        conc, cpu = await measured(
            cfg_half,
            server,
            "balance",
            profiler,
            lambda s: closed_loop(cfg.clients, s, read_big, 200),
        )
        problems = await seed.ledger_check(server.db_url)
    return {
        "history_entries": cfg.history,
        "seed_seconds": round(seeded_s, 1),
        "sequential": {k: latency_summary(v) | {"n": len(v)} for k, v in seq.items()},
        "concurrent_big_wallet_reads": summarize(conc, cpu),
        "ledger_check": problems[:5] or "consistent",
    }


# -- output -------------------------------------------------------------------------------------


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """PocketPay / reference, measured in the same run: rate (how many times slower: the
    reference's rate over PocketPay's), latency and CPU per operation (how many times more)."""
    ref = results.get("reference", {})
    out: dict[str, Any] = {}

    def pair(app: dict[str, Any], yard: dict[str, Any]) -> dict[str, float]:
        r: dict[str, float] = {}
        if app.get("rate_per_s") and yard.get("rate_per_s"):
            r["reference_rate_over_pocketpay"] = round(yard["rate_per_s"] / app["rate_per_s"], 2)
        for k in ("p50_ms", "p99_ms"):
            if app.get(k) and yard.get(k):
                r[f"{k}_pocketpay_over_reference"] = round(app[k] / yard[k], 2)
        a_op, y_op = app.get("cpu_ms_per_op", {}), yard.get("cpu_ms_per_op", {})
        for k in ("server", "postgres"):
            if a_op.get(k) and y_op.get(k):
                r[f"{k}_cpu_per_op_pocketpay_over_reference"] = round(a_op[k] / y_op[k], 2)
        return r

    if "creates" in results and "creates" in ref:
        out["creates"] = pair(results["creates"], ref["creates"])
        if "open" in results["creates"] and "creates_open" in ref:
            out["creates_open"] = pair(results["creates"]["open"], ref["creates_open"])
    if "balance" in results and "reads" in ref:
        out["wallet_reads"] = pair(results["balance"]["concurrent_big_wallet_reads"], ref["reads"])
    return out


def _row(name: str, r: dict[str, Any], rate_key: str = "rate_per_s") -> str:
    cpu = r.get("cpu_percent", {})
    cpu_s = " ".join(
        f"{k[:2]}={cpu[k]:.0f}"
        for k in ("server", "postgres", "nats", "loadgen", "other", "machine")
        if k in cpu
    )
    op = r.get("cpu_ms_per_op", {})
    per = f"{op.get('server', '')!s:>7} {op.get('postgres', '')!s:>7}"
    return (
        f"{name:<34} {r.get(rate_key, 0)!s:>9} {r.get('p50_ms', 0):>8} {r.get('p95_ms', 0):>8} "
        f"{r.get('p99_ms', 0):>8} {r.get('failed', 0):>6} {per}  {cpu_s}"
    )


def table(mode: str, results: dict[str, Any]) -> str:
    head = (
        f"{'PocketPay ' + mode:<34} {'per s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6} {'srv ms':>7} {'pg ms':>7}  CPU % of one core during the window"
    )
    lines = [head, "-" * len(head)]
    ref = results.get("reference", {})
    if "creates" in ref:
        lines.append(_row("reference: 3 INSERTs in 1 tx", ref["creates"]))
    if "creates_open" in ref:
        lines.append(_open_row("  open loop", ref["creates_open"]))
    if "creates" in results:
        lines.append(_row("payment creates", results["creates"]))
        if "open" in results["creates"]:
            lines.append(_open_row("  open loop", results["creates"]["open"]))
    if "reads" in ref:
        lines.append(_row("reference: GET, 1 SELECT", ref["reads"]))
    if "e2e" in results:
        e = results["e2e"]
        lines.append(_row("e2e create->ledger posted", e | e["create_to_posted"], "e2e_rate_per_s"))
        idle = e["idle_create_to_credited"]
        lines.append(_row("  idle: create->wallet credited", idle | {"rate_per_s": "-"}))
    if "sustained" in results:
        u = results["sustained"]
        c = u["create"]
        lines.append(
            _row(f"sustained {u['seconds']:.0f}s: posted/s, create", u | c, "posted_rate_per_s")
            + f"  offered {u['offered_rate_per_s']}/s, created {c['achieved_rate_per_s']}/s, "
            f"dropped {c['dropped']}; backlog {u['backlog_at_end']}, "
            f"{u['backlog_slope_second_half_per_s']:+}/s in the 2nd half: "
            + ("GREW" if u["backlog_grew"] else "steady")
        )
    for name in ("transfers", "hot", "fx"):
        if name in results:
            label = {
                "transfers": "transfers, many wallets",
                "hot": "transfers into 1 hot wallet",
                "fx": "conversions (quote + convert)",
            }[name]
            lines.append(_row(label, results[name]))
            if "open" in results[name]:
                lines.append(_open_row("  open loop", results[name]["open"]))
    if "balance" in results:
        b = results["balance"]
        n = b["history_entries"]
        for key, label in (
            ("wallets_big", f"GET /wallets ({n:,} entries)"),
            ("wallets_small", "GET /wallets (10 entries)"),
            ("entries_big", f"GET entries p.1 ({n:,} entries)"),
            ("entries_small", "GET entries p.1 (10 entries)"),
            ("balance_at_big", f"GET balance?at= ({n:,} entries)"),
            ("balance_at_small", "GET balance?at= (10 entries)"),
        ):
            lines.append(_row(label, b["sequential"][key] | {"rate_per_s": "1 client"}))
        lines.append(_row(f"GET /wallets ({n:,}), concurrent", b["concurrent_big_wallet_reads"]))
    if "ceiling" in results:
        c = results["ceiling"]
        for key, label in (
            ("raw_asyncpg_3_inserts_commit", "ceiling: asyncpg 3 INSERT+COMMIT"),
            ("sqlalchemy_core_3_inserts_commit", "ceiling: SQLAlchemy Core, same"),
            ("asyncpg_100_per_transaction", "ceiling: asyncpg, 100 per tx"),
            ("hot_row_update", "ceiling: 1 hot row UPDATE"),
        ):
            if key in c:
                lines.append(_row(label, c[key]))
        lines.append(f"python: {c['python_ns_per_call']} ns per trivial call (CPU speed now)")
    for name, r in ratios(results).items():
        parts = [f"{k.replace('_pocketpay_over_reference', '')} x{v}" for k, v in r.items()]
        lines.append(f"PocketPay vs reference, {name}: " + ", ".join(parts))
    lines.append(
        "open loop: fixed arrival rate, latency from the scheduled send time; per s = achieved "
        "(offered/dropped/late after the CPU columns). reference_rate_over_pocketpay = how many "
        "times the reference's rate is PocketPay's."
    )
    lines.append(
        "srv ms / pg ms: CPU milliseconds of the server / PostgreSQL per operation. CPU: se=server "
        "po=postgres na=nats lo=load generator ot=other jobs ma=whole machine (200 = 2 cores)."
    )
    return "\n".join(lines)


def _open_row(name: str, r: dict[str, Any]) -> str:
    verdict = "p99<=50ms" if r["p99_target_met"] else "p99>50ms"
    return (
        _row(name, r, "achieved_rate_per_s")
        + f"  offered {r['offered_rate_per_s']}/s, dropped {r['dropped']}, late {r['late']}: "
        + verdict
    )


async def wait_quiet(limit_s: float, threshold: float = 25.0) -> float:
    """The machine is shared: wait (up to ``limit_s``) until other work has calmed down."""
    deadline = time.monotonic() + limit_s
    while True:
        busy = await asyncio.to_thread(machine_busy_percent, 1.0)
        if busy <= threshold or time.monotonic() >= deadline:
            if busy > threshold:
                log(
                    f"machine still {busy}% busy (of one core) with other work: figures will suffer"
                )
            return busy
        log(f"machine {busy}% busy with other work; waiting for it to calm down")
        await asyncio.sleep(2)


async def main_async(cfg: argparse.Namespace) -> dict[str, Any]:
    which = [w.strip() for w in cfg.which.split(",") if w.strip()]
    unknown = set(which) - set(PHASES)
    if unknown:
        raise SystemExit(f"unknown phase(s) {sorted(unknown)}; choose from {PHASES}")
    async with contextlib.AsyncExitStack() as stack:
        if cfg.mode == "postgres" and cfg.nats_url == "private":
            cfg.nats_url = await stack.enter_async_context(private_nats())
        return await run_phases(cfg, which)


async def run_phases(cfg: argparse.Namespace, which: list[str]) -> dict[str, Any]:
    cfg.services = {"pg_admin_url": cfg.pg_admin_url, "nats_url": cfg.nats_url}
    cfg.services["workers"] = cfg.workers
    profiler = Profiler(Path(cfg.profile) if cfg.profile else None, cfg.mode, cfg.workers)
    busy = await wait_quiet(cfg.wait_quiet)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "mode": cfg.mode,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {
            k: getattr(cfg, k)
            for k in (
                "clients",
                "seconds",
                "warmup",
                "which",
                "e2e_payments",
                "e2e_idle",
                "history",
                "balance_reads",
                "open_rate",
                "e2e_seconds",
                "e2e_rate",
                "workers",
                "http_client",
            )
        },
        "machine": await machine_info(cfg.pg_admin_url, cfg.nats_url, cfg.mode),
        "machine_busy_before_percent": busy,
        "git": git_state(),
        "results": {},
    }
    results = report["results"]
    if "reference" in which:
        log("reference")
        results["reference"] = await phase_reference(cfg, profiler)
    if "creates" in which:
        log("creates")
        results["creates"] = await phase_creates(cfg, profiler)
    if "e2e" in which:
        log("e2e")
        results["e2e"] = await phase_e2e(cfg, profiler)
    if "sustained" in which and cfg.e2e_seconds > 0:
        log("sustained")
        results["sustained"] = await phase_sustained(cfg, profiler, e2e_rate(cfg, results))
    if {"transfers", "hot", "fx"} & set(which):
        log("transfers")
        results |= await phase_transfers(cfg, profiler, which)
    if "balance" in which:
        log("balance")
        results["balance"] = await phase_balance(cfg, profiler)
    if "ceiling" in which:
        log("ceiling")
        results["ceiling"] = {"python_ns_per_call": python_speed()}
        if cfg.mode == "postgres":
            seconds = min(3.0, cfg.seconds / 2)
            results["ceiling"] |= await ceilings(cfg.pg_admin_url, cfg.clients, seconds)
    report["ratios"] = ratios(results)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    return report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--mode", choices=["embedded", "postgres"], default="embedded")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10.0, help="measured window per phase")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured load before each")
    p.add_argument(
        "--which",
        default=",".join(PHASES),
        help="phases, comma-separated (ceiling: reference PostgreSQL ceilings measured now)",
    )
    p.add_argument(
        "--e2e-payments",
        type=int,
        default=200,
        help="a burst of this many payments (64 clients), then wait until all are posted",
    )
    p.add_argument("--e2e-idle", type=int, default=10, help="payments one at a time first")
    p.add_argument(
        "--e2e-timeout", type=float, default=90.0, help="stop waiting for postings after this"
    )
    p.add_argument(
        "--open-rate",
        default="auto",
        help="open-loop creates/transfers after the closed loop: 'auto' = half the closed-loop "
        "maximum of this run, N = N per s, 'off'",
    )
    p.add_argument(
        "--e2e-seconds",
        type=float,
        default=60.0,
        help="sustained phase: offer payments open-loop this long (0 = skip)",
    )
    p.add_argument(
        "--e2e-rate",
        default="",
        help="sustained phase: payments offered per s (default "
        + ", ".join(f"{k} {v:g}" for k, v in E2E_RATE.items())
        + "; 'auto' = 80%% of the burst's steady e2e rate in this run)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="pocketpay up --workers N (passed only when N > 1); server CPU = its process tree",
    )
    p.add_argument(
        "--http-client",
        choices=HTTP_CLIENTS,
        default="aiohttp",
        help="the load generator's HTTP client (httpx costs ~5x the CPU per request)",
    )
    p.add_argument("--history", type=int, default=100_000, help="entries of the big wallet")
    p.add_argument("--balance-reads", type=int, default=200, help="sequential reads of each")
    p.add_argument("--pg-admin-url", default=PG_ADMIN_URL)
    p.add_argument(
        "--nats-url",
        default="private",
        help="'private' (default): a throwaway nats-server -js for this run; or a nats:// URL",
    )
    p.add_argument(
        "--wait-quiet", type=float, default=30.0, help="wait up to this for an idle machine"
    )
    p.add_argument("--profile", default="", help="directory: py-spy the server (if installed)")
    p.add_argument("--output", default="", help="JSON path (default bench/results/<mode>.json)")
    return p


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt  # so `timeout`/kill still stops the servers and drops the databases


def main(argv: list[str] | None = None) -> int:
    cfg = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    if cfg.workers < 1:
        raise SystemExit("--workers must be >= 1")
    report = asyncio.run(main_async(cfg))
    out = Path(cfg.output) if cfg.output else RESULTS / f"{cfg.mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(cfg.mode, report["results"]))
    print(f"\n{report['wall_seconds']} s; results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
