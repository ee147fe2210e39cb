"""Request-Id and the access log: every response carries a request id (the client's when it
is sane, else ``req_...``), every log line of the request carries it, and each request writes
one JSON access log line with its route template, status, latency and caller, never a secret.

A small app built by ``kit.httpapp.new_app`` (served by uvicorn) checks the mechanism; the
whole stack checks the public API on both backends."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI

from pocketpay.kit.httpapp import new_app
from pocketpay.kit.logging import bind_principal
from tests.logs import access_lines, parsed, rendered_logs
from tests.support import Stack, free_port, serving

GENERATED = re.compile(r"req_[0-9a-f]{24}")
SECRET = "Bearer sk_secret_value_that_must_never_be_logged"
log = structlog.get_logger("tests.probe")


def _probe_app() -> FastAPI:
    app = new_app("probe", title="probe", max_body_bytes=100)

    @app.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        bind_principal("usr_probe", key_id="key_probe")
        log.info("probe.thing_seen", thing_id=thing_id)
        return {"id": thing_id}

    @app.post("/things")
    async def create(body: dict[str, Any]) -> dict[str, Any]:
        return body

    inner = new_app("inner", title="inner")

    @inner.get("/ping")
    async def ping() -> dict[str, str]:
        log.info("probe.inner_ping")
        return {"pong": "yes"}

    app.mount("/inner", inner)
    return app


@pytest.fixture
async def probe() -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serving(_probe_app(), free_port()) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
    ):
        yield client


async def test_request_id_binds_every_line_and_one_access_line(
    probe: httpx.AsyncClient,
) -> None:
    with rendered_logs() as lines:
        r = await probe.get("/things/t_1", headers={"Authorization": SECRET})
    assert r.status_code == 200
    rid = r.headers["request-id"]
    assert GENERATED.fullmatch(rid)
    assert r.headers["x-request-id"] == rid
    mine = [e for e in parsed(lines) if e.get("request_id") == rid]
    assert [e["event"] for e in mine] == ["probe.thing_seen", "http.access"]
    seen, access = mine
    assert seen["thing_id"] == "t_1"
    assert (seen["user_id"], seen["key_id"]) == ("usr_probe", "key_probe")
    assert access["component"] == "probe"
    assert access["method"] == "GET"
    assert access["route"] == "/things/{thing_id}"  # the template, never the id
    assert access["status"] == 200
    assert isinstance(access["latency_ms"], float) and 0 <= access["latency_ms"] < 10_000
    assert (access["user_id"], access["key_id"]) == ("usr_probe", "key_probe")
    assert access["level"] == "info" and access["timestamp"]
    assert not any("sk_secret_value" in line for line in lines)


@pytest.mark.parametrize(
    ("headers", "echoed"),
    [
        ({"Request-Id": "client-abc.1:2"}, "client-abc.1:2"),
        ({"X-Request-Id": "legacy_42"}, "legacy_42"),
        ({"Request-Id": "first", "X-Request-Id": "second"}, "first"),
        ({"Request-Id": "has space"}, None),
        ({"Request-Id": "x" * 65}, None),
        ({"Request-Id": '{"forged": 1}'}, None),
        ({"Request-Id": "-leading-dash"}, None),
    ],
)
async def test_a_sane_client_request_id_is_echoed_and_logged(
    probe: httpx.AsyncClient, headers: dict[str, str], echoed: str | None
) -> None:
    with rendered_logs() as lines:
        r = await probe.get("/inner/ping", headers=headers)
    assert r.status_code == 200
    rid = r.headers["request-id"]
    if echoed is None:
        assert GENERATED.fullmatch(rid), rid
    else:
        assert rid == echoed
    assert r.headers["x-request-id"] == rid
    # The app mounted inside logs with the outer request's id, and the request is logged
    # once, by the outer app, under its full route template.
    assert [e["event"] for e in parsed(lines) if e.get("request_id") == rid] == [
        "probe.inner_ping",
        "http.access",
    ]
    (access,) = access_lines(lines, rid)
    assert (access["component"], access["route"]) == ("probe", "/inner/ping")
    assert "user_id" not in access  # nobody was named in this request


async def test_errors_and_refusals_have_a_request_id_and_an_access_line(
    probe: httpx.AsyncClient,
) -> None:
    with rendered_logs() as lines:
        missing = await probe.get("/no/such/path")
        too_large = await probe.post("/things", json={"x": "y" * 200})
        wrong_method = await probe.delete("/things/t_1")
    for r, status, route in (
        (missing, 404, "unmatched"),
        (too_large, 413, "unmatched"),  # refused on Content-Length, before routing
        (wrong_method, 405, "/things/{thing_id}"),
    ):
        assert r.status_code == status
        rid = r.headers["request-id"]
        assert r.json()["request_id"] == rid  # the problem document names it too
        (access,) = access_lines(lines, rid)
        assert (access["status"], access["route"]) == (status, route)


async def test_the_public_api_logs_each_request_without_secrets(stack: Stack) -> None:
    with rendered_logs() as lines:
        alice = await stack.user()
        payment = await stack.pay(alice, 1200)
        r = await stack.get(alice, f"/api/v1/payments/{payment['id']}")
        rid = "client-req-1"
        again = await stack.http.get(
            f"/api/v1/payments/{payment['id']}", headers={**alice["headers"], "Request-Id": rid}
        )
    assert r.status_code == again.status_code == 200
    (access,) = access_lines(lines, r.headers["request-id"])
    assert (access["method"], access["route"], access["status"]) == (
        "GET",
        "/api/v1/payments/{payment_id}",
        200,
    )
    assert again.headers["request-id"] == rid
    (access,) = access_lines(lines, rid)
    assert access["route"] == "/api/v1/payments/{payment_id}"
    # The bearer token check named the caller.
    assert access["user_id"] == alice["user"]["id"] and "key_id" not in access
    creates = [
        e
        for e in parsed(lines)
        if e.get("event") == "http.access" and e["route"] == "/api/v1/payments"
    ]
    assert [(e["method"], e["status"], e["user_id"]) for e in creates] == [
        ("POST", 202, alice["user"]["id"])
    ]
    # Neither the access token nor the refresh token (sent and answered in these requests)
    # nor the password reached any log line.
    secrets = (alice["access_token"], alice["refresh_token"], "correct-horse-battery")
    assert not [line for line in lines if any(s in line for s in secrets)]
