"""Assertions shared by the API error, idempotency and webhook tests."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.support import Stack, eventually

PROBLEM_FIELDS = {"type", "title", "status", "detail", "code", "request_id"}
VISA = {"amount_minor": 500, "currency": "USD", "payment_method": "pm_card_visa"}


def assert_problem(r: httpx.Response, status: int, code: str, label: str = "") -> dict[str, Any]:
    """One RFC 9457 problem document with our stable ``code`` and the request's id."""
    where = f"{label}: {r.request.method} {r.request.url.path} -> {r.status_code} {r.text[:300]}"
    assert r.status_code == status, where
    assert r.headers["content-type"].startswith("application/problem+json"), where
    body: dict[str, Any] = r.json()
    assert set(body) >= PROBLEM_FIELDS, where
    assert body["status"] == status, where
    assert body["code"] == code, where
    assert body["type"].endswith("/" + code), where
    assert body["title"] and (status >= 500 or body["title"] != "Internal error"), where
    assert isinstance(body["detail"], str) and body["detail"], where
    assert body["request_id"] and body["request_id"] == r.headers.get("x-request-id"), where
    return body


async def post_raw(
    stack: Stack,
    user: dict[str, Any] | None,
    path: str,
    content: bytes,
    *,
    content_type: str = "application/json",
    key: str | None = "auto",
) -> httpx.Response:
    headers = dict(user["headers"]) if user else {}
    headers["Content-Type"] = content_type
    if key == "auto":
        key = uuid.uuid4().hex
    if key is not None:
        headers["Idempotency-Key"] = key
    return await stack.http.post(path, content=content, headers=headers)


async def post_chunked(
    stack: Stack, user: dict[str, Any], path: str, chunks: int, chunk: bytes
) -> httpx.Response:
    """A body sent without Content-Length (chunked transfer encoding)."""

    async def body() -> Any:
        for _ in range(chunks):
            yield chunk

    headers = dict(user["headers"]) | {
        "Content-Type": "application/json",
        "Idempotency-Key": uuid.uuid4().hex,
    }
    return await stack.http.post(path, content=body(), headers=headers)


async def snapshot(stack: Stack, *users: dict[str, Any]) -> list[Any]:
    """Everything a user can see that money movement would change."""
    seen: list[Any] = []
    for user in users:
        payments = (await stack.get(user, "/api/v1/payments", limit=100)).json()
        timelines = [
            (await stack.get(user, f"/api/v1/payments/{p['id']}/events")).json()
            for p in payments["data"]
        ]
        seen.append(
            {
                "payments": payments,
                "timelines": timelines,
                "wallets": (await stack.get(user, "/api/v1/wallets")).json(),
                "transfers": (await stack.get(user, "/api/v1/transfers", limit=100)).json(),
            }
        )
    return seen


async def quiet_snapshot(stack: Stack, *users: dict[str, Any]) -> list[Any]:
    """A snapshot once background work has settled: every sandbox webhook delivered and two
    reads in a row agree (a late webhook may still touch a payment's ``updated_at``)."""
    last: list[Any] = []

    async def stable() -> list[Any] | None:
        nonlocal last
        await stack.sandbox.flush_webhooks()
        now = await snapshot(stack, *users)
        same, last = now == last, now
        return now if same else None

    return await eventually(stable)


def without_updated_at(snap: list[Any]) -> list[Any]:
    """A snapshot minus payments' ``updated_at``: the payments component touches it when a
    PSP event is applied even if the event changes nothing else."""
    out = []
    for seen in snap:
        data = [{k: v for k, v in p.items() if k != "updated_at"} for p in seen["payments"]["data"]]
        out.append(seen | {"payments": seen["payments"] | {"data": data}})
    return out


def intents_of(stack: Stack, payment_id: str) -> list[Any]:
    """The sandbox PSP's payment intents created for one of our payments."""
    return [
        pi
        for pi in stack.sandbox.store.payment_intents.values()
        if pi.metadata.get("payment_id") == payment_id
    ]


async def funded(stack: Stack, amount: int = 5000) -> dict[str, Any]:
    """A user whose USD wallet holds ``amount`` available (topped up by card)."""
    user = await stack.user()
    await stack.pay(user, amount, until="settled")
    await stack.wait_available(user, amount)
    return user
