"""Billing periods: the n-th period boundary of a subscription, computed from its anchor.

Every boundary is computed from the billing cycle anchor, never from the previous boundary,
so monthly periods anchored on the 31st do not drift to the 28th after February: Jan 31,
Feb 28 (29), Mar 31, Apr 30, ... (the day is clamped to the month's length, as Stripe does).
A yearly period anchored on Feb 29 ends on Feb 28 in common years.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta
from enum import StrEnum


class Interval(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


# Stripe's bounds: at most one year per period.
MAX_COUNT = {Interval.DAY: 365, Interval.WEEK: 52, Interval.MONTH: 12, Interval.YEAR: 1}


def boundary(anchor: datetime, interval: Interval, count: int, n: int) -> datetime:
    """The end of the ``n``-th period (the start of period ``n + 1``); ``boundary(..., 0)`` is
    the anchor itself. Periods are ``count`` intervals long."""
    if n < 0 or count < 1:
        raise ValueError("n must be >= 0 and count >= 1")
    steps = n * count
    if interval is Interval.DAY:
        return anchor + timedelta(days=steps)
    if interval is Interval.WEEK:
        return anchor + timedelta(weeks=steps)
    months = steps * 12 if interval is Interval.YEAR else steps
    years, month0 = divmod(anchor.month - 1 + months, 12)
    year = anchor.year + years
    day = min(anchor.day, calendar.monthrange(year, month0 + 1)[1])
    return anchor.replace(year=year, month=month0 + 1, day=day)


def period_of(anchor: datetime, interval: Interval, count: int, at: datetime) -> int:
    """The index ``n`` of the period holding ``at`` (``boundary(n) <= at < boundary(n+1)``);
    ``at`` must not be before the anchor."""
    if at < anchor:
        raise ValueError("at is before the anchor")
    # An estimate from the average length, then a walk of at most a step or two.
    days = {Interval.DAY: 1, Interval.WEEK: 7, Interval.MONTH: 30.436875, Interval.YEAR: 365.2425}
    n = max(0, int((at - anchor).total_seconds() / 86400 / (days[interval] * count)) - 1)
    while boundary(anchor, interval, count, n + 1) <= at:
        n += 1
    while n > 0 and boundary(anchor, interval, count, n) > at:
        n -= 1
    return n
