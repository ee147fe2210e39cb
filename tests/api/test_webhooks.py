"""The Stripe-Signature matrix on POST /api/v1/webhooks/stripe, duplicates and events that
arrive out of order. Signatures are made here the way Stripe documents them:
``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
from sqlalchemy import select

from pocketpay.payments.models import psp_events
from tests.api.helpers import assert_problem, intents_of, quiet_snapshot, without_updated_at
from tests.support import Stack

SECRET = "whsec_pocketpay_sandbox"
HOOK = "/api/v1/webhooks/stripe"


def signature(payload: bytes, secret: str = SECRET, at: int | None = None) -> str:
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event(type_: str, obj: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_test{uuid.uuid4().hex[:20]}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
    }


async def deliver(
    stack: Stack, payload: bytes, sig: str | None = "sign", **headers: str
) -> httpx.Response:
    if sig == "sign":
        sig = signature(payload)
    if sig is not None:
        headers["Stripe-Signature"] = sig
    headers.setdefault("Content-Type", "application/json")
    return await stack.http.post(HOOK, content=payload, headers=headers)


async def stored(stack: Stack, event_id: str) -> bool:
    async with stack.runtime.engine.connect() as conn:
        q = select(psp_events.c.event_id).where(psp_events.c.event_id == event_id)
        return (await conn.execute(q)).first() is not None


async def test_signature_matrix(stack: Stack) -> None:
    alice = await stack.user()
    payment = await stack.pay(alice, 2500, until="settled")
    await stack.wait_available(alice, 2500)
    (pi,) = intents_of(stack, payment["id"])
    evt = event("payment_intent.succeeded", pi.to_stripe())
    payload = json.dumps(evt).encode()
    now = int(time.time())
    before = await quiet_snapshot(stack, alice)

    tampered = payload.replace(b'"amount": 2500', b'"amount": 9999')
    assert tampered != payload
    bad: list[tuple[str, bytes, str | None]] = [
        ("missing header", payload, None),
        ("empty header", payload, ""),
        ("not a signature", payload, "hello"),
        ("tampered body", tampered, signature(payload)),
        ("wrong secret", payload, signature(payload, "whsec_someone_else")),
        ("stale (> 300 s)", payload, signature(payload, at=now - 301)),
        ("very stale", payload, signature(payload, at=now - 86_400)),
        ("no v1", payload, signature(payload).replace("v1=", "v0=")),
        ("no timestamp", payload, signature(payload).split(",", 1)[1]),
        (
            "signed another timestamp",
            payload,
            signature(payload, at=now).replace(f"t={now}", "t=1"),
        ),
    ]
    for label, body, sig in bad:
        r = await deliver(stack, body, sig)
        assert_problem(r, 400, "webhooks.invalid_signature", label)
    assert not await stored(stack, evt["id"])
    assert await quiet_snapshot(stack, alice) == before

    # Recent enough (within the 300 s tolerance) and one of several v1 signatures matching
    # (as during a secret roll) are both accepted.
    old_ok = await deliver(stack, payload, signature(payload, at=now - 120))
    assert old_ok.status_code == 200, old_ok.text
    assert old_ok.json() == {"received": True, "status": "processed"}
    assert await stored(stack, evt["id"])
    second = event("payment_intent.succeeded", pi.to_stripe())
    body = json.dumps(second).encode()
    rolled = signature(body, "whsec_old") + "," + signature(body).split(",")[1]
    r = await deliver(stack, body, rolled)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "processed"
    assert without_updated_at(await quiet_snapshot(stack, alice)) == without_updated_at(before)


async def test_signed_bodies_that_are_not_events_are_400(sqlite_stack: Stack) -> None:
    # Parsing happens before any database work: one backend is enough.
    stack = sqlite_stack
    for label, body in [
        ("not JSON", b"{nope"),
        ("not UTF-8", b'{"id": "\xff"}'),
        ("a list", b"[1, 2]"),
        ("a string", b'"evt"'),
        ("null", b"null"),
        ("empty object", b"{}"),
        ("id not a string", json.dumps(event("x", {}) | {"id": 5}).encode()),
        ("no type", json.dumps({"id": "evt_1", "data": {"object": {}}}).encode()),
        ("data a list", json.dumps(event("x", {}) | {"data": []}).encode()),
        ("object a string", json.dumps(event("x", {}) | {"data": {"object": "pi"}}).encode()),
        ("id with NUL", json.dumps(event("x", {}, "evt_\x00")).encode()),
    ]:
        assert_problem(await deliver(stack, body), 400, "webhooks.malformed", label)
    # Events about intents we do not know, or of types we do not handle, are acknowledged
    # (once) and change nothing.
    alice = await stack.user()
    await stack.pay(alice, 800, until="settled")
    await stack.wait_available(alice, 800)
    before = await quiet_snapshot(stack, alice)
    ghost = {"id": "pi_ghost", "object": "payment_intent", "status": "succeeded"}
    for obj in (ghost | {"metadata": {"payment_id": "pay_ghost"}}, ghost | {"metadata": {}}, ghost):
        r = await deliver(stack, json.dumps(event("payment_intent.succeeded", obj)).encode())
        assert r.json() == {"received": True, "status": "processed"}, r.text
    assert await quiet_snapshot(stack, alice) == before
    unknown = event("customer.created", {"id": "cus_1", "object": "customer"})
    r = await deliver(stack, json.dumps(unknown).encode())
    assert r.json() == {"received": True, "status": "processed"}
    assert await stored(stack, unknown["id"])


async def test_a_replayed_event_is_processed_once(stack: Stack) -> None:
    alice = await stack.user()
    payment = await stack.pay(alice, 1500, until="settled")
    await stack.wait_available(alice, 1500)
    await stack.sandbox.flush_webhooks()
    # The sandbox already delivered its events: sending one of them again is a duplicate.
    delivered = [
        e
        for e in stack.sandbox.events_of("payment_intent.succeeded")
        if e["data"]["object"]["metadata"].get("payment_id") == payment["id"]
    ]
    assert len(delivered) == 1 and await stored(stack, delivered[0]["id"])
    before = await quiet_snapshot(stack, alice)
    for _ in range(3):
        r = await deliver(stack, json.dumps(delivered[0]).encode())
        assert r.status_code == 200, r.text
        assert r.json() == {"received": True, "status": "duplicate"}

    # A new event id: processed the first time, a duplicate after.
    (pi,) = intents_of(stack, payment["id"])
    fresh = json.dumps(event("payment_intent.succeeded", pi.to_stripe())).encode()
    statuses = [(await deliver(stack, fresh)).json()["status"] for _ in range(3)]
    assert statuses == ["processed", "duplicate", "duplicate"]
    assert without_updated_at(await quiet_snapshot(stack, alice)) == without_updated_at(before)

    # A refund's events replayed under new ids do not refund (or un-refund) twice.
    r = await stack.post(alice, f"/api/v1/payments/{payment['id']}/refunds", {"amount_minor": 500})
    assert r.status_code == 202, r.text
    refund = r.json()
    await stack.wait_available(alice, 1000)
    refund_events = [
        e
        for e in stack.sandbox.events
        if e["type"] in ("refund.created", "refund.updated", "charge.refunded")
        and e["data"]["object"]["metadata"].get("refund_id", refund["id"]) == refund["id"]
    ]
    assert refund_events
    before = await quiet_snapshot(stack, alice)
    for e in refund_events:
        again = dict(e, id=f"evt_again{uuid.uuid4().hex[:16]}")
        r = await deliver(stack, json.dumps(again).encode())
        assert r.json()["status"] == "processed", r.text
    assert without_updated_at(await quiet_snapshot(stack, alice)) == without_updated_at(before)
    got = (await stack.get(alice, f"/api/v1/payments/{payment['id']}")).json()
    assert got["amount_refunded_minor"] == 500
    assert (await stack.get(alice, f"/api/v1/refunds/{refund['id']}")).json()["status"] == (
        "succeeded"
    )
    assert await stack.ledger_problems() == []


async def test_out_of_order_events_never_move_a_payment_backwards(stack: Stack) -> None:
    alice = await stack.user()
    payment = await stack.pay(alice, 3000, capture="manual", until="authorized")
    await stack.sandbox.flush_webhooks()
    (pi,) = intents_of(stack, payment["id"])
    authorized_snapshot = pi.to_stripe()  # what the PSP said while it waited for capture
    assert authorized_snapshot["status"] == "requires_capture"
    r = await stack.post(alice, f"/api/v1/payments/{payment['id']}/capture", {})
    assert r.status_code == 200 and r.json()["status"] == "captured", r.text
    await stack.wait_available(alice, 3000)
    failed_snapshot = pi.to_stripe() | {"status": "requires_payment_method"}
    canceled_snapshot = pi.to_stripe() | {"status": "canceled"}
    before = await quiet_snapshot(stack, alice)
    status = before[0]["payments"]["data"][0]["status"]
    assert status in ("captured", "settled")

    late = [
        ("payment_intent.amount_capturable_updated", authorized_snapshot),
        ("payment_intent.created", authorized_snapshot | {"status": "requires_confirmation"}),
        ("payment_intent.payment_failed", failed_snapshot),
        ("payment_intent.canceled", canceled_snapshot),
    ]
    for type_, obj in late:
        r = await deliver(stack, json.dumps(event(type_, obj)).encode())
        assert r.status_code == 200 and r.json()["status"] == "processed", r.text
    after = await quiet_snapshot(stack, alice)
    # Nothing went back; the only change allowed is moving forward to settled.
    got = after[0]["payments"]["data"][0]
    assert got["status"] in ("captured", "settled") and got["amount_captured_minor"] == 3000
    steps = [e["to_status"] for e in after[0]["timelines"][0]["data"]]
    assert steps[:3] == ["created", "authorized", "captured"]
    assert steps[3:] in ([], ["settled"])
    assert after[0]["wallets"] == before[0]["wallets"]

    settled = await stack.wait_status(alice, payment["id"], "settled")
    for type_, obj in [*late, ("payment_intent.succeeded", pi.to_stripe())]:
        r = await deliver(stack, json.dumps(event(type_, obj)).encode())
        assert r.status_code == 200, r.text
    final = await quiet_snapshot(stack, alice)
    assert final[0]["payments"]["data"][0]["status"] == "settled"
    assert (
        final[0]["payments"]["data"][0]["amount_captured_minor"] == settled["amount_captured_minor"]
    )
    steps = [e["to_status"] for e in final[0]["timelines"][0]["data"]]
    assert steps == ["created", "authorized", "captured", "settled"]
    assert await stack.ledger_problems() == []
