"""Subscription and invoice state machines as pure tables. Any move not listed is refused
(``billing.invalid_transition``). Statuses are Stripe's, so a Stripe developer reads them
without a glossary."""

from __future__ import annotations

from enum import StrEnum


class SubscriptionStatus(StrEnum):
    INCOMPLETE = "incomplete"  # the first invoice is not paid yet
    INCOMPLETE_EXPIRED = "incomplete_expired"  # ... and was not paid in time: never started
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"  # a renewal failed; dunning retries it
    UNPAID = "unpaid"  # dunning gave up, the subscription stays (setting: final state unpaid)
    PAUSED = "paused"
    CANCELED = "canceled"


class SubscriptionEvent(StrEnum):
    PAYMENT_SUCCEEDED = "payment_succeeded"  # an invoice of the subscription was paid
    PAYMENT_FAILED = "payment_failed"  # a charge of one of its invoices failed
    FIRST_INVOICE_EXPIRED = "first_invoice_expired"
    TRIAL_STARTED_FREE = "trial_started_free"  # a renewal that costs nothing (trial end paid)
    DUNNING_EXHAUSTED_CANCEL = "dunning_exhausted_cancel"
    DUNNING_EXHAUSTED_UNPAID = "dunning_exhausted_unpaid"
    CANCEL = "cancel"  # now, or at the end of the period when that comes
    PAUSE = "pause"
    RESUME = "resume"


St = SubscriptionStatus
Ev = SubscriptionEvent

_CANCELABLE = (St.INCOMPLETE, St.TRIALING, St.ACTIVE, St.PAST_DUE, St.UNPAID, St.PAUSED)

SUBSCRIPTION_MOVES: dict[tuple[SubscriptionStatus, SubscriptionEvent], SubscriptionStatus] = {
    (St.INCOMPLETE, Ev.PAYMENT_SUCCEEDED): St.ACTIVE,
    (St.INCOMPLETE, Ev.PAYMENT_FAILED): St.INCOMPLETE,  # the customer may try another card
    (St.INCOMPLETE, Ev.FIRST_INVOICE_EXPIRED): St.INCOMPLETE_EXPIRED,
    (St.TRIALING, Ev.PAYMENT_SUCCEEDED): St.ACTIVE,
    (St.TRIALING, Ev.PAYMENT_FAILED): St.PAST_DUE,
    (St.ACTIVE, Ev.PAYMENT_SUCCEEDED): St.ACTIVE,
    (St.ACTIVE, Ev.PAYMENT_FAILED): St.PAST_DUE,
    (St.PAST_DUE, Ev.PAYMENT_SUCCEEDED): St.ACTIVE,
    (St.PAST_DUE, Ev.PAYMENT_FAILED): St.PAST_DUE,
    (St.PAST_DUE, Ev.DUNNING_EXHAUSTED_CANCEL): St.CANCELED,
    (St.PAST_DUE, Ev.DUNNING_EXHAUSTED_UNPAID): St.UNPAID,
    (St.UNPAID, Ev.PAYMENT_SUCCEEDED): St.ACTIVE,  # the customer paid the open invoice
    (St.TRIALING, Ev.PAUSE): St.PAUSED,
    (St.ACTIVE, Ev.PAUSE): St.PAUSED,
    (St.PAUSED, Ev.RESUME): St.ACTIVE,
    **{(status, Ev.CANCEL): St.CANCELED for status in _CANCELABLE},
}

TERMINAL = frozenset({St.CANCELED, St.INCOMPLETE_EXPIRED})
# Statuses whose periods renew (an invoice is made when the period ends).
RENEWING = frozenset({St.TRIALING, St.ACTIVE, St.PAST_DUE})


def next_status(current: SubscriptionStatus, event: SubscriptionEvent) -> SubscriptionStatus | None:
    """The status ``event`` moves a subscription in ``current`` to; None: refused."""
    return SUBSCRIPTION_MOVES.get((current, event))


class InvoiceStatus(StrEnum):
    DRAFT = "draft"  # lines may still change
    OPEN = "open"  # finalized: numbered, totals fixed, awaiting payment
    PAID = "paid"
    VOID = "void"  # canceled by an operator; never paid
    UNCOLLECTIBLE = "uncollectible"  # written off, may still be paid


Inv = InvoiceStatus

INVOICE_TRANSITIONS: dict[InvoiceStatus, frozenset[InvoiceStatus]] = {
    Inv.DRAFT: frozenset({Inv.OPEN, Inv.VOID}),
    Inv.OPEN: frozenset({Inv.PAID, Inv.VOID, Inv.UNCOLLECTIBLE}),
    Inv.UNCOLLECTIBLE: frozenset({Inv.PAID, Inv.VOID}),
    Inv.PAID: frozenset(),
    Inv.VOID: frozenset(),
}


def can_invoice_transition(current: InvoiceStatus, target: InvoiceStatus) -> bool:
    return target in INVOICE_TRANSITIONS[current]
