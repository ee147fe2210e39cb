"""The Idempotency-Key matrix, with Stripe's semantics: replay, reuse with another body,
missing key, per-user scope, and concurrent duplicates (one payment, one PSP authorization,
money moved once)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.api.helpers import (
    VISA,
    assert_problem,
    funded,
    intents_of,
    quiet_snapshot,
    snapshot,
)
from tests.support import Stack, eventually

REPLAYED = "idempotent-replayed"


def assert_replay(first: httpx.Response, again: httpx.Response) -> None:
    assert again.status_code == first.status_code, again.text
    assert again.headers.get(REPLAYED) == "true"
    assert REPLAYED not in first.headers
    body, replayed = first.json(), again.json()
    if first.status_code >= 400:  # a problem document: the same, but this request's id
        body.pop("request_id")
        assert replayed.pop("request_id") == again.headers["x-request-id"]
    assert replayed == body


async def test_same_key_same_body_replays_the_first_answer(stack: Stack) -> None:
    alice, bob = await funded(stack, 5000), await stack.user()
    key = uuid.uuid4().hex
    first = await stack.post(alice, "/api/v1/payments", VISA, key=key)
    assert first.status_code == 202, first.text
    pid = first.json()["id"]
    await stack.wait_status(alice, pid, "captured", "settled")
    # Even after the payment moved on, the replay is the stored answer, not a new payment.
    again = await stack.post(alice, "/api/v1/payments", VISA, key=key)
    assert_replay(first, again)
    # The same request with its fields in another order, or currency in lower case, is the
    # same request.
    same = {"payment_method": "pm_card_visa", "currency": "usd", "amount_minor": 500}
    assert_replay(first, await stack.post(alice, "/api/v1/payments", same, key=key))
    payments = (await stack.get(alice, "/api/v1/payments")).json()["data"]
    assert [p["id"] for p in payments].count(pid) == 1 and len(payments) == 2
    assert len(intents_of(stack, pid)) == 1

    send = {"recipient": bob["user"]["email"], "amount_minor": 1200, "currency": "USD"}
    first = await stack.post(alice, "/api/v1/transfers", send, key=key + "-t")
    assert first.status_code == 201, first.text
    for _ in range(3):
        assert_replay(first, await stack.post(alice, "/api/v1/transfers", send, key=key + "-t"))
    await stack.wait_available(alice, 5500 - 1200)
    assert (await stack.wallet(bob))["available_minor"] == 1200
    assert len((await stack.get(alice, "/api/v1/transfers")).json()["data"]) == 1
    assert await stack.ledger_problems() == []


async def test_capture_cancel_and_refund_replay(stack: Stack) -> None:
    alice = await stack.user()
    held = await stack.pay(alice, 6000, capture="manual", until="authorized")
    other = await stack.pay(alice, 1000, capture="manual", until="authorized")
    capture = f"/api/v1/payments/{held['id']}/capture"
    first = await stack.post(alice, capture, {"amount_minor": 5000}, key="cap-1")
    assert first.status_code == 200, first.text
    assert_replay(first, await stack.post(alice, capture, {"amount_minor": 5000}, key="cap-1"))
    await stack.wait_available(alice, 5000)

    cancel = f"/api/v1/payments/{other['id']}/cancel"
    first = await stack.post(alice, cancel, {}, key="cancel-1")
    assert first.status_code == 200, first.text
    assert_replay(first, await stack.post(alice, cancel, {}, key="cancel-1"))

    refunds = f"/api/v1/payments/{held['id']}/refunds"
    first = await stack.post(alice, refunds, {"amount_minor": 700}, key="refund-1")
    assert first.status_code == 202, first.text
    for _ in range(3):
        assert_replay(
            first, await stack.post(alice, refunds, {"amount_minor": 700}, key="refund-1")
        )
    await stack.wait_available(alice, 4300)
    payment = (await stack.get(alice, f"/api/v1/payments/{held['id']}")).json()
    assert payment["amount_refunded_minor"] == 700
    assert [pi.amount_received for pi in intents_of(stack, held["id"])] == [5000]
    assert await stack.ledger_problems() == []


async def test_a_business_error_is_stored_and_replayed(stack: Stack) -> None:
    alice, bob = await stack.user(), await stack.user()
    send = {"recipient": bob["user"]["email"], "amount_minor": 300, "currency": "USD"}
    first = await stack.post(alice, "/api/v1/transfers", send, key="broke")
    assert_problem(first, 422, "ledger.insufficient_funds")
    # Money arrives, but the key already has its answer (Stripe keeps declines too).
    await stack.pay(alice, 1000, until="settled")
    await stack.wait_available(alice, 1000)
    again = await stack.post(alice, "/api/v1/transfers", send, key="broke")
    assert_problem(again, 422, "ledger.insufficient_funds")
    assert_replay(first, again)
    assert (await stack.wallet(bob))["available_minor"] == 0
    # A new key is a new request.
    assert (await stack.post(alice, "/api/v1/transfers", send, key="rich")).status_code == 201


async def test_same_key_with_another_request_is_key_reused(stack: Stack) -> None:
    alice, bob = await funded(stack, 3000), await stack.user()
    first = await stack.post(alice, "/api/v1/payments", VISA, key="k")
    assert first.status_code == 202
    await stack.wait_status(alice, first.json()["id"], "settled")
    await stack.wait_available(alice, 3500)
    before = await quiet_snapshot(stack, alice, bob)
    send = {"recipient": bob["user"]["email"], "amount_minor": 10, "currency": "USD"}
    pid = first.json()["id"]
    for label, path, body in [
        ("other amount", "/api/v1/payments", VISA | {"amount_minor": 501}),
        ("other card", "/api/v1/payments", VISA | {"payment_method": "pm_card_mastercard"}),
        ("manual capture", "/api/v1/payments", VISA | {"capture_method": "manual"}),
        ("with metadata", "/api/v1/payments", VISA | {"metadata": {"a": "b"}}),
        ("another endpoint", "/api/v1/transfers", send),
        ("a refund", f"/api/v1/payments/{pid}/refunds", {}),
    ]:
        r = await stack.post(alice, path, body, key="k")
        assert_problem(r, 422, "idempotency.key_reused", label)
    assert await snapshot(stack, alice, bob) == before
    assert len(stack.sandbox.store.payment_intents) == 2


async def test_money_moving_posts_need_a_valid_key(sqlite_stack: Stack) -> None:
    # The key is checked before anything runs: one backend is enough.
    stack = sqlite_stack
    alice, bob = await funded(stack, 2000), await stack.user()
    (paid,) = (await stack.get(alice, "/api/v1/payments")).json()["data"]
    held = await stack.pay(alice, 900, capture="manual", until="authorized")
    await stack.wait_status(alice, paid["id"], "settled")
    before = await quiet_snapshot(stack, alice, bob)
    calls = [
        ("/api/v1/payments", VISA),
        (f"/api/v1/payments/{held['id']}/capture", {}),
        (f"/api/v1/payments/{held['id']}/cancel", {}),
        (f"/api/v1/payments/{paid['id']}/refunds", {}),
        (
            "/api/v1/transfers",
            {"recipient": bob["user"]["email"], "amount_minor": 5, "currency": "USD"},
        ),
    ]
    for path, body in calls:
        assert_problem(
            await stack.post(alice, path, body, key=None), 400, "idempotency.key_missing"
        )
        assert_problem(await stack.post(alice, path, body, key=""), 400, "idempotency.key_missing")
        r = await stack.post(alice, path, body, key="k" * 256)
        assert_problem(r, 400, "idempotency.key_invalid")
    assert await snapshot(stack, alice, bob) == before
    # Reads and auth never need one.
    assert (await stack.get(alice, "/api/v1/payments")).status_code == 200


async def test_a_rejected_request_does_not_use_up_its_key(stack: Stack) -> None:
    alice = await stack.user()
    bad = await stack.post(alice, "/api/v1/payments", VISA | {"amount_minor": -5}, key="retry-me")
    assert_problem(bad, 422, "validation.failed")
    ok = await stack.post(alice, "/api/v1/payments", VISA, key="retry-me")
    assert ok.status_code == 202, ok.text
    assert REPLAYED not in ok.headers


async def test_keys_are_scoped_per_user(stack: Stack) -> None:
    alice, bob = await stack.user(), await stack.user()
    a = await stack.post(alice, "/api/v1/payments", VISA, key="shared-key")
    b = await stack.post(bob, "/api/v1/payments", VISA, key="shared-key")
    assert (a.status_code, b.status_code) == (202, 202)
    assert REPLAYED not in a.headers and REPLAYED not in b.headers
    assert a.json()["id"] != b.json()["id"]
    # Not even a different body from the other user clashes.
    c = await stack.post(bob, "/api/v1/payments", VISA, key="shared-key")
    assert_replay(b, c)
    d = await stack.post(alice, "/api/v1/payments", VISA | {"amount_minor": 900}, key="other")
    assert d.status_code == 202
    for user, pid in ((alice, a.json()["id"]), (bob, b.json()["id"])):
        await stack.wait_status(user, pid, "captured", "settled")
        assert len(intents_of(stack, pid)) == 1


async def gather_until_settled(
    n: int, call: Callable[[], Awaitable[httpx.Response]]
) -> tuple[list[httpx.Response], list[httpx.Response]]:
    """Fire ``n`` identical calls at once, then retry those told "in progress" (with a
    Retry-After) until each has its answer. Returns (first wave, final answers)."""
    wave = list(await asyncio.gather(*(call() for _ in range(n))))

    async def answer() -> httpx.Response | None:
        r = await call()
        if r.status_code != 409:
            return r
        assert_problem(r, 409, "idempotency.in_progress")
        return None

    final = list(wave)
    for i, r in enumerate(wave):
        if r.status_code == 409:
            assert_problem(r, 409, "idempotency.in_progress")
            assert int(r.headers["retry-after"]) >= 1
            final[i] = await eventually(answer)
    return wave, final


def one_original(responses: list[httpx.Response], status: int) -> httpx.Response:
    originals = [r for r in responses if r.status_code == status and REPLAYED not in r.headers]
    assert len(originals) == 1, [(r.status_code, r.headers.get(REPLAYED)) for r in responses]
    for r in responses:
        assert r.status_code in (status, 409), r.text
        if r.status_code == status:
            assert r.json() == originals[0].json()
    return originals[0]


async def test_concurrent_duplicate_payments_make_one_payment_and_one_psp_call(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await stack.user()
    sandbox = stack.sandbox
    calls: list[tuple[str | None, bool]] = []
    execute = sandbox.execute

    async def counting(*args: Any, **kwargs: Any) -> Any:
        outcome = await execute(*args, **kwargs)
        calls.append((kwargs.get("idempotency_key"), outcome.replayed))
        return outcome

    monkeypatch.setattr(sandbox, "execute", counting)
    body = VISA | {"amount_minor": 4242}
    wave, final = await gather_until_settled(
        10, lambda: stack.post(alice, "/api/v1/payments", body, key="double-click")
    )
    original = one_original(wave, 202)
    one_original(final, 202)
    pid = original.json()["id"]
    await stack.wait_status(alice, pid, "captured", "settled")
    await stack.wait_available(alice, 4242)
    payments = (await stack.get(alice, "/api/v1/payments")).json()["data"]
    assert [p["id"] for p in payments] == [pid]
    assert len(intents_of(stack, pid)) == 1
    authorizations = [k for k, replayed in calls if k == f"pp_{pid}_authorize" and not replayed]
    assert len(authorizations) == 1, calls
    assert await stack.ledger_problems() == []


async def test_concurrent_duplicate_transfers_move_money_once(stack: Stack) -> None:
    alice, bob = await funded(stack, 1000), await stack.user()
    send = {"recipient": bob["user"]["email"], "amount_minor": 400, "currency": "USD"}
    wave, final = await gather_until_settled(
        10, lambda: stack.post(alice, "/api/v1/transfers", send, key="one-transfer")
    )
    original = one_original(wave, 201)
    one_original(final, 201)
    assert (await stack.wallet(alice))["available_minor"] == 600
    assert (await stack.wallet(bob))["available_minor"] == 400
    transfers = (await stack.get(bob, "/api/v1/transfers")).json()["data"]
    assert [t["id"] for t in transfers] == [original.json()["id"]]
    assert await stack.ledger_problems() == []
