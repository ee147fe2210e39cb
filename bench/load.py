"""Load generators on asyncio: a closed loop (N clients, each sending its next request as soon
as the previous one answered, for a bounded time) and an open loop (a fixed arrival schedule,
latency measured from each request's scheduled send time).

The hot loop's HTTP client is aiohttp by default: the load generator shares the machine's two
cores with the server and PostgreSQL, and httpx cost ~2.4 ms of CPU per request here (aiohttp
~0.5 ms; see ``Clients``). ``--http-client httpx`` keeps the old one for comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx

# httpx and httpcore try ``import sniffio`` on every request, connection and lock; without
# sniffio installed each failing import scans sys.path (~0.1 ms here). A None entry makes it
# fail at once, which keeps the load generator's own CPU cost down.
if "sniffio" not in sys.modules:
    with contextlib.suppress(ImportError):
        import sniffio  # noqa: F401
if "sniffio" not in sys.modules:
    sys.modules["sniffio"] = None  # type: ignore[assignment]

PASSWORD = "correct-horse-battery-staple"

HTTP_ERRORS = (httpx.HTTPError, aiohttp.ClientError, asyncio.TimeoutError, OSError)
HTTP_CLIENTS = ("aiohttp", "httpx")


@dataclass(slots=True)
class Reply:
    """What the load generator keeps of a response, whichever client fetched it."""

    status_code: int
    body: bytes
    content_type: str

    def json(self) -> Any:
        return json.loads(self.body)


# (client index, request number of that client) -> reply
Request = Callable[[int, int], Awaitable[Reply]]


def new_client(base_url: str, connections: int = 1) -> httpx.AsyncClient:
    """An httpx client for set-up and one-at-a-time requests (not the hot loop)."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60)


class Clients:
    """One keep-alive connection per simulated client: ``post(i, ...)`` / ``get(i, ...)`` go
    through client ``i``'s own connection.

    aiohttp (default): one ClientSession with a one-connection connector per client; measured
    ~0.5 ms of load-generator CPU per request against httpx's ~2.4 ms. httpx: one AsyncClient
    per client (httpcore's pool scans all its connections per request, O(connections) when 64
    share one pool)."""

    def __init__(self, base_url: str, count: int, kind: str = "aiohttp") -> None:
        if kind not in HTTP_CLIENTS:
            raise ValueError(f"unknown HTTP client {kind!r}; choose from {HTTP_CLIENTS}")
        self.base_url = base_url
        self.count = count
        self.kind = kind
        self.httpx: list[httpx.AsyncClient] = []
        self.sessions: list[aiohttp.ClientSession] = []

    async def __aenter__(self) -> Clients:
        if self.kind == "httpx":
            self.httpx = [new_client(self.base_url) for _ in range(self.count)]
        else:
            timeout = aiohttp.ClientTimeout(total=60)
            self.sessions = [
                aiohttp.ClientSession(
                    base_url=self.base_url,
                    connector=aiohttp.TCPConnector(limit=1, use_dns_cache=True),
                    timeout=timeout,
                )
                for _ in range(self.count)
            ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(c.aclose() for c in self.httpx))
        await asyncio.gather(*(s.close() for s in self.sessions))

    async def request(
        self,
        i: int,
        method: str,
        path: str,
        headers: dict[str, str],
        body: Any = None,
    ) -> Reply:
        if self.kind == "httpx":
            r = await self.httpx[i % self.count].request(method, path, json=body, headers=headers)
            return Reply(r.status_code, r.content, r.headers.get("content-type", ""))
        session = self.sessions[i % self.count]
        async with session.request(method, path, json=body, headers=headers) as resp:
            return Reply(resp.status, await resp.read(), resp.headers.get("Content-Type", ""))

    async def post(self, i: int, path: str, json: Any, headers: dict[str, str]) -> Reply:
        return await self.request(i, "POST", path, headers, json)

    async def get(self, i: int, path: str, headers: dict[str, str]) -> Reply:
        return await self.request(i, "GET", path, headers)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def latency_summary(latencies_s: list[float]) -> dict[str, float]:
    v = sorted(latencies_s)
    ms = 1000.0
    return {
        "p50_ms": round(percentile(v, 0.50) * ms, 2),
        "p95_ms": round(percentile(v, 0.95) * ms, 2),
        "p99_ms": round(percentile(v, 0.99) * ms, 2),
        "max_ms": round((v[-1] if v else float("nan")) * ms, 2),
        "mean_ms": round((sum(v) / len(v) if v else float("nan")) * ms, 2),
    }


@dataclass
class LoadResult:
    clients: int
    seconds: float
    ok: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    error_codes: Counter[str] = field(default_factory=Counter)
    warmup_ok: int = 0

    def record(self, resp: Reply, ok_status: int) -> None:
        self.statuses[str(resp.status_code)] += 1
        if resp.status_code == ok_status:
            self.ok += 1
            return
        self.failed += 1
        code = "?"
        if resp.content_type.endswith("json"):
            with contextlib.suppress(ValueError, AttributeError):
                code = str(resp.json().get("code", "?"))
        self.error_codes[code] += 1

    def summary(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "seconds": round(self.seconds, 2),
            "ok": self.ok,
            "failed": self.failed,
            "rate_per_s": round(self.ok / self.seconds, 1) if self.seconds else 0.0,
            **latency_summary(self.latencies),
            "statuses": dict(self.statuses),
            "error_codes": dict(self.error_codes.most_common(5)),
            "warmup_ok": self.warmup_ok,
        }


async def closed_loop(
    clients: int, seconds: float, request: Request, ok_status: int, *, max_requests: int = 0
) -> LoadResult:
    """Run ``clients`` loops for ``seconds`` (or until ``max_requests`` in total)."""
    result = LoadResult(clients, seconds)
    start = time.perf_counter()
    deadline = start + seconds
    issued = 0

    async def worker(i: int) -> None:
        nonlocal issued
        n = 0
        while time.perf_counter() < deadline:
            if max_requests and issued >= max_requests:
                return
            issued += 1
            t0 = time.perf_counter()
            try:
                resp = await request(i, n)
            except HTTP_ERRORS as exc:
                result.failed += 1
                result.error_codes[type(exc).__name__] += 1
                continue
            finally:
                n += 1
            result.latencies.append(time.perf_counter() - t0)
            result.record(resp, ok_status)

    await asyncio.gather(*(worker(i) for i in range(clients)))
    result.seconds = time.perf_counter() - start
    return result


@dataclass
class OpenLoopResult(LoadResult):
    """An open loop's outcome. ``latencies`` run from each request's *scheduled* send time
    (so a stalled server shows as latency, not as fewer requests: no coordinated omission)."""

    rate_per_s: float = 0.0
    offered: int = 0
    dropped: int = 0  # never sent: the backlog of waiting requests was full at their time
    late: int = 0  # sent more than LATE_MS after their scheduled time (waited for a connection)
    max_waiting: int = 0

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["achieved_rate_per_s"] = out.pop("rate_per_s")
        lat = latency_summary(self.latencies)
        return out | {
            "offered_rate_per_s": round(self.rate_per_s, 1),
            "offered": self.offered,
            "dropped": self.dropped,
            "late": self.late,
            "late_ms": LATE_MS,
            "max_waiting": self.max_waiting,
            "max_in_flight": self.clients,
            # The target: p99 <= 50 ms at half the maximum rate, nothing dropped.
            "p99_target_met": bool(
                self.latencies and lat["p99_ms"] <= 50.0 and not self.dropped and not self.failed
            ),
        }


LATE_MS = 10.0


async def open_loop(
    rate: float,
    seconds: float,
    connections: int,
    request: Request,
    ok_status: int,
    *,
    max_waiting: int = 0,
) -> OpenLoopResult:
    """Offer ``rate`` requests per second on a fixed schedule (request k at start + k/rate)
    for ``seconds``. At most ``connections`` are in flight (one per keep-alive connection,
    client index = connection); a request whose time has come waits for a free connection,
    and its latency still runs from its scheduled time. Past ``max_waiting`` waiting requests
    (default: ``connections``) a request is dropped and counted, not queued without bound.
    The window ends when the schedule does; requests still in flight are awaited (bounded by
    the client timeout) and counted."""
    assert rate > 0 and seconds > 0 and connections > 0
    max_waiting = max_waiting or connections
    result = OpenLoopResult(connections, seconds, rate_per_s=rate)
    free: asyncio.Queue[int] = asyncio.Queue()
    for i in range(connections):
        free.put_nowait(i)
    waiting = 0
    counts = [0] * connections
    tasks: set[asyncio.Task[None]] = set()

    async def one(scheduled: float) -> None:
        nonlocal waiting
        try:  # counted as waiting from its creation (below) until it holds a connection
            i = await free.get()
        finally:
            waiting -= 1
        sent = time.perf_counter()
        if (sent - scheduled) * 1000 > LATE_MS:
            result.late += 1
        try:
            resp = await request(i, counts[i])
        except HTTP_ERRORS as exc:
            result.failed += 1
            result.error_codes[type(exc).__name__] += 1
            return
        finally:
            counts[i] += 1
            free.put_nowait(i)
        result.latencies.append(time.perf_counter() - scheduled)
        result.record(resp, ok_status)

    start = time.perf_counter()
    total = max(1, int(rate * seconds))
    for k in range(total):
        scheduled = start + k / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        result.offered += 1
        if waiting >= max_waiting:
            result.dropped += 1
            continue
        waiting += 1
        result.max_waiting = max(result.max_waiting, waiting)
        task = asyncio.create_task(one(scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    # Rates are over the schedule's length (the drain of the last requests is not offered time).
    result.seconds = total / rate
    return result


async def signup(http: httpx.AsyncClient, count: int, prefix: str) -> list[dict[str, Any]]:
    """``count`` new users (4 signups at a time: argon2 is deliberately slow)."""
    sem = asyncio.Semaphore(4)
    run = uuid.uuid4().hex[:8]

    async def one(i: int) -> dict[str, Any]:
        async with sem:
            email = f"{prefix}{i}-{run}@bench.example.com"
            r = await http.post(
                "/api/v1/auth/signup",
                json={"email": email, "password": PASSWORD, "name": f"Bench {i}"},
            )
            r.raise_for_status()
            body: dict[str, Any] = r.json()
            return {
                "id": body["user"]["id"],
                "email": email,
                "headers": {"Authorization": f"Bearer {body['access_token']}"},
            }

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def idem_headers(user: dict[str, Any]) -> dict[str, str]:
    return user["headers"] | {"Idempotency-Key": uuid.uuid4().hex}
