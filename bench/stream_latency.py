"""Live updates: commit-to-client latency on PostgreSQL + NATS with two gateway processes.

``flock /tmp/pp_fleet.lock python -m bench.stream_latency --users 20 --rate 10 --seconds 30``

A scale-mode fleet (``tests/e2e/fleet.py``: sandbox, ledger, payments and two gateways, each
its own process, settings at their defaults) serves ``--users`` users, each with an SSE stream
open on gateway B, while payments are created through gateway A at ``--rate`` per second. For
every frame a client receives, the latency is its arrival time minus the event's
``occurred_at`` (taken inside the transaction that commits the event, so it slightly
overstates commit-to-client). Per frame, the gateway log's ``created_at`` (when B's or A's
stream consumer took the event) splits it in two:

  commit -> logged     the outbox relay, JetStream, the gateway's durable pull consumer
  logged -> client     the log insert's commit, the NATS core wake, the stream's read, SSE

Beside it, in the same run, the ceiling of the path's one unavoidable hop: a NATS core
publish -> receive round trip on the same server. Results in bench/results/stream-latency-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
from tests.e2e import fleet as fl
from tests.stream.sse import SseStream, sse

from bench.load import latency_summary

LAYOUT = {"sandbox": 1, "ledger": 1, "payments": 1, "gateway": 2}
# Only the sandbox's settlement is shortened (it plays the outside world); PocketPay's own
# settings are the defaults a deployment has (relay poll 0.5 s, stream poll 1 s).
ENV = {
    "POCKETPAY_SANDBOX__SETTLE_DELAY_SECONDS": "0.5",
    "POCKETPAY_PSP__SETTLE_POLL_SECONDS": "0.2",
}
RESULTS = Path(__file__).parent / "results"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


async def _signup(http: httpx.AsyncClient) -> dict[str, Any]:
    body = {"email": f"b{uuid.uuid4().hex[:12]}@example.com", "password": "x" * 12, "name": "B"}
    r = await http.post("/api/v1/auth/signup", json=body)
    r.raise_for_status()
    user: dict[str, Any] = r.json()
    user["headers"] = {"Authorization": f"Bearer {user['access_token']}"}
    return user


async def _listen(stream: SseStream, seen: list[tuple[str, str, float, str]]) -> None:
    """Record every frame until the stream ends or the task is cancelled (a timeout inside
    the line iterator would close it, so none is used here)."""
    while True:
        frame = await stream.event(timeout=3600)
        if frame is None:
            return
        body = frame.body
        seen.append((body["id"], body["type"], time.time(), body["occurred_at"]))


async def _drain(seen: list[Any], quiet_seconds: float = 3.0, limit_seconds: float = 120) -> None:
    """Wait for the tail: until no frame arrived for ``quiet_seconds`` (bounded)."""
    deadline = time.monotonic() + limit_seconds
    last, since = len(seen), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet_seconds:
        await asyncio.sleep(0.2)
        if len(seen) != last:
            last, since = len(seen), time.monotonic()


async def _pay_loop(
    http: httpx.AsyncClient, users: list[dict[str, Any]], rate: float, seconds: float
) -> int:
    made = 0
    start = time.monotonic()
    tasks: list[asyncio.Task[httpx.Response]] = []
    while time.monotonic() - start < seconds:
        user = users[made % len(users)]
        body = {"amount_minor": 1000, "currency": "USD", "payment_method": "pm_card_visa"}
        headers = user["headers"] | {"Idempotency-Key": uuid.uuid4().hex}
        tasks.append(asyncio.create_task(http.post("/api/v1/payments", json=body, headers=headers)))
        made += 1
        await asyncio.sleep(max(0.0, start + made / rate - time.monotonic()))  # paced, open loop
    replies = await asyncio.gather(*tasks)
    assert all(r.status_code == 202 for r in replies), {r.status_code for r in replies}
    return made


async def _logged_at(database_url: str, ids: set[str]) -> dict[str, float]:
    """Per event id: when a gateway's stream consumer logged it (``created_at``, taken as it
    starts the insert). The outbox's ``published_at`` is no help here: the relay stamps a
    whole batch after publishing it, later than the events' consumers see them."""
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        rows = await conn.fetch(
            "SELECT event_id, min(created_at) AS at FROM gateway.gateway_stream_events "
            "WHERE event_id = ANY($1::text[]) GROUP BY event_id",
            list(ids),
        )
    finally:
        await conn.close()
    return {r["event_id"]: r["at"].timestamp() for r in rows}


async def _logged_for(database_url: str, user_ids: list[str]) -> int:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM gateway.gateway_stream_events WHERE user_id = ANY($1::text[])",
            user_ids,
        )
    finally:
        await conn.close()
    return int(count)


async def _nats_round_trip(url: str, count: int = 2000) -> dict[str, float]:
    """The ceiling: publish -> receive on one NATS server, one message in flight at a time."""
    nc = await nats.connect(url)
    got: asyncio.Queue[float] = asyncio.Queue()

    async def on_msg(msg: Any) -> None:
        await got.put(time.perf_counter() - float(msg.data))

    await nc.subscribe("bench.ceiling", cb=on_msg)
    await nc.flush()
    samples = []
    for _ in range(count):
        await nc.publish("bench.ceiling", str(time.perf_counter()).encode())
        samples.append(await got.get())
    await nc.close()
    return latency_summary(samples)


async def measure(fleet: fl.Fleet, users_n: int, rate: float, seconds: float) -> dict[str, Any]:
    a, b = fleet.of("gateway")
    limits = httpx.Limits(max_connections=users_n + 50)
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=30, limits=limits) as via_a,
        httpx.AsyncClient(base_url=b.url, timeout=None, limits=limits) as via_b,
    ):
        users = [await _signup(via_a) for _ in range(users_n)]
        seen: list[tuple[str, str, float, str]] = []
        streams = [sse(via_b, u["headers"]) for u in users]
        listeners = [asyncio.create_task(_listen(await s.__aenter__(), seen)) for s in streams]
        _log(f"{users_n} streams open on gateway B; paying {rate}/s through A for {seconds}s")
        made = await _pay_loop(via_a, users, rate, seconds)
        await _drain(seen)
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
        for s in streams:
            await s.__aexit__(None, None, None)
    logged_at = await _logged_at(fleet.database_url, {e[0] for e in seen})
    in_log = await _logged_for(fleet.database_url, [u["user"]["id"] for u in users])
    total: list[float] = []
    parts: dict[str, list[float]] = defaultdict(list)
    by_type: dict[str, list[float]] = defaultdict(list)
    for event_id, type_, arrived, occurred in seen:
        at = datetime.fromisoformat(occurred).timestamp()
        total.append(arrived - at)
        by_type[type_].append(arrived - at)
        if event_id in logged_at:
            parts["commit_to_logged"].append(logged_at[event_id] - at)
            parts["logged_to_client"].append(arrived - logged_at[event_id])
    return {
        "load_average_1m": os.getloadavg()[0],
        "users": users_n,
        "payments": made,
        "rate_per_s": rate,
        "frames": len(seen),
        "frames_in_log": in_log,  # every row the users' streams should have sent
        "frames_distinct": len({(e[0], e[1]) for e in seen}),
        "commit_to_client": latency_summary(total),
        **{name: latency_summary(values) for name, values in parts.items()},
        "by_type": {t: latency_summary(v) for t, v in sorted(by_type.items())},
        "ceiling_nats_core_round_trip": await _nats_round_trip(fleet.nats_url),
    }


def extra_env(args: argparse.Namespace) -> dict[str, str]:
    return {"POCKETPAY_BUS__RELAY_POLL_SECONDS": str(args.relay_poll)} if args.relay_poll else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--rate", type=float, default=10.0, help="payments per second through A")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument(
        "--relay-poll", type=float, default=0.0, help="outbox relay poll (default: 0.5)"
    )
    args = ap.parse_args()
    workdir = Path(f"/tmp/pp-stream-bench-{uuid.uuid4().hex[:8]}")
    workdir.mkdir(parents=True)
    with fl.running_fleet(
        workdir, LAYOUT, ENV, db_name=f"pocketpay_bench_stream_{uuid.uuid4().hex[:6]}"
    ) as fleet:
        _log(f"fleet ready in {fleet.ready_seconds:.1f}s")
        result = asyncio.run(measure(fleet, args.users, args.rate, args.seconds))
    result["at"] = datetime.now(UTC).isoformat()
    result["env"] = ENV | extra_env(args)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"stream-latency-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    _log(f"written to {out}")


if __name__ == "__main__":
    main()
