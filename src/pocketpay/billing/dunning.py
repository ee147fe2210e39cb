"""Dunning: when a failed invoice payment is retried, and which declines are never retried.

The schedule is a list of waits in days, each counted from the previous attempt (Stripe's
custom retry schedule); the default ``(2, 5, 7, 7)`` means four retries over 21 days after the
first failure. After the last retry fails, the subscription goes to the configured final
state (``canceled`` or ``unpaid``)."""

from __future__ import annotations

from datetime import datetime, timedelta

DEFAULT_SCHEDULE_DAYS: tuple[int, ...] = (2, 5, 7, 7)

# Declines that a retry of the same card cannot fix (Stripe does not retry them either): the
# customer must give another payment method.
HARD_DECLINES = frozenset(
    {
        "authentication_required",
        "card_not_supported",
        "currency_not_supported",
        "do_not_honor_permanently",
        "expired_card",
        "fraudulent",
        "incorrect_cvc",
        "incorrect_number",
        "invalid_account",
        "invalid_number",
        "lost_card",
        "merchant_blacklist",
        "pickup_card",
        "restricted_card",
        "revocation_of_all_authorizations",
        "revocation_of_authorization",
        "security_violation",
        "service_not_allowed",
        "stolen_card",
        "stop_payment_order",
        "transaction_not_allowed",
    }
)


def is_hard_decline(decline_code: str | None) -> bool:
    return decline_code in HARD_DECLINES


def next_attempt(
    last_attempt: datetime,
    attempts_made: int,
    decline_code: str | None,
    schedule_days: tuple[int, ...] = DEFAULT_SCHEDULE_DAYS,
) -> datetime | None:
    """When to try again after ``attempts_made`` failed attempts (the first charge counts),
    the last at ``last_attempt``; None: no more tries (hard decline or schedule exhausted)."""
    if attempts_made < 1:
        raise ValueError("attempts_made counts the failed attempts, the first included")
    if is_hard_decline(decline_code) or attempts_made > len(schedule_days):
        return None
    return last_attempt + timedelta(days=schedule_days[attempts_made - 1])
