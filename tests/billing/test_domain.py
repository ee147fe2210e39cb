"""Billing's pure rules: the state tables, period arithmetic, proration and dunning."""

from __future__ import annotations

import calendar
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pocketpay.billing.dunning import DEFAULT_SCHEDULE_DAYS, is_hard_decline, next_attempt
from pocketpay.billing.periods import MAX_COUNT, Interval, boundary, period_of
from pocketpay.billing.proration import cumulative, part, plan_change
from pocketpay.billing.states import (
    INVOICE_TRANSITIONS,
    SUBSCRIPTION_MOVES,
    TERMINAL,
    InvoiceStatus,
    SubscriptionEvent,
    SubscriptionStatus,
    can_invoice_transition,
    next_status,
)

S, E, Inv = SubscriptionStatus, SubscriptionEvent, InvoiceStatus

# -- state tables ---------------------------------------------------------------------------

EXPECTED = {
    # every allowed move, written out once more by hand: the table may not drift silently
    (S.INCOMPLETE, E.PAYMENT_SUCCEEDED): S.ACTIVE,
    (S.INCOMPLETE, E.PAYMENT_FAILED): S.INCOMPLETE,
    (S.INCOMPLETE, E.FIRST_INVOICE_EXPIRED): S.INCOMPLETE_EXPIRED,
    (S.INCOMPLETE, E.CANCEL): S.CANCELED,
    (S.TRIALING, E.PAYMENT_SUCCEEDED): S.ACTIVE,
    (S.TRIALING, E.PAYMENT_FAILED): S.PAST_DUE,
    (S.TRIALING, E.PAUSE): S.PAUSED,
    (S.TRIALING, E.CANCEL): S.CANCELED,
    (S.ACTIVE, E.PAYMENT_SUCCEEDED): S.ACTIVE,
    (S.ACTIVE, E.PAYMENT_FAILED): S.PAST_DUE,
    (S.ACTIVE, E.PAUSE): S.PAUSED,
    (S.ACTIVE, E.CANCEL): S.CANCELED,
    (S.PAST_DUE, E.PAYMENT_SUCCEEDED): S.ACTIVE,
    (S.PAST_DUE, E.PAYMENT_FAILED): S.PAST_DUE,
    (S.PAST_DUE, E.DUNNING_EXHAUSTED_CANCEL): S.CANCELED,
    (S.PAST_DUE, E.DUNNING_EXHAUSTED_UNPAID): S.UNPAID,
    (S.PAST_DUE, E.CANCEL): S.CANCELED,
    (S.UNPAID, E.PAYMENT_SUCCEEDED): S.ACTIVE,
    (S.UNPAID, E.CANCEL): S.CANCELED,
    (S.PAUSED, E.RESUME): S.ACTIVE,
    (S.PAUSED, E.CANCEL): S.CANCELED,
}


@pytest.mark.parametrize("status", list(S))
@pytest.mark.parametrize("event", list(E))
def test_every_subscription_move_is_listed_or_refused(
    status: SubscriptionStatus, event: SubscriptionEvent
) -> None:
    assert next_status(status, event) == EXPECTED.get((status, event))


def test_terminal_statuses_have_no_way_out_and_the_rest_are_reachable() -> None:
    assert all(from_ not in TERMINAL for from_, _ in SUBSCRIPTION_MOVES)
    reached = {S.INCOMPLETE, S.TRIALING}  # where a subscription starts
    while True:
        more = {to for (from_, _), to in SUBSCRIPTION_MOVES.items() if from_ in reached}
        if more <= reached:
            break
        reached |= more
    assert reached == set(S)


@pytest.mark.parametrize("current", list(Inv))
@pytest.mark.parametrize("target", list(Inv))
def test_invoice_moves(current: InvoiceStatus, target: InvoiceStatus) -> None:
    allowed = {
        (Inv.DRAFT, Inv.OPEN),
        (Inv.DRAFT, Inv.VOID),
        (Inv.OPEN, Inv.PAID),
        (Inv.OPEN, Inv.VOID),
        (Inv.OPEN, Inv.UNCOLLECTIBLE),
        (Inv.UNCOLLECTIBLE, Inv.PAID),
        (Inv.UNCOLLECTIBLE, Inv.VOID),
    }
    assert can_invoice_transition(current, target) == ((current, target) in allowed)
    assert set(INVOICE_TRANSITIONS) == set(Inv)


# -- periods ----------------------------------------------------------------------------------


def test_monthly_periods_keep_their_anchor_day() -> None:
    jan31 = datetime(2027, 1, 31, 12, 0, tzinfo=UTC)
    ends = [boundary(jan31, Interval.MONTH, 1, n).date().isoformat() for n in range(1, 5)]
    assert ends == ["2027-02-28", "2027-03-31", "2027-04-30", "2027-05-31"]
    leap = datetime(2028, 2, 29, tzinfo=UTC)
    assert boundary(leap, Interval.YEAR, 1, 1).date().isoformat() == "2029-02-28"
    assert boundary(leap, Interval.YEAR, 1, 4).date().isoformat() == "2032-02-29"
    assert boundary(jan31, Interval.WEEK, 2, 1) == jan31 + timedelta(days=14)
    assert boundary(jan31, Interval.DAY, 3, 2) == jan31 + timedelta(days=6)


anchors = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2090, 12, 31), timezones=st.just(UTC)
)
intervals = st.sampled_from(list(Interval))


@given(anchors, intervals, st.integers(1, 12), st.integers(0, 300))
def test_boundaries_increase_and_stay_near_the_anchor_day(
    anchor: datetime, interval: Interval, count: int, n: int
) -> None:
    count = min(count, MAX_COUNT[interval])
    a, b = boundary(anchor, interval, count, n), boundary(anchor, interval, count, n + 1)
    assert a < b
    assert (a.hour, a.minute, a.second, a.microsecond) == (
        anchor.hour,
        anchor.minute,
        anchor.second,
        anchor.microsecond,
    )
    if interval in (Interval.MONTH, Interval.YEAR):
        assert b.day == min(anchor.day, calendar.monthrange(b.year, b.month)[1])


@given(anchors, intervals, st.integers(1, 12), st.integers(0, 10**9))
def test_period_of_finds_the_period_holding_a_time(
    anchor: datetime, interval: Interval, count: int, seconds: int
) -> None:
    count = min(count, MAX_COUNT[interval])
    at = anchor + timedelta(seconds=seconds)
    n = period_of(anchor, interval, count, at)
    assert boundary(anchor, interval, count, n) <= at < boundary(anchor, interval, count, n + 1)


# -- proration --------------------------------------------------------------------------------

START = datetime(2027, 3, 1, tzinfo=UTC)
END = datetime(2027, 4, 1, tzinfo=UTC)
PERIOD_US = int((END - START).total_seconds()) * 1_000_000


@given(
    st.integers(0, 10**12),
    st.lists(st.integers(0, PERIOD_US), max_size=30),
)
def test_parts_of_any_split_sum_to_the_full_price(amount: int, cuts_us: list[int]) -> None:
    cuts = [START, *sorted(START + timedelta(microseconds=c) for c in cuts_us), END]
    spans = list(itertools.pairwise(cuts))
    parts = [part(amount, START, END, a, b) for a, b in spans]
    assert sum(parts) == amount
    assert all(p >= 0 for p in parts)
    # each part is within one minor unit of its exact share
    for (a, b), p in zip(spans, parts, strict=True):
        span_us = (b - a) // timedelta(microseconds=1)
        assert abs(p * PERIOD_US - amount * span_us) < PERIOD_US


@given(st.integers(0, 10**9), st.integers(0, 10**9), st.integers(0, PERIOD_US))
def test_a_plan_change_credits_the_unused_time_and_charges_the_rest(
    old: int, new: int, at_us: int
) -> None:
    at = START + timedelta(microseconds=at_us)
    credit, charge = plan_change(old, new, START, END, at)
    assert -old <= credit <= 0 <= charge <= new
    # what the customer paid for the old plan's used time plus the new plan's rest:
    assert old + credit == cumulative(old, START, END, at)
    assert charge == new - cumulative(new, START, END, at)
    assert plan_change(old, new, START, END, START) == (-old, new)
    assert plan_change(old, new, START, END, END) == (0, 0)


def test_proration_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        cumulative(-1, START, END, START)
    with pytest.raises(ValueError):
        cumulative(100, END, START, START)
    with pytest.raises(ValueError):
        part(100, START, END, END, START)


# -- dunning ----------------------------------------------------------------------------------


def test_the_default_schedule_retries_four_times_over_21_days() -> None:
    first = datetime(2027, 1, 1, tzinfo=UTC)
    at, tries = first, [first]
    for made in range(1, 10):
        nxt = next_attempt(at, made, "insufficient_funds")
        if nxt is None:
            break
        tries.append(nxt)
        at = nxt
    assert [(t - first).days for t in tries] == [0, 2, 7, 14, 21]
    assert len(tries) == 1 + len(DEFAULT_SCHEDULE_DAYS)


def test_hard_declines_are_never_retried() -> None:
    now = datetime(2027, 1, 1, tzinfo=UTC)
    assert is_hard_decline("stolen_card") and not is_hard_decline("insufficient_funds")
    assert next_attempt(now, 1, "stolen_card") is None
    assert next_attempt(now, 1, None) == now + timedelta(days=2)
    assert next_attempt(now, 2, "card_declined", (1, 1)) == now + timedelta(days=1)
    assert next_attempt(now, 3, "card_declined", (1, 1)) is None
    with pytest.raises(ValueError):
        next_attempt(now, 0, None)
