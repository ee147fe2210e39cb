"""Proration in exact minor units.

A price for a period ``[start, end)`` is spread over time by its cumulative share
``F(t) = floor(amount * (t - start) / (end - start))`` (microseconds, integers only). The part
of the price for ``[t0, t1)`` is ``F(t1) - F(t0)``. Because the parts telescope, the parts of
any split of a period sum to exactly the full price, whatever the cut points: the rounding
remainder always lands in a well-defined place (the part whose interval crosses the next
whole minor unit), so the result is deterministic and nothing is lost or invented.
"""

from __future__ import annotations

from datetime import datetime

_US = 1_000_000


def _micros(a: datetime, b: datetime) -> int:
    d = b - a
    return (d.days * 86_400 + d.seconds) * _US + d.microseconds


def cumulative(amount: int, start: datetime, end: datetime, at: datetime) -> int:
    """``F(at)``: the part of ``amount`` earned from ``start`` to ``at`` (clamped to the period)."""
    if amount < 0:
        raise ValueError("amount must be >= 0")
    total = _micros(start, end)
    if total <= 0:
        raise ValueError("the period must end after it starts")
    elapsed = min(max(_micros(start, at), 0), total)
    return amount * elapsed // total


def part(amount: int, start: datetime, end: datetime, t0: datetime, t1: datetime) -> int:
    """The part of ``amount`` (the price of ``[start, end)``) for ``[t0, t1)``."""
    if t1 < t0:
        raise ValueError("t1 is before t0")
    return cumulative(amount, start, end, t1) - cumulative(amount, start, end, t0)


def plan_change(
    old_amount: int, new_amount: int, start: datetime, end: datetime, at: datetime
) -> tuple[int, int]:
    """A plan change at ``at`` within ``[start, end)``: (credit for the unused time of the old
    price, as a negative amount; charge for the remaining time at the new price)."""
    return -part(old_amount, start, end, at, end), part(new_amount, start, end, at, end)
