"""The circuit breaker: one trial call at a time when half-open; health pings go around it."""

from __future__ import annotations

import pytest

from pocketpay.kit.breaker import BreakerOpen, CircuitBreaker
from pocketpay.kit.clock import ManualClock
from pocketpay.payments.providers.base import PspUnavailable
from pocketpay.payments.providers.stripe import StripeProvider


def opened(clock: ManualClock) -> CircuitBreaker:
    b = CircuitBreaker("t", clock, failure_threshold=2, reset_seconds=10.0)
    for _ in range(2):
        assert b.before_call() is False
        b.record_failure()
    assert b.state == "open"
    with pytest.raises(BreakerOpen):
        b.before_call()
    clock.advance(10.0)
    assert str(b.state) == "half_open"
    return b


def test_half_open_admits_exactly_one_trial_until_it_concludes() -> None:
    clock = ManualClock()
    b = opened(clock)
    assert b.before_call() is True  # the trial
    for _ in range(3):
        with pytest.raises(BreakerOpen, match="half-open"):
            b.before_call()  # everyone else waits for it
    b.record_success(True)
    assert b.state == "closed"
    assert b.before_call() is False and b.before_call() is False


def test_a_failed_trial_reopens_and_a_late_outcome_changes_nothing() -> None:
    clock = ManualClock()
    b = opened(clock)
    late = b.before_call()
    assert late is True
    b.record_failure(True)
    assert b.state == "open"
    b.record_success()  # a call admitted long before, finishing now: not the trial
    assert b.state == "open"


def test_a_trial_without_verdict_frees_the_slot() -> None:
    clock = ManualClock()
    b = opened(clock)
    trial = b.before_call()
    b.release(trial)  # cancelled: no verdict
    assert b.before_call() is True  # the next caller is the trial
    clock.advance(10.0)  # and a trial that never concludes stops blocking after reset_seconds
    assert b.before_call() is True


async def test_pings_are_neither_blocked_nor_counted_by_the_breaker() -> None:
    clock = ManualClock()
    psp = StripeProvider(
        "sk_test_x",
        "http://127.0.0.1:1",  # nothing listens: every call fails at once
        clock,
        timeout_seconds=1.0,
        ping_timeout_seconds=1.0,
        failure_threshold=2,
        reset_seconds=10.0,
    )
    for _ in range(5):
        with pytest.raises(PspUnavailable) as err:
            await psp.ping()
        assert "open" not in str(err.value)
    assert str(psp.breaker.state) == "closed"  # five failed pings did not open it

    for _ in range(2):
        psp.breaker.before_call()
        psp.breaker.record_failure()
    assert psp.breaker.state == "open"
    with pytest.raises(PspUnavailable) as err:
        await psp.ping()  # not blocked: it really asked the PSP
    assert "circuit" not in str(err.value)
    assert str(psp.breaker.state) == "open"
