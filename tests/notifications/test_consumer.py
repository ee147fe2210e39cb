"""The consumer: an event redelivered by the bus writes its deliveries once (the inbox), so a
real SMTP server receives one email; the gateway's sign-up event gives notifications the
address."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from pocketpay.kit.bus import Envelope
from pocketpay.kit.ids import new_id
from pocketpay.notifications.models import contacts, deliveries
from tests.notifications.helpers import BACKENDS, JumpingClock, notifying_stack, smtp, wake
from tests.support import Stack, eventually, free_port


async def _contact(stack: Stack, user_id: str) -> str | None:
    async with stack.runtime.engine.connect() as conn:
        q = select(contacts.c.email).where(contacts.c.user_id == user_id)
        email: str | None = (await conn.execute(q)).scalar_one_or_none()
        return email


def _settled(user_id: str, clock: JumpingClock) -> Envelope:
    payment = {
        "id": "pay_TEST",
        "object": "payment",
        "amount_minor": 1234,
        "amount_captured_minor": 1234,
        "currency": "USD",
        "status": "settled",
        "purpose": "top_up",
    }
    data: dict[str, Any] = payment | {"payment_id": "pay_TEST", "owner_id": user_id}
    return Envelope(new_id("evt"), "payments.payment.settled", clock.now(), data)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_redelivered_event_is_emailed_once(backend: str, tmp_path: Path) -> None:
    clock = JumpingClock()
    async with smtp() as (box, port), notifying_stack(backend, tmp_path, clock, port) as stack:
        user = await stack.user()
        uid = user["user"]["id"]
        # Sign-up's gateway.user.created reached notifications through the bus.
        assert await eventually(lambda: _contact(stack, uid)) == user["user"]["email"]
        consumer = stack.runtime.components["notifications"].state["consumer"]
        env = _settled(uid, clock)
        assert await consumer(env) is True
        assert await consumer(env) is False  # the bus delivered it again: nothing new
        wake(stack)

        async def one_mail() -> bool:
            return len(box.mails) >= 1

        await eventually(one_mail)
        await stack.runtime.components["notifications"].state["job"].run_once()
        assert len(box.mails) == 1
        assert box.mails[0].rcpt_tos == [user["user"]["email"]]
        assert "12.34" in box.texts()[0]
        async with stack.runtime.engine.connect() as conn:
            q = select(func.count()).where(deliveries.c.event_id == env.id)
            assert (await conn.execute(q)).scalar_one() == 1


async def test_email_off_sends_nothing(tmp_path: Path) -> None:
    clock = JumpingClock()
    async with smtp() as (box, port), notifying_stack("sqlite", tmp_path, clock, port) as stack:
        user = await stack.user()
        uid = user["user"]["id"]
        await eventually(lambda: _contact(stack, uid))
        r = await stack.http.put(
            "/api/v1/notification-preferences",
            json={"email": False},
            headers=user["headers"],
        )
        assert r.json() == {
            "object": "notification_preferences",
            "email": False,
            "slack_webhook_url": None,
        }
        consumer = stack.runtime.components["notifications"].state["consumer"]
        assert await consumer(_settled(uid, clock)) is False
        await stack.runtime.components["notifications"].state["job"].run_once()
        assert box.mails == []


async def test_a_template_that_does_not_fit_still_lets_webhooks_through(tmp_path: Path) -> None:
    clock = JumpingClock()
    async with smtp() as (_box, port), notifying_stack("sqlite", tmp_path, clock, port) as stack:
        user = await stack.user()
        uid = user["user"]["id"]
        await eventually(lambda: _contact(stack, uid))
        hook = {"url": "http://127.0.0.1:9/h", "events": ["*"]}
        assert (await stack.post(user, "/api/v1/webhook-endpoints", hook)).status_code == 201
        consumer = stack.runtime.components["notifications"].state["consumer"]
        # No amount: the captured email's template cannot render it.
        env = Envelope(new_id("evt"), "payments.payment.captured", clock.now(), {"owner_id": uid})
        assert await consumer(env) is True
        async with stack.runtime.engine.connect() as conn:
            q = select(deliveries.c.channel).where(deliveries.c.event_id == env.id)
            assert list((await conn.execute(q)).scalars()) == ["webhook"]


async def test_a_refused_mailbox_is_not_retried(tmp_path: Path) -> None:
    clock = JumpingClock()
    async with smtp() as (box, port), notifying_stack("sqlite", tmp_path, clock, port) as stack:
        box.refuse = True
        assert await _emailed_once(stack, clock) == ("failed", 1)  # 550: final


async def test_an_smtp_server_down_is_retried(tmp_path: Path) -> None:
    clock = JumpingClock()
    async with notifying_stack("sqlite", tmp_path, clock, free_port()) as stack:  # no server
        assert await _emailed_once(stack, clock) == ("pending", 1)


async def _emailed_once(stack: Stack, clock: JumpingClock) -> tuple[str, int]:
    """An event's email once the job tried it: (status, attempts)."""
    user = await stack.user()
    uid = user["user"]["id"]
    await eventually(lambda: _contact(stack, uid))
    env = _settled(uid, clock)
    assert await stack.runtime.components["notifications"].state["consumer"](env)
    wake(stack)

    async def tried() -> tuple[str, int] | None:
        state = await _email_state(stack, env.id)
        return state if state[1] else None

    return await eventually(tried)


async def _email_state(stack: Stack, event_id: str) -> tuple[str, int]:
    async with stack.runtime.engine.connect() as conn:
        q = select(deliveries.c.status, deliveries.c.attempts).where(
            deliveries.c.event_id == event_id, deliveries.c.channel == "email"
        )
        row = (await conn.execute(q)).one()
    return row.status, row.attempts
