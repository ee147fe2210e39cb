"""``pocketpay``: up | serve | migrate | check | dlq | user.

Every command exits non-zero on failure with one line on stderr (``pocketpay <command>:
<code>: <what to fix>`` for a business error), never a traceback; the traceback is logged at
DEBUG (``POCKETPAY_OBSERVABILITY__LOG_LEVEL=DEBUG``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import structlog
from pydantic import ValidationError

from pocketpay.kit.errors import AppError, NotFound
from pocketpay.kit.logging import configure
from pocketpay.kit.tracing import setup_tracing
from pocketpay.settings import COMPONENTS, Settings

log = structlog.get_logger(__name__)

SCALE_PORTS = {
    "gateway": 8011,
    "ledger": 8012,
    "payments": 8013,
    "sandbox": 8014,
    "monitor": 8015,
    "billing": 8016,
    "notifications": 8017,
}


def _serve(
    settings: Settings, components: tuple[str, ...], port: int, fd: int | None = None
) -> None:
    """Serve ``components`` in this process on ``port``, or on the listening socket ``fd``
    inherited from ``up --workers`` (which migrated the database before starting us)."""
    import uvicorn

    from pocketpay.migrate import upgrade
    from pocketpay.runtime import Runtime

    if fd is None:
        upgrade(settings.resolved_database_url())
    # The port this process serves is part of its own URL (the monitor polls it, the sandbox
    # posts webhooks to it), unless POCKETPAY_PUBLIC_URL says otherwise.
    settings = settings.model_copy(update={"port": port})
    runtime = Runtime(settings, components)
    if fd is None:
        uvicorn.run(
            runtime.app,
            host=settings.host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
        return
    config = uvicorn.Config(runtime.app, log_level="warning", access_log=False, lifespan="on")
    # Not Config(fd=...): uvicorn wraps that descriptor as an AF_UNIX socket whatever it is,
    # so asyncio would not set TCP_NODELAY on the connections it accepts (Nagle and delayed
    # ACKs: 40 ms stalls on keep-alive). socket.socket(fileno=) detects the real family.
    server = uvicorn.Server(config)
    server.run(sockets=[socket.socket(fileno=fd)])
    if not server.started:
        raise SystemExit(3)  # uvicorn's start-up failure status, as uvicorn.run exits


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    if args.workers is not None:
        return _up_workers(settings, args)
    if args.processes:
        return _up_processes(settings, args)
    from pocketpay.runtime import EMBEDDED

    if args.port:
        settings = settings.model_copy(update={"port": args.port})
    print(
        f"PocketPay on {settings.resolved_public_url()}  (API docs: "
        f"{settings.resolved_public_url()}/docs)",
        flush=True,
    )
    _serve(settings, EMBEDDED, settings.port)
    return 0


STOP_TIMEOUT_SECONDS = 20.0
POLL_SECONDS = 0.2
MAX_WORKERS = 64
# What one app worker of ``up --workers`` runs: the request path, with direct calls between
# the components (no HTTP hop). The sandbox and the monitor run once each, beside them.
WORKER_COMPONENTS = ("gateway", "payments", "ledger", "billing", "notifications")


def _scale_problem(settings: Settings, mode: str) -> str | None:
    if settings.database_url.startswith("postgresql") and settings.bus_url.startswith("nats"):
        return None
    return (
        f"up {mode} needs POCKETPAY_DATABASE_URL=postgresql+asyncpg://... and "
        "POCKETPAY_BUS_URL=nats://..."
    )


def _shared_env(settings: Settings) -> dict[str, str]:
    """The environment of every child: the operator's, plus the secrets resolved once here
    (generated into var_dir on first use: children generating var/internal_token or
    var/jwt_secret at the same time would race)."""
    return os.environ | {
        "POCKETPAY_INTERNAL_TOKEN": settings.resolved_internal_token(),
        "POCKETPAY_AUTH__JWT_SECRET": settings.resolved_jwt_secret(),
    }


def _scale_ports(args: argparse.Namespace) -> dict[str, int]:
    given = {"gateway": args.port, "sandbox": args.sandbox_port, "monitor": args.monitor_port}
    return SCALE_PORTS | {name: port for name, port in given.items() if port}


def _up_processes(settings: Settings, args: argparse.Namespace) -> int:
    """Each component as its own process on PostgreSQL + NATS: a one-machine deployment.

    The children share an internal token (POCKETPAY_INTERNAL_TOKEN, else the one generated
    once into <var_dir>/internal_token), so their internal APIs are not open to anyone on the
    host. Supervision: ``_Supervisor``.
    """
    problem = _scale_problem(settings, "--processes")
    if problem:
        print(problem, file=sys.stderr)
        return 2
    from pocketpay.migrate import upgrade

    upgrade(settings.database_url)
    ports = _scale_ports(args)
    urls = {n: f"http://{settings.host}:{p}" for n, p in ports.items()}
    env = _shared_env(settings) | {
        "POCKETPAY_URLS": json.dumps(urls),
        "POCKETPAY_PSP__API_BASE": urls["sandbox"],
        "POCKETPAY_SANDBOX__WEBHOOK_URL": f"{urls['gateway']}/api/v1/webhooks/stripe",
    }
    with _Supervisor() as sup:
        for name, port in ports.items():
            sup.start(name, ["serve", name, "--port", str(port)], env)
        print(f"PocketPay (multi-process) on {urls['gateway']}", flush=True)
        sup.watch()
    return sup.exit_status()


def _up_workers(settings: Settings, args: argparse.Namespace) -> int:
    """N identical app workers (gateway, payments, ledger, billing, notifications in each, direct
    calls between them) serving one public port, plus the sandbox PSP and the monitor, once each.

    This process binds the public port once and hands the listening socket to every worker
    (an inherited descriptor): the kernel gives each new connection to one worker. The
    database is migrated here, before any child starts. Supervision: ``_Supervisor``.
    """
    problem = _scale_problem(settings, "--workers")
    if problem or not 1 <= args.workers <= MAX_WORKERS:
        print(problem or f"up --workers takes 1 to {MAX_WORKERS}", file=sys.stderr)
        return 2
    from pocketpay.migrate import upgrade

    upgrade(settings.database_url)
    ports = _scale_ports(args) | {"gateway": args.port or settings.port}
    public = f"http://{settings.host}:{ports['gateway']}"
    env = _shared_env(settings)
    monitor_urls = {n: f"{public}/components/{n}" for n in WORKER_COMPONENTS if n != "gateway"}
    monitor_urls["gateway"] = public
    # The sandbox plays the PSP only when no PSP is configured (real Stripe, or a sandbox
    # elsewhere, is used as it is).
    sandbox = settings.psp.provider == "sandbox" and not settings.psp.api_base
    if sandbox:
        monitor_urls["sandbox"] = f"http://{settings.host}:{ports['sandbox']}"
        env |= {
            "POCKETPAY_PSP__API_BASE": monitor_urls["sandbox"],
            "POCKETPAY_SANDBOX__WEBHOOK_URL": f"{public}/api/v1/webhooks/stripe",
        }
    try:
        listener = socket.create_server((settings.host, ports["gateway"]), backlog=2048)
    except OSError as exc:
        print(f"up --workers cannot listen on {public}: {exc}", file=sys.stderr)
        return 1
    fd = listener.fileno()
    worker = ["serve", ",".join(WORKER_COMPONENTS), "--port", str(ports["gateway"])]
    try:
        with _Supervisor() as sup:
            if sandbox:
                sup.start("sandbox", ["serve", "sandbox", "--port", str(ports["sandbox"])], env)
            for i in range(1, args.workers + 1):
                sup.start(f"worker-{i}", [*worker, "--fd", str(fd)], env, pass_fds=(fd,))
            sup.start(
                "monitor",
                ["serve", "monitor", "--port", str(ports["monitor"])],
                env | {"POCKETPAY_URLS": json.dumps(monitor_urls)},
            )
            # The workers hold the socket now. Closed here, a port whose workers stopped
            # refuses connections instead of queueing them in a backlog nobody accepts from.
            listener.close()
            print(f"PocketPay ({args.workers} workers) on {public}", flush=True)
            sup.watch()
    finally:
        listener.close()
    return sup.exit_status()


class _Supervisor:
    """Children of ``up --processes`` / ``up --workers``, started and stopped together.

    The children run in their own session: Ctrl-C, SIGTERM or SIGHUP reach this process
    only, which relays one SIGTERM to each (a second signal would make uvicorn skip its
    graceful shutdown; further signals here are ignored), waits for them (bounded by
    ``STOP_TIMEOUT_SECONDS``) and kills what is left. If a child dies, the others are
    stopped too and the exit status is 1. The signal handlers only record the signal (the
    watch loop polls it), so no exception can land in the middle of starting a child.
    """

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.dead: list[str] = []
        self._signals: list[int] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Supervisor:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._previous[s] = signal.signal(s, self._on_signal)
        return self

    def __exit__(self, *_exc: object) -> None:
        try:
            _stop_all(self.procs)
        finally:
            for s, handler in self._previous.items():
                signal.signal(s, handler)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals.append(signum)

    def start(
        self, name: str, argv: list[str], env: dict[str, str], pass_fds: tuple[int, ...] = ()
    ) -> None:
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "pocketpay.cli", *argv],
            env=env,
            start_new_session=True,
            pass_fds=pass_fds,
        )

    def watch(self) -> None:
        """Until a signal arrives or a child exits."""
        while not self._signals and not self.dead:
            self.dead = [n for n, p in self.procs.items() if p.poll() is not None]
            time.sleep(POLL_SECONDS)

    def exit_status(self) -> int:
        for name in self.dead:
            print(f"{name} exited with {self.procs[name].returncode}", file=sys.stderr)
        return 1 if self.dead else 0


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
    components = tuple(args.components)
    port = args.port or SCALE_PORTS.get(components[0], settings.port)
    if components == ("sandbox",):
        _serve_sandbox(settings, port)
    else:
        _serve(settings, components, port, args.fd)
    return 0


def _component_list(value: str) -> list[str]:
    """``serve``'s argument: one component, or several separated by commas (one process)."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in COMPONENTS]
    if not names or unknown or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"{value!r}: give components from {', '.join(COMPONENTS)}, separated by commas, "
            "each once"
        )
    if "sandbox" in names and len(names) > 1:
        raise argparse.ArgumentTypeError("the sandbox plays the PSP: serve it on its own")
    return names


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


async def _replay(settings: Settings) -> list[str]:
    from pocketpay.kit.db import create_engine
    from pocketpay.ledger.history import replay

    engine = create_engine(settings.resolved_database_url())
    try:
        async with engine.connect() as conn:
            if conn.dialect.name == "postgresql":  # one snapshot for the whole replay
                conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                return await replay(conn)
    finally:
        await engine.dispose()


def cmd_ledger(args: argparse.Namespace, settings: Settings) -> int:
    """``ledger replay``: rebuild every running balance from the transfers (exit 1 on any
    difference; ``pocketpay.ledger.history``)."""
    problems = asyncio.run(_replay(settings))
    for problem in problems:
        print("DIFFERENCE", problem)
    if problems:
        print(f"{len(problems)} difference(s)")
        return 1
    print("replayed: every running balance matches the transfers")
    return 0


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
        waiting = [r.id for r in await list_dead_letters(engine)]
        if dlq_id is not None and dlq_id not in waiting:
            raise NotFound(
                f"No dead letter {dlq_id} waits for replay (unknown, or replayed already); "
                "`pocketpay dlq list` shows those that do.",
                code="dlq.not_found",
            )
        bus = make_bus(settings, engine, SystemClock())
        await bus.start()
        try:
            ids = [dlq_id] if dlq_id else waiting
            return {i: await replay_dead_letter(engine, bus, i, SystemClock().now()) for i in ids}
        finally:
            await bus.close()
    finally:
        await engine.dispose()


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(asyncio.run(_dlq(settings, args.action, args.id)), indent=2))
    return 0


async def _user(settings: Settings, args: argparse.Namespace) -> list[dict[str, Any]]:
    from pocketpay.gateway.users import Role, UserAdmin
    from pocketpay.kit.clock import SystemClock
    from pocketpay.kit.db import create_engine

    engine = create_engine(settings.resolved_database_url())
    admin = UserAdmin(engine, SystemClock())
    try:
        if args.action == "create":
            password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else args.password
            name = args.name or args.email.partition("@")[0]
            role: Role = "admin" if args.admin else "user"
            return [await admin.create(args.email, password, name, role)]
        if args.action in ("grant-admin", "revoke-admin"):
            new_role: Role = "admin" if args.action == "grant-admin" else "user"
            return [await admin.set_role(args.email, new_role)]
        return await admin.list()
    finally:
        await engine.dispose()


def cmd_user(args: argparse.Namespace, settings: Settings) -> int:
    """Accounts of the gateway (``gateway.users.UserAdmin``), on the database of the settings
    (migrated first, so a fresh install can make its first admin before ``up``)."""
    from pocketpay.migrate import upgrade

    upgrade(settings.resolved_database_url())
    rows = asyncio.run(_user(settings, args))
    table = [("EMAIL", "ID", "ADMIN", "CREATED")] + [
        (u["email"], u["id"], "yes" if u["role"] == "admin" else "no", u["created_at"])
        for u in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pocketpay", description="PocketPay payment platform")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="run PocketPay (every component in one process by default)")
    mode = up.add_mutually_exclusive_group()
    mode.add_argument(
        "--processes",
        action="store_true",
        help="each component as its own process (PostgreSQL + NATS)",
    )
    mode.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="N app processes (gateway, payments, ledger, billing, notifications each) sharing "
        "the public port, plus the sandbox and the monitor once each (PostgreSQL + NATS)",
    )
    up.add_argument("--port", type=int, default=0, help="the public port (default: settings)")
    up.add_argument("--sandbox-port", type=int, default=0, help="scale modes: the sandbox's port")
    up.add_argument("--monitor-port", type=int, default=0, help="scale modes: the monitor's port")
    up.set_defaults(fn=cmd_up)
    serve = sub.add_parser("serve", help="run one component (or several, comma-separated)")
    serve.add_argument("components", type=_component_list, metavar="component[,component...]")
    serve.add_argument("--port", type=int, default=0)
    # A listening socket inherited from `up --workers` (which migrated the database).
    serve.add_argument("--fd", type=int, default=None, help=argparse.SUPPRESS)
    serve.set_defaults(fn=cmd_serve)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(fn=cmd_migrate)
    check = sub.add_parser(
        "check", help="reconcile the ledger, payments and the PSP (exit 1 on any finding)"
    )
    check.add_argument("--json", action="store_true", help="findings as a JSON list")
    check.add_argument("--no-psp", action="store_true", help="skip the PSP (ledger, payments)")
    check.add_argument("--require-psp", action="store_true", help="an unreachable PSP is a finding")
    check.set_defaults(fn=cmd_check)
    ledger = sub.add_parser("ledger", help="ledger tools: replay the running balances")
    ledger.add_argument("action", choices=["replay"])
    ledger.set_defaults(fn=cmd_ledger)
    dlq = sub.add_parser("dlq", help="dead letters: list or replay")
    dlq.add_argument("action", choices=["list", "replay"])
    dlq.add_argument("id", nargs="?")
    dlq.set_defaults(fn=cmd_dlq)
    _user_parser(sub.add_parser("user", help="accounts: create, grant or revoke admin, list"))
    return p


def _user_parser(user: argparse.ArgumentParser) -> None:
    actions = user.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="a new account (a user, or an admin)")
    create.add_argument("--email", required=True)
    secret = create.add_mutually_exclusive_group(required=True)
    secret.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin's first line"
    )
    secret.add_argument("--password", help="the password (visible to other local users: ps)")
    create.add_argument("--name", help="display name (default: the email's local part)")
    create.add_argument("--admin", action="store_true", help="with the admin role")
    for action, what in (("grant-admin", "give"), ("revoke-admin", "take away")):
        role = actions.add_parser(action, help=f"{what} the admin role of an existing account")
        role.add_argument("email")
    actions.add_parser("list", help="every account: email, id, admin, created")
    user.set_defaults(fn=cmd_user)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(
            f"pocketpay {args.cmd}: settings.invalid: fix the POCKETPAY_* environment or .env "
            f"({problems})",
            file=sys.stderr,
        )
        return 1
    configure(settings.observability.log_level, settings.observability.log_json)
    setup_tracing(settings.observability.service_name, settings.observability.otlp_endpoint)
    try:
        return int(args.fn(args, settings))
    except KeyboardInterrupt:
        return 130
    except AppError as exc:
        print(f"pocketpay {args.cmd}: {exc.code}: {exc.detail}", file=sys.stderr)
        return 1
    except Exception as exc:  # the operator gets one line; the traceback is logged at DEBUG
        log.debug("cli.failed", command=args.cmd, exc_info=True)
        first_line = (str(exc).strip().splitlines() or [""])[0]
        print(f"pocketpay {args.cmd}: {type(exc).__name__}: {first_line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
