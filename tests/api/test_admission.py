"""Admission control: past ``psp.max_unauthorized`` payments waiting for the PSP, a create is
shed with 503 ``payments.busy`` + Retry-After, writes nothing, and its retry with the same
Idempotency-Key is accepted once the backlog drains (one payment, one charge)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pocketpay.payments.models import payments
from tests.api.helpers import VISA, assert_problem, intents_of
from tests.support import Stack, eventually, running_stack

PSP = {"max_unauthorized": 2, "timeout_seconds": 0.5, "attempt_retry_seconds": 0.3}


async def _payment_rows(stack: Stack) -> int:
    async with stack.runtime.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(payments))).scalar_one())


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_creates_are_shed_while_the_psp_backlog_is_full(backend: str, tmp_path: Path) -> None:
    async with running_stack(backend, tmp_path, psp=PSP) as stack:
        alice = await stack.user()
        stack.sandbox.faults.outage = True  # nothing gets authorized: the backlog fills
        waiting = [await stack.pay(alice, 1000 + i, until=None) for i in range(2)]
        key = uuid.uuid4().hex

        shed = await stack.post(alice, "/api/v1/payments", VISA, key=key)
        body = assert_problem(shed, 503, "payments.busy")
        assert shed.headers["retry-after"] == "1"
        assert "Idempotency-Key" in body["detail"]
        assert await _payment_rows(stack) == 2  # the shed request wrote nothing

        # The PSP is back: the reconciler authorizes the backlog, the sampler sees it drain,
        # and the client's retry (same key) is accepted as a new request, once.
        stack.sandbox.faults.outage = False
        for p in waiting:
            await stack.wait_status(alice, p["id"], "captured", "settled")

        async def accepted() -> dict[str, str] | None:
            r = await stack.post(alice, "/api/v1/payments", VISA, key=key)
            return dict(r.json()) if r.status_code == 202 else None

        payment = await eventually(accepted)
        again = await stack.post(alice, "/api/v1/payments", VISA, key=key)
        assert again.status_code == 202 and again.json()["id"] == payment["id"]
        assert again.headers.get("idempotent-replayed") == "true"
        await stack.wait_status(alice, payment["id"], "captured", "settled")
        assert await _payment_rows(stack) == 3
        assert len(intents_of(stack, payment["id"])) == 1
