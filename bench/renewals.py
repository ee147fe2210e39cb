"""Billing renewals at scale: N wallet-paid subscriptions all due at once, renewed by one
test-clock advance (the scheduler's passes: for each one a period forward, its invoice made
and numbered, the price collected from the wallet into revenue, the invoice paid).

``python -m bench.renewals --mode postgres --subscriptions 10000``

The subscriptions, their customers and the funded wallets are seeded directly in the tables
(each subscription as if its first period had been paid; ``pocketpay check`` stays true);
then one ``POST /api/v1/admin/test-clock/advance`` of 32 days is timed, with the server's and
PostgreSQL's CPU. Afterwards every subscription must have exactly one paid renewal invoice and
the ledger check must be clean."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select

from bench import seed
from bench.load import new_client
from bench.server import private_nats, running_server
from bench.system import CpuMeter
from pocketpay.billing.models import customers, invoices, subscriptions
from pocketpay.kit.ids import new_id
from pocketpay.kit.tokens import Principal, TokenCodec
from pocketpay.settings import AuthSettings

PRICE = 1000
MONTH_DAYS = 31


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@contextlib.asynccontextmanager
async def _nats(mode: str) -> AsyncIterator[dict[str, Any]]:
    if mode != "postgres":
        yield {}
        return
    async with private_nats() as url:
        yield {"nats_url": url}


async def run(mode: str, count: int) -> dict[str, Any]:
    # The scheduler's own timer stays out of the way: the advance runs every pass itself.
    quiet = {"POCKETPAY_BILLING__SCHEDULER_INTERVAL_SECONDS": "86400"}
    async with (
        _nats(mode) as services,
        running_server(mode, "renewals", settings=quiet, **services) as server,
        new_client(server.base_url, 2) as http,
    ):
        auth = AuthSettings()
        codec = TokenCodec(
            server.jwt_secret, issuer=auth.jwt_issuer, audience=auth.jwt_audience, ttl_seconds=7200
        )
        admin = {
            "Authorization": "Bearer "
            + codec.issue(Principal(new_id("usr"), "admin", "ops@bench"), datetime.now(UTC))
        }
        r = await http.post(
            "/api/v1/plans",
            json={"name": "Bench", "amount_minor": PRICE, "currency": "USD"},
            headers=admin | {"Idempotency-Key": new_id("k")},
        )
        r.raise_for_status()
        plan = r.json()
        _log(f"seeding {count} funded users with an active subscription")
        t0 = time.perf_counter()
        users = await seed.seed_users(http, server.db_url, server.jwt_secret, count, "r")
        ids = [u["id"] for u in users]
        await seed.fund_wallets(server.db_url, ids, 5 * PRICE, "USD")
        await _seed_subscriptions(server.db_url, plan["id"], ids)
        _log(f"  seeded in {time.perf_counter() - t0:.1f} s")

        meter = CpuMeter(server.pid, server.pg_database, server.nats_pid)
        a = meter.snapshot()
        t1 = time.perf_counter()
        r = await http.post(
            "/api/v1/admin/test-clock/advance",
            json={"seconds": (MONTH_DAYS + 1) * 86400},
            headers=admin,
            timeout=3600,
        )
        seconds = time.perf_counter() - t1
        b = meter.snapshot()
        r.raise_for_status()
        cpu = CpuMeter.usage(a, b)
        renewed = await _paid_renewals(server.db_url)
        problems = await seed.ledger_check(server.db_url)
    window = max(seconds, 1e-9)
    per_op = {
        k: round(v * 10 * window / max(renewed, 1), 3)  # % of a core x s -> ms per renewal
        for k, v in cpu.items()
        if k in ("server", "postgres", "nats")
    }
    return {
        "mode": mode,
        "subscriptions": count,
        "renewed_and_paid": renewed,
        "seconds": round(seconds, 2),
        "renewals_per_s": round(renewed / window, 1),
        "cpu_percent": cpu,
        "cpu_ms_per_renewal": per_op,
        "ledger_check": problems or "consistent",
    }


async def _seed_subscriptions(db_url: str, plan_id: str, owner_ids: list[str]) -> None:
    """Each one active since a month ago, its next period due at once after the advance."""
    now = datetime.now(UTC)
    start = now - timedelta(days=1)
    end = start + timedelta(days=MONTH_DAYS)
    engine = seed.engine_for(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(customers),
                [{"owner_id": o, "invoices_numbered": 1, "created_at": start} for o in owner_ids],
            )
            await conn.execute(
                insert(subscriptions),
                [
                    {
                        "id": new_id("sub"),
                        "owner_id": o,
                        "plan_id": plan_id,
                        "status": "active",
                        "payment_source": "wallet",
                        "payment_method": None,
                        "currency": "USD",
                        "anchor": start,
                        "trial_end": None,
                        "period": 0,
                        "current_period_start": start,
                        "current_period_end": end,
                        "cancel_at_period_end": False,
                        "canceled_at": None,
                        "next_action_at": end,
                        "metadata": {},
                        "created_at": start,
                        "updated_at": start,
                    }
                    for o in owner_ids
                ],
            )
    finally:
        await engine.dispose()


async def _paid_renewals(db_url: str) -> int:
    engine = seed.engine_for(db_url)
    try:
        async with engine.connect() as conn:
            q = select(func.count()).where(invoices.c.status == "paid")
            return int((await conn.execute(q)).scalar_one())
    finally:
        await engine.dispose()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.renewals", description=__doc__)
    p.add_argument("--mode", choices=["embedded", "postgres"], default="postgres")
    p.add_argument("--subscriptions", type=int, default=10_000)
    p.add_argument("--output", default="")
    cfg = p.parse_args()
    result = asyncio.run(run(cfg.mode, cfg.subscriptions))
    print(json.dumps(result, indent=1))
    if cfg.output:
        with open(cfg.output, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
