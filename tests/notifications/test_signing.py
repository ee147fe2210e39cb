"""Pure parts of outgoing webhooks, over many inputs (hypothesis): every signature verifies
with the ``standardwebhooks`` verifier under each secret that signed it and no other; retry
waits stay within the schedule's step +-20 %; event lists normalise."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from pocketpay.notifications import webhooks
from pocketpay.notifications.errors import UnknownEventType
from pocketpay.settings import NotificationsSettings

SCHEDULE = NotificationsSettings().webhook_retry_seconds
data = st.dictionaries(st.text(max_size=10), st.integers() | st.text(max_size=20), max_size=5)


@given(data=data, n_secrets=st.integers(1, 2))
def test_each_signing_secret_verifies_and_a_stranger_does_not(
    data: dict[str, object], n_secrets: int
) -> None:
    signing = [webhooks.new_secret() for _ in range(n_secrets)]
    now = datetime.now(UTC)
    content = webhooks.body("payments.payment.settled", now.isoformat(), dict(data))
    headers = webhooks.headers("msg_1", now, content, signing)
    assert len(headers["webhook-signature"].split(" ")) == n_secrets
    for secret in signing:
        assert Webhook(secret).verify(content, headers)["data"] == data
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.new_secret()).verify(content, headers)
    tampered = content.replace(b"settled", b"refunded")
    with pytest.raises(WebhookVerificationError):
        Webhook(signing[0]).verify(tampered, headers)


@given(attempts=st.integers(1, 10_000))
def test_retry_waits_follow_the_schedule_with_jitter(attempts: int) -> None:
    step = SCHEDULE[min(attempts, len(SCHEDULE)) - 1]
    wait = webhooks.retry_delay_seconds(attempts, SCHEDULE)
    assert 0.8 * step <= wait <= 1.2 * step


def test_the_default_schedule_reaches_three_days_in_a_bounded_number_of_tries() -> None:
    elapsed, tries = 0.0, 1
    while elapsed < 3 * 24 * 3600:
        elapsed += webhooks.retry_delay_seconds(tries, SCHEDULE, jitter=0)
        tries += 1
    # 5 s, 5 min, 30 min, 2 h, 5 h, then seven 10 h waits: the 13th try is past 3 days.
    assert tries == 13


@given(st.lists(st.sampled_from(sorted(webhooks.EVENT_TYPES)), min_size=1))
def test_event_lists_are_deduplicated_in_order(events: list[str]) -> None:
    out = webhooks.check_events(events)
    assert out == list(dict.fromkeys(events))
    assert webhooks.check_events([*events, "*"]) == ["*"]
    assert all(webhooks.wants(out, e) for e in events)


def test_an_unknown_event_type_is_refused() -> None:
    with pytest.raises(UnknownEventType):
        webhooks.check_events(["payments.payment.teleported"])
