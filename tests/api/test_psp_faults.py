"""The PSP misbehaves: a timeout is "unknown", never "failed", and the retry with the same
idempotency key charges once; an outage opens the breaker and degrades, it does not corrupt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support import Stack, eventually, running_stack

FAST_PSP = {"timeout_seconds": 0.5, "attempt_retry_seconds": 0.3}


def _intents_for(stack: Stack, payment_id: str) -> list[Any]:
    intents = stack.sandbox.store.payment_intents.values()
    return [pi for pi in intents if pi.metadata.get("payment_id") == payment_id]


async def _timeline(stack: Stack, user: dict[str, Any], pid: str) -> list[dict[str, Any]]:
    body = (await stack.get(user, f"/api/v1/payments/{pid}/events")).json()
    return list(body["data"])


async def test_timeout_is_unknown_then_resolved_with_a_single_charge(tmp_path: Path) -> None:
    async with running_stack("sqlite", tmp_path, psp=FAST_PSP) as stack:
        alice = await stack.user()
        stack.sandbox.faults.timeout = True  # the PSP holds the request past our timeout
        payment = await stack.pay(alice, 2500, until=None)

        async def unknown() -> bool:
            causes = [e["cause"] for e in await _timeline(stack, alice, payment["id"])]
            return "psp_unknown" in causes

        await eventually(unknown)
        got = (await stack.get(alice, f"/api/v1/payments/{payment['id']}")).json()
        assert got["status"] == "created"  # unknown is not failed
        assert got["failure_code"] is None
        # The PSP now processes the request it was holding, but our side never saw the
        # answer; the reconciler asks again with the same key and gets that same intent.
        stack.sandbox.faults.timeout = False
        done = await stack.wait_status(alice, payment["id"], "captured", "settled")
        assert done["amount_captured_minor"] == 2500
        assert len(_intents_for(stack, payment["id"])) == 1
        await stack.wait_available(alice, 2500)
        assert await stack.ledger_problems() == []


async def test_psp_errors_leave_payments_created_and_open_the_breaker(tmp_path: Path) -> None:
    psp = FAST_PSP | {"breaker_failure_threshold": 2, "breaker_reset_seconds": 0.0}
    async with running_stack("sqlite", tmp_path, psp=psp) as stack:
        alice = await stack.user()
        stack.sandbox.faults.outage = True
        payments = [await stack.pay(alice, 1000 + i, until=None) for i in range(3)]

        async def provider_degraded() -> dict[str, Any] | None:
            body: dict[str, Any] = (await stack.http.get("/components/payments/readyz")).json()
            return body if body["checks"].get("provider") == "degraded" else None

        ready = await eventually(provider_degraded)
        assert ready["status"] == "degraded"  # degraded, not down: payments still take orders
        for p in payments:
            got = (await stack.get(alice, f"/api/v1/payments/{p['id']}")).json()
            assert got["status"] == "created"
        stack.sandbox.faults.outage = False
        for p in payments:
            await stack.wait_status(alice, p["id"], "captured", "settled")
            assert len(_intents_for(stack, p["id"])) == 1
        await stack.wait_available(alice, 3003)
        assert await stack.ledger_problems() == []
