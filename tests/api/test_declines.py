"""A card decline fails the payment with the PSP's decline code and message, and logs no
error on the way (the stripe 16.x SDK's error objects once raised AttributeError here)."""

from __future__ import annotations

import pytest
import structlog

from tests.support import Stack


@pytest.mark.parametrize(
    ("card", "decline_code", "message"),
    [
        ("pm_card_chargeDeclined", "generic_decline", "Your card was declined."),
        ("pm_card_chargeDeclinedExpiredCard", "expired_card", "Your card has expired."),
    ],
)
async def test_a_decline_fails_the_payment_without_an_error_logged(
    stack: Stack, card: str, decline_code: str, message: str
) -> None:
    alice = await stack.user()
    with structlog.testing.capture_logs() as logs:
        payment = await stack.pay(alice, 1000, pm=card, until="failed")
    complaints = [e for e in logs if e["log_level"] in ("warning", "error", "critical")]
    assert complaints == []
    assert (payment["failure_code"], payment["failure_message"]) == (decline_code, message)
    timeline = (await stack.get(alice, f"/api/v1/payments/{payment['id']}/events")).json()
    # Failed by the PSP's answer to the authorize call, not later by the decline's webhook.
    assert [(t["to_status"], t["cause"]) for t in timeline["data"]] == [
        ("created", "api"),
        ("failed", "psp"),
    ]
