"""``pocketpay``: up | serve | migrate | check | dlq."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
from typing import Any

from pocketpay.kit.logging import configure
from pocketpay.kit.tracing import setup_tracing
from pocketpay.settings import COMPONENTS, Settings

SCALE_PORTS = {"gateway": 8011, "ledger": 8012, "payments": 8013, "sandbox": 8014, "monitor": 8015}


def _serve(settings: Settings, components: tuple[str, ...], port: int) -> None:
    import uvicorn

    from pocketpay.migrate import upgrade
    from pocketpay.runtime import Runtime

    upgrade(settings.resolved_database_url())
    runtime = Runtime(settings, components)
    uvicorn.run(
        runtime.app,
        host=settings.host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    if args.processes:
        return _up_processes(settings)
    from pocketpay.runtime import EMBEDDED

    print(
        f"PocketPay on {settings.resolved_public_url()}  (API docs: "
        f"{settings.resolved_public_url()}/docs)",
        flush=True,
    )
    _serve(settings, EMBEDDED, settings.port)
    return 0


def _up_processes(settings: Settings) -> int:
    """Each component as its own process on PostgreSQL + NATS: a one-machine deployment."""
    if not settings.database_url.startswith("postgresql") or not settings.bus_url.startswith(
        "nats"
    ):
        print(
            "up --processes needs POCKETPAY_DATABASE_URL=postgresql+asyncpg://... and "
            "POCKETPAY_BUS_URL=nats://...",
            file=sys.stderr,
        )
        return 2
    from pocketpay.migrate import upgrade

    upgrade(settings.database_url)
    base = f"http://{settings.host}"
    urls = {n: f"{base}:{p}" for n, p in SCALE_PORTS.items()}
    env = os.environ | {
        "POCKETPAY_URLS": json.dumps(urls),
        "POCKETPAY_PSP__API_BASE": urls["sandbox"],
        "POCKETPAY_SANDBOX__WEBHOOK_URL": f"{urls['gateway']}/api/v1/webhooks/stripe",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pocketpay.cli", "serve", name, "--port", str(port)], env=env
        )
        for name, port in SCALE_PORTS.items()
        if name != "monitor"
    ]
    print(f"PocketPay (multi-process) on {urls['gateway']}", flush=True)
    try:
        while all(p.poll() is None for p in procs):
            try:
                procs[0].wait(timeout=1)
            except subprocess.TimeoutExpired:
                continue
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=15)
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    port = args.port or SCALE_PORTS.get(args.component, settings.port)
    _serve(settings, (args.component,), port)
    return 0


def cmd_migrate(_args: argparse.Namespace, settings: Settings) -> int:
    from pocketpay.migrate import upgrade

    upgrade(settings.resolved_database_url())
    print("migrated", settings.resolved_database_url().split("@")[-1])
    return 0


async def _check(settings: Settings) -> list[str]:
    from pocketpay.kit.db import create_engine
    from pocketpay.ledger.check import run_check

    engine = create_engine(settings.resolved_database_url())
    try:
        return await run_check(engine)
    finally:
        await engine.dispose()


def cmd_check(_args: argparse.Namespace, settings: Settings) -> int:
    problems = asyncio.run(_check(settings))
    for p in problems:
        print("PROBLEM", p)
    print("ledger consistent" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


async def _dlq(settings: Settings, action: str, dlq_id: str | None) -> Any:
    from pocketpay.kit.bus import list_dead_letters, replay_dead_letter
    from pocketpay.kit.clock import SystemClock
    from pocketpay.kit.db import create_engine
    from pocketpay.runtime import make_bus

    engine = create_engine(settings.resolved_database_url())
    try:
        if action == "list":
            rows = await list_dead_letters(engine)
            return [
                {
                    "id": r.id,
                    "durable": r.durable,
                    "event_id": r.event_id,
                    "subject": r.subject,
                    "error": r.error,
                    "deliveries": r.deliveries,
                    "created_at": str(r.created_at),
                }
                for r in rows
            ]
        bus = make_bus(settings, engine, SystemClock())
        await bus.start()
        try:
            ids = [dlq_id] if dlq_id else [r.id for r in await list_dead_letters(engine)]
            return {i: await replay_dead_letter(engine, bus, i, SystemClock().now()) for i in ids}
        finally:
            await bus.close()
    finally:
        await engine.dispose()


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(asyncio.run(_dlq(settings, args.action, args.id)), indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pocketpay", description="PocketPay payment platform")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="run PocketPay (every component in one process by default)")
    up.add_argument(
        "--processes",
        action="store_true",
        help="each component as its own process (PostgreSQL + NATS)",
    )
    up.set_defaults(fn=cmd_up)
    serve = sub.add_parser("serve", help="run one component")
    serve.add_argument("component", choices=COMPONENTS)
    serve.add_argument("--port", type=int, default=0)
    serve.set_defaults(fn=cmd_serve)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(fn=cmd_migrate)
    sub.add_parser("check", help="verify ledger invariants").set_defaults(fn=cmd_check)
    dlq = sub.add_parser("dlq", help="dead letters: list or replay")
    dlq.add_argument("action", choices=["list", "replay"])
    dlq.add_argument("id", nargs="?")
    dlq.set_defaults(fn=cmd_dlq)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings()
    configure(settings.observability.log_level, settings.observability.log_json)
    setup_tracing(settings.observability.service_name, settings.observability.otlp_endpoint)
    return int(args.fn(args, settings))


if __name__ == "__main__":
    raise SystemExit(main())
