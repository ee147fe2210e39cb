"""``pocketpay user create|grant-admin|revoke-admin|list`` and the CLI's failures, run as the
operator runs them (a subprocess) against a running stack's database, on SQLite and on
PostgreSQL + NATS: an account made by the CLI logs in through the API with its role, and every
failure exits non-zero with one line on stderr, never a traceback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support import PASSWORD, Stack

ADMIN_PAGE = "/api/v1/admin/dead-letters"


def _env(stack: Stack) -> dict[str, str]:
    s = stack.runtime.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("POCKETPAY_")}
    return env | {
        "POCKETPAY_VAR_DIR": str(s.var_dir),
        "POCKETPAY_DATABASE_URL": s.resolved_database_url(),
        "POCKETPAY_BUS_URL": s.bus_url,
        "POCKETPAY_BUS__STREAM": s.bus.stream,
        "POCKETPAY_BUS__SUBJECT_PREFIX": s.bus.subject_prefix,
    }


def _run(env: dict[str, str], *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pocketpay.cli", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


async def _cli(stack: Stack, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_run, _env(stack), *argv, stdin=stdin)


def _table(out: str) -> list[dict[str, str]]:
    header, *rows = out.splitlines()
    assert header.split() == ["EMAIL", "ID", "ADMIN", "CREATED"]
    return [dict(zip(("email", "id", "admin", "created"), r.split(), strict=True)) for r in rows]


def _failed(done: subprocess.CompletedProcess[str], command: str, code: str) -> str:
    assert done.returncode == 1, done
    assert done.stdout == ""
    [line] = done.stderr.splitlines()  # one line, no traceback
    assert line.startswith(f"pocketpay {command}: {code}: "), line
    return line


async def _login(stack: Stack, email: str) -> dict[str, Any]:
    r = await stack.http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_user_commands_create_grant_revoke_list(stack: Stack) -> None:
    done = await _cli(
        stack, "user", "create", "--email", "Ops@Example.com", "--password-stdin", "--admin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [ops] = _table(done.stdout)
    assert (ops["email"], ops["admin"]) == ("ops@example.com", "yes")
    session = await _login(stack, "ops@example.com")
    assert (session["user"]["id"], session["user"]["role"]) == (ops["id"], "admin")
    bearer = {"Authorization": f"Bearer {session['access_token']}"}
    assert (await stack.http.get(ADMIN_PAGE, headers=bearer)).status_code == 200

    done = await _cli(stack, "user", "create", "--email", "dev@example.com", "--password", PASSWORD)
    assert done.returncode == 0, done.stderr
    [dev] = _table(done.stdout)
    assert dev["admin"] == "no"
    assert (await _login(stack, "dev@example.com"))["user"]["role"] == "user"

    done = await _cli(stack, "user", "grant-admin", "DEV@example.com")
    assert done.returncode == 0, done.stderr
    assert _table(done.stdout) == [dev | {"admin": "yes"}]
    assert (await _login(stack, "dev@example.com"))["user"]["role"] == "admin"

    # Revoked: the next login is a user's, and the sessions begun as admin cannot refresh.
    done = await _cli(stack, "user", "revoke-admin", "ops@example.com")
    assert done.returncode == 0, done.stderr
    assert _table(done.stdout) == [ops | {"admin": "no"}]
    r = await stack.http.post(
        "/api/v1/auth/refresh", json={"refresh_token": session["refresh_token"]}
    )
    assert (r.status_code, r.json()["code"]) == (401, "auth.invalid_refresh_token")
    again = await _login(stack, "ops@example.com")
    assert again["user"]["role"] == "user"
    bearer = {"Authorization": f"Bearer {again['access_token']}"}
    assert (await stack.http.get(ADMIN_PAGE, headers=bearer)).status_code == 403

    done = await _cli(stack, "user", "list")
    assert done.returncode == 0, done.stderr
    assert _table(done.stdout) == [ops | {"admin": "no"}, dev | {"admin": "yes"}]


async def test_user_command_failures_are_one_line(stack: Stack) -> None:
    await stack.user("taken@example.com")
    taken = await _cli(
        stack, "user", "create", "--email", "taken@example.com", "--password", PASSWORD
    )
    assert "taken@example.com has an account already" in _failed(taken, "user", "auth.email_taken")
    bad = await _cli(stack, "user", "create", "--email", "nope", "--password-stdin", stdin="short")
    line = _failed(bad, "user", "validation.failed")
    assert "email: value is not a valid email address" in line
    assert "password: String should have at least 10 characters" in line
    missing = await _cli(stack, "user", "grant-admin", "ghost@example.com")
    assert "ghost@example.com" in _failed(missing, "user", "auth.user_not_found")
    done = await _cli(stack, "user", "list")
    assert [u["email"] for u in _table(done.stdout)] == ["taken@example.com"]


async def test_dlq_replay_of_an_unknown_id_fails(stack: Stack) -> None:
    done = await _cli(stack, "dlq", "replay", "dlq_unknown")
    assert "dlq_unknown" in _failed(done, "dlq", "dlq.not_found")


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POCKETPAY_")}
    env |= {
        "POCKETPAY_VAR_DIR": str(tmp_path),
        "POCKETPAY_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:9/none",
    }
    done = _run(env, "user", "list")
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith("pocketpay user: ConnectionRefusedError: "), line


def test_invalid_settings_are_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POCKETPAY_")}
    done = _run(
        env | {"POCKETPAY_VAR_DIR": str(tmp_path), "POCKETPAY_PORT": "eighty"}, "user", "list"
    )
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith("pocketpay user: settings.invalid: fix the POCKETPAY_* environment")
    assert "port: Input should be a valid integer" in line
