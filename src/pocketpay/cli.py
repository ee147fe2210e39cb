"""``pocketpay``: up | serve | migrate | check | dlq."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
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
    # The port this process serves is part of its own URL (the monitor polls it, the sandbox
    # posts webhooks to it), unless POCKETPAY_PUBLIC_URL says otherwise.
    settings = settings.model_copy(update={"port": port})
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


STOP_TIMEOUT_SECONDS = 20.0


def _up_processes(settings: Settings) -> int:
    """Each component as its own process on PostgreSQL + NATS: a one-machine deployment.

    The children share an internal token (POCKETPAY_INTERNAL_TOKEN, else the one generated
    once into <var_dir>/internal_token), so their internal APIs are not open to anyone on the
    host. They run in their own session: Ctrl-C, SIGTERM or SIGHUP reach this process only,
    which relays one SIGTERM to each (a second signal would make uvicorn skip its graceful
    shutdown), waits for them (bounded) and kills what is left. If a child dies, the others
    are stopped too and the exit status is 1.
    """
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
        # Resolved once here (generated into var_dir on first use): children generating
        # var/internal_token or var/jwt_secret at the same time would race.
        "POCKETPAY_INTERNAL_TOKEN": settings.resolved_internal_token(),
        "POCKETPAY_AUTH__JWT_SECRET": settings.resolved_jwt_secret(),
    }
    names = list(SCALE_PORTS)
    procs = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pocketpay.cli",
                "serve",
                name,
                "--port",
                str(SCALE_PORTS[name]),
            ],
            env=env,
            start_new_session=True,
        )
        for name in names
    }
    print(f"PocketPay (multi-process) on {urls['gateway']}", flush=True)

    def stop_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {s: signal.signal(s, stop_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    dead: list[str] = []
    try:
        while not dead:
            dead = [n for n, p in procs.items() if p.poll() is not None]
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _stop_all(procs)
    for name in dead:
        print(f"{name} exited with {procs[name].returncode}", file=sys.stderr)
    return 1 if dead else 0


def _stop_all(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for name, p in procs.items():
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop in {STOP_TIMEOUT_SECONDS}s: killed", file=sys.stderr)
            p.kill()
            p.wait()


def _serve_sandbox(settings: Settings, port: int) -> None:
    """The sandbox PSP alone. It plays the outside world (Stripe), so it shares nothing with
    PocketPay: no database, no migrations, no bus; its state lives in its memory.

    (Going through ``Runtime(settings, ("sandbox",))`` would also open a database engine and
    a NATS connection it never uses.)
    """
    import uvicorn

    from pocketpay.kit.clock import SystemClock
    from pocketpay.sandbox import create_app

    hook = (
        settings.sandbox.webhook_url or f"{settings.resolved_public_url()}/api/v1/webhooks/stripe"
    )
    app = create_app(settings.sandbox, SystemClock(), webhook_url=hook)
    uvicorn.run(
        app, host=settings.host, port=port, log_level="warning", access_log=False, lifespan="on"
    )


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    port = args.port or SCALE_PORTS.get(args.component, settings.port)
    if args.component == "sandbox":
        _serve_sandbox(settings, port)
    else:
        _serve(settings, (args.component,), port)
    return 0


def cmd_migrate(_args: argparse.Namespace, settings: Settings) -> int:
    from pocketpay.migrate import component_roles, upgrade

    url = settings.resolved_database_url()
    upgrade(url)
    print("migrated", url.split("@")[-1])
    # PostgreSQL: one login role per component, with rights on its own schema alone.
    for role, schema in component_roles(url).items():
        print(f"role {role} exists: schema {schema} (+ bus dead letters)")
    return 0


async def _check(settings: Settings, args: argparse.Namespace) -> Any:
    from pocketpay.kit.clock import SystemClock
    from pocketpay.kit.db import create_engine
    from pocketpay.reconcile import provider_from_settings, reconcile

    clock = SystemClock()
    engine = create_engine(settings.resolved_database_url())
    try:
        return await reconcile(
            engine,
            None if args.no_psp else provider_from_settings(settings, clock),
            now=clock.now(),
            grace_seconds=settings.check.grace_seconds,
            hold_deadline_seconds=settings.check.hold_deadline_seconds,
            require_psp=args.require_psp,
        )
    finally:
        await engine.dispose()


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    """Three-way reconciliation (``pocketpay.reconcile``); exit 1 on any finding."""
    report = asyncio.run(_check(settings, args))
    if args.json:
        print(json.dumps([f.as_json() for f in report.findings], indent=2))
        return 1 if report.findings else 0
    print("checked " + ", ".join(f"{n} {what}" for what, n in report.checked.items()))
    for note in report.notes:
        print("NOTE", note)
    for finding in report.findings:
        print("FINDING", finding.line())
    if report.ledger_consistent:
        print("ledger consistent")
    print("no findings" if not report.findings else f"{len(report.findings)} finding(s)")
    return 1 if report.findings else 0


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
    check = sub.add_parser(
        "check", help="reconcile the ledger, payments and the PSP (exit 1 on any finding)"
    )
    check.add_argument("--json", action="store_true", help="findings as a JSON list")
    check.add_argument("--no-psp", action="store_true", help="skip the PSP (ledger, payments)")
    check.add_argument("--require-psp", action="store_true", help="an unreachable PSP is a finding")
    check.set_defaults(fn=cmd_check)
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
