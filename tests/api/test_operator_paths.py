"""Operator and seed paths: /health, /live and /ready answer as /healthz and /readyz on every
component, /swagger/index.html leads to /docs, none of them in the schema; CORS is off unless
origins are configured, and then a preflight from one of them is allowed and others get no
CORS headers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.support import Stack, eventually, running_stack

ALLOWED = "https://app.example.com"
OTHER = "https://evil.example.net"
# Where each component's health routes are in embedded mode.
PREFIXES = ("", "/components/payments", "/components/ledger", "/sandbox")


def _same_readiness(a: httpx.Response, b: httpx.Response) -> None:
    assert a.status_code == b.status_code
    left, right = a.json(), b.json()
    for body in (left, right):
        body.pop("latency_ms")
        body.pop("details", None)  # the measured latencies again
    assert left == right


async def test_health_aliases_answer_like_healthz_and_readyz(stack: Stack) -> None:
    for prefix in PREFIXES:
        healthz = await stack.http.get(f"{prefix}/healthz")
        assert healthz.status_code == 200
        for alias in ("/health", "/live"):
            r = await stack.http.get(f"{prefix}{alias}")
            assert r.status_code == 200, (prefix, alias, r.text)
            assert r.json()["status"] == "ok"
            assert r.json().keys() == healthz.json().keys()
        # Right after start the first checks may still wait for the startup burst of
        # background jobs (SQLite has one writer): the aliases are compared once ready.
        readyz = await eventually(lambda p=prefix: _ready(stack, f"{p}/readyz"))
        ready = await eventually(lambda p=prefix: _ready(stack, f"{p}/ready"))
        _same_readiness(ready, readyz)


async def _ready(stack: Stack, path: str) -> httpx.Response | None:
    r = await stack.http.get(path)
    return r if r.json()["status"] in ("ready", "degraded") else None


async def test_swagger_index_redirects_to_docs_and_aliases_stay_out_of_the_schema(
    sqlite_stack: Stack,
) -> None:
    r = await sqlite_stack.http.get("/swagger/index.html")
    assert r.status_code == 307
    assert r.headers["location"] == "/docs"
    followed = await sqlite_stack.http.get("/swagger/index.html", follow_redirects=True)
    assert followed.status_code == 200 and "swagger-ui" in followed.text
    paths = (await sqlite_stack.http.get("/openapi.json")).json()["paths"]
    assert {"/healthz", "/readyz"} <= paths.keys()
    extras = {"/health", "/live", "/ready", "/swagger/index.html", "/docs", "/redoc"}
    assert not extras & paths.keys()


def _preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
    }


def _cors_headers(r: httpx.Response) -> dict[str, Any]:
    return {k: v for k, v in r.headers.items() if k.startswith("access-control-")}


async def test_cors_is_off_by_default(sqlite_stack: Stack) -> None:
    r = await sqlite_stack.http.options("/api/v1/payments", headers=_preflight(ALLOWED))
    assert r.status_code == 405  # no CORS: OPTIONS is just a method the route lacks
    assert _cors_headers(r) == {}
    r = await sqlite_stack.http.get("/healthz", headers={"Origin": ALLOWED})
    assert _cors_headers(r) == {}


async def test_cors_allows_configured_origins_only(tmp_path: Path) -> None:
    async with running_stack("sqlite", tmp_path, cors_origins=[ALLOWED]) as stack:
        r = await stack.http.options("/api/v1/payments", headers=_preflight(ALLOWED))
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == ALLOWED
        assert "POST" in r.headers["access-control-allow-methods"]
        allowed_headers = r.headers["access-control-allow-headers"].lower()
        assert {"authorization", "content-type", "idempotency-key"} <= {
            h.strip() for h in allowed_headers.split(",")
        }
        assert r.headers["request-id"]  # the preflight is a request like any other

        refused = await stack.http.options("/api/v1/payments", headers=_preflight(OTHER))
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        assert refused.headers["request-id"]

        alice = await stack.user()
        r = await stack.http.get("/api/v1/me", headers={**alice["headers"], "Origin": ALLOWED})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == ALLOWED
        assert "request-id" in r.headers["access-control-expose-headers"].lower()
        r = await stack.http.get("/api/v1/me", headers={**alice["headers"], "Origin": OTHER})
        assert r.status_code == 200
        # Starlette also lists its exposed and preflight headers to other origins; without
        # Access-Control-Allow-Origin the browser gives their page nothing.
        assert "access-control-allow-origin" not in r.headers
        assert "access-control-allow-credentials" not in r.headers
