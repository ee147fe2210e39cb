"""A closed-loop load generator on asyncio + httpx: N clients, each sending its next request
as soon as the previous one answered, for a bounded time."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

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

# (client index, request number of that client) -> response
Request = Callable[[int, int], Awaitable[httpx.Response]]


def new_client(base_url: str, connections: int = 1) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60)


class Clients:
    """One httpx client (one keep-alive connection) per simulated client: httpcore's pool
    scans all its connections for every request, which costs O(connections) CPU per request
    when 64 share one pool."""

    def __init__(self, base_url: str, count: int) -> None:
        self.all = [new_client(base_url) for _ in range(count)]

    def __getitem__(self, i: int) -> httpx.AsyncClient:
        return self.all[i % len(self.all)]

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(c.aclose() for c in self.all))


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
            except httpx.HTTPError as exc:
                result.failed += 1
                result.error_codes[type(exc).__name__] += 1
                continue
            finally:
                n += 1
            result.latencies.append(time.perf_counter() - t0)
            result.statuses[str(resp.status_code)] += 1
            if resp.status_code == ok_status:
                result.ok += 1
            else:
                result.failed += 1
                code = "?"
                if resp.headers.get("content-type", "").endswith("json"):
                    code = str(resp.json().get("code", "?"))
                result.error_codes[code] += 1

    await asyncio.gather(*(worker(i) for i in range(clients)))
    result.seconds = time.perf_counter() - start
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
