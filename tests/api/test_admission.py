"""Admission control: past ``psp.max_unauthorized`` payments waiting for the PSP, a create is
shed with 503 ``payments.busy`` + Retry-After, writes nothing, and its retry with the same
Idempotency-Key is accepted once the backlog drains (one payment, one charge)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from pocketpay.kit.client import InternalClient
from pocketpay.kit.errors import AppError
from pocketpay.payments import client as client_module
from pocketpay.payments.admission import Admission
from pocketpay.payments.client import HttpPaymentsClient
from pocketpay.payments.errors import PaymentsBusy
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
        await stack.wait_status(alice, payment["id"], "captured", "settled")

        # (While payments sheds, even a replay is told to come back: the gateway refuses
        # before it looks the key up. Once the backlog drains, it replays the stored answer.)
        async def replayed() -> httpx.Response | None:
            r = await stack.post(alice, "/api/v1/payments", VISA, key=key)
            return r if r.status_code != 503 else None

        again = await eventually(replayed)
        assert again.status_code == 202 and again.json()["id"] == payment["id"]
        assert again.headers.get("idempotent-replayed") == "true"
        assert await _payment_rows(stack) == 3
        assert len(intents_of(stack, payment["id"])) == 1


async def test_the_http_client_remembers_a_busy_answer_for_its_retry_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Scale mode: the gateway's HttpPaymentsClient sheds locally, with no request, for the
    Retry-After of payments' last ``payments.busy``; then it asks payments again."""
    seen: list[str] = []

    def payments_service(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        problem = {"code": "payments.busy", "status": 503, "title": "Busy", "detail": "full"}
        return httpx.Response(503, json=problem, headers={"Retry-After": "2"})

    now = [1000.0]
    monkeypatch.setattr(client_module.time, "monotonic", lambda: now[0])
    http = InternalClient(
        "payments",
        "http://payments.invalid",
        token="t",
        transport=httpx.MockTransport(payments_service),
    )
    payments_client = HttpPaymentsClient(http)
    payments_client.admit()  # nothing known yet: admitted
    with pytest.raises(AppError) as first:
        await payments_client.create("usr_1", "k1", dict(VISA))
    assert first.value.code == "payments.busy" and first.value.headers["Retry-After"] == "2"
    assert seen == ["/payments"]
    now[0] += 1.9
    with pytest.raises(PaymentsBusy):
        payments_client.admit()  # shed here, payments is not asked
    now[0] += 0.2
    payments_client.admit()  # Retry-After has passed: ask payments again
    assert seen == ["/payments"]


async def test_a_sample_never_forgets_creates_still_in_flight(sqlite_stack: Stack) -> None:
    """The sampler's count cannot see creates whose transaction has not ended: they are added,
    so a sample taken in that window cannot let the limit slip (it did once, in CI)."""
    admission = Admission(sqlite_stack.runtime.engine, 2)
    admission.admit()
    admission.admit()  # two creates in flight, none committed yet
    await admission.sample()
    assert admission.waiting == 2
    with pytest.raises(PaymentsBusy):
        admission.check()
    admission.done()
    admission.done()  # both ended without a payment (e.g. refused): nothing is waiting
    await admission.sample()
    assert admission.waiting == 0
    admission.check()
