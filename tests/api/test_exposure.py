"""Nothing internal is reachable on the public port.

Embedded mode: every route of the payments and ledger internal APIs (read from the component
apps themselves, so a new route is covered without touching this file) is 404 on the public
port, whatever the prefix an attacker tries; only the components' health routes are public,
under /components/<name>/. The sandbox's fault and tick switches do not exist unless enabled.
Scale mode: a component's internal API refuses a request without the right token, and an
empty configured token means a generated one, never an open API.
"""

from __future__ import annotations

import os
import stat
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from pocketpay.kit.component import health_paths, internal_auth, route_paths
from pocketpay.runtime import Runtime
from pocketpay.settings import Settings
from tests.support import Stack, make_settings

INTERNAL = ("payments", "ledger")
# Where an internal API was, or could plausibly be looked for, on the public port.
PREFIXES = ("/internal/{name}", "/components/{name}", "/{name}", "")


def _concrete(path: str) -> str:
    """A route template with made-up values for its parameters."""
    parts = [f"x{uuid.uuid4().hex[:8]}" if p.startswith("{") else p for p in path.split("/")]
    return "/".join(parts)


def internal_routes(stack: Stack, name: str) -> list[str]:
    """The component's internal API routes: everything but its public health routes."""
    app = stack.runtime.components[name].app
    public = set(health_paths(app))
    return [p for p in route_paths(app) if p not in public]


async def test_internal_routes_are_not_on_the_public_port(stack: Stack) -> None:
    alice, bob = await stack.user(), await stack.user()
    await stack.pay(alice, 5000)
    before = await stack.wait_available(alice, 5000)
    body = {
        "id": "t_attack",
        "sender_id": alice["user"]["id"],
        "recipient_id": bob["user"]["id"],
        "owner_id": alice["user"]["id"],
        "amount_minor": 5000,
        "currency": "USD",
        "debit_account_id": "sys_psp_receivable_USD",
        "credit_account_id": "wal_x_USD",
        "code": 1,
    }
    tried = 0
    for name in INTERNAL:
        routes = internal_routes(stack, name)
        assert routes, f"{name} has no internal routes: the enumeration is broken"
        for route in routes:
            for prefix in PREFIXES:
                path = prefix.format(name=name) + _concrete(route)
                for method in ("GET", "POST"):
                    r = await stack.http.request(method, path, json=body)
                    assert r.status_code == 404, (method, path, r.status_code, r.text[:200])
                    tried += 1
    assert tried >= 40
    # The money did not move, and no transfer appeared.
    assert await stack.wallet(alice) == before
    assert (await stack.wallet(bob))["available_minor"] == 0
    assert (await stack.get(alice, "/api/v1/transfers")).json()["data"] == []
    assert await stack.ledger_problems() == []


async def test_the_token_does_not_open_internal_routes_on_the_public_port(
    stack: Stack,
) -> None:
    """Even with the real token, the public port has no internal API to reach."""
    token = stack.runtime.settings.resolved_internal_token()
    user = await stack.user()
    for path in (
        "/internal/ledger/wallets",
        "/components/ledger/wallets",
        "/internal/payments/psp-events",
    ):
        r = await stack.http.get(
            path, params={"owner_id": "x"}, headers={"X-Internal-Token": token, **user["headers"]}
        )
        assert r.status_code == 404, (path, r.text)


async def test_component_health_is_public_under_components(stack: Stack) -> None:
    ready = await stack.http.get("/components/payments/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["component"] == "payments"
    assert (await stack.http.get("/components/ledger/healthz")).json()["status"] == "ok"
    deps = (await stack.http.get("/components/ledger/health/deps")).json()
    assert deps["component"] == "ledger" and "db" in deps["checks"]
    # The monitor's extra signals (read-only) are there too, without a token.
    backlog = await stack.http.get("/components/ledger/health/backlog")
    assert backlog.status_code == 200 and backlog.json()["consumer"] == "ledger"
    provider = await stack.http.get("/components/payments/health/provider")
    assert provider.status_code == 200 and "breaker" in provider.json()
    # Read-only: a POST to a health path is refused.
    assert (await stack.http.post("/components/payments/readyz")).status_code == 405
    # The embedded monitor polls exactly these.
    targets = stack.runtime._monitor_targets()
    assert targets["payments"] == f"{stack.base_url}/components/payments"
    assert targets["ledger"] == f"{stack.base_url}/components/ledger"
    for target in (targets["payments"], targets["ledger"]):
        assert (await stack.http.get(f"{target}/readyz")).status_code == 200


async def test_sandbox_ops_are_absent_unless_enabled(stack: Stack) -> None:
    for method in ("GET", "POST", "DELETE"):
        r = await stack.http.request(method, "/sandbox/_sandbox/faults", json={"outage": True})
        assert r.status_code == 404, (method, r.text)
    assert (await stack.http.post("/sandbox/_sandbox/tick")).status_code == 404
    assert stack.sandbox.faults.active is False
    # The PSP API itself is still there (the payments above went through it).
    assert (await stack.http.get("/sandbox/healthz")).status_code == 200


async def test_sandbox_ops_exist_when_enabled(tmp_path: Path) -> None:
    from tests.support import running_stack

    async with running_stack("sqlite", tmp_path, sandbox={"ops_enabled": True}) as stack:
        r = await stack.http.post("/sandbox/_sandbox/faults", json={"latency_ms": 1})
        assert r.status_code == 200, r.text
        assert stack.sandbox.faults.latency_ms == 1
        assert (await stack.http.delete("/sandbox/_sandbox/faults")).json()["latency_ms"] == 0


# -- scale mode: a process serving one component ---------------------------------------------


async def _scale_ledger(tmp_path: Path, **extra: Any) -> Runtime:
    settings = await make_settings("sqlite", tmp_path, 8099, **extra)
    return Runtime(settings, ("ledger",))


@pytest.mark.parametrize("configured", ["", "configured-internal-token-" + "t" * 20])
async def test_scale_component_requires_the_token(tmp_path: Path, configured: str) -> None:
    runtime = await _scale_ledger(tmp_path, internal_token=configured)
    token = runtime.settings.resolved_internal_token()
    assert token and (configured == "" or token == configured)
    assert runtime.app is runtime.components["ledger"].app  # the internal API is served
    transport = httpx.ASGITransport(app=runtime.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://ledger") as http:
            for headers in ({}, {"X-Internal-Token": ""}, {"X-Internal-Token": "wrong"}):
                r = await http.get("/wallets", params={"owner_id": "u1"}, headers=headers)
                assert r.status_code == 401, (headers, r.text)
                assert r.json()["code"] == "auth.internal_token"
                r = await http.post("/wallet-transfers", json={}, headers=headers)
                assert r.status_code == 401, (headers, r.text)
            ok = await http.get(
                "/wallets", params={"owner_id": "u1"}, headers={"X-Internal-Token": token}
            )
            assert ok.status_code == 200, ok.text
            assert ok.json() == {"data": []}
            # Probes need no token.
            assert (await http.get("/readyz")).status_code == 200
            # The generic endpoints are gone, even with the token.
            gone = await http.post("/transfers", json={}, headers={"X-Internal-Token": token})
            assert gone.status_code in (404, 405)
    finally:
        await runtime.engine.dispose()


def test_internal_auth_refuses_an_empty_token() -> None:
    with pytest.raises(ValueError):
        internal_auth("")


def test_empty_token_is_generated_once_into_var_dir(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "var", internal_token="")
    token = settings.resolved_internal_token()
    path = tmp_path / "var" / "internal_token"
    assert path.read_text().strip() == token
    assert len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Stable across calls and across processes sharing var_dir.
    assert settings.resolved_internal_token() == token
    assert Settings(var_dir=tmp_path / "var").resolved_internal_token() == token
    # Another var_dir, another token; a configured token wins and writes nothing.
    assert Settings(var_dir=tmp_path / "other").resolved_internal_token() != token
    explicit = Settings(var_dir=tmp_path / "third", internal_token="given")
    assert explicit.resolved_internal_token() == "given"
    assert not (tmp_path / "third" / "internal_token").exists()


def test_processes_starting_at_once_agree_on_the_generated_token(tmp_path: Path) -> None:
    var = tmp_path / "var"
    with ThreadPoolExecutor(max_workers=16) as pool:
        tokens = set(pool.map(lambda _: Settings(var_dir=var).resolved_internal_token(), range(64)))
    assert len(tokens) == 1
    assert os.listdir(var) == ["internal_token"]  # no temporary file left behind
