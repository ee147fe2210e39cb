"""The payment state machine as one pure table. Any move not listed is rejected."""

from __future__ import annotations

from enum import StrEnum


class PaymentStatus(StrEnum):
    CREATED = "created"
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    SETTLED = "settled"
    REFUNDED = "refunded"
    FAILED = "failed"
    CANCELED = "canceled"


S = PaymentStatus

TRANSITIONS: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    S.CREATED: frozenset({S.AUTHORIZED, S.FAILED, S.CANCELED}),
    S.AUTHORIZED: frozenset({S.CAPTURED, S.CANCELED, S.FAILED}),
    S.CAPTURED: frozenset({S.SETTLED, S.REFUNDED}),
    S.SETTLED: frozenset({S.REFUNDED}),
    S.REFUNDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELED: frozenset(),
}

TERMINAL = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)


def can_transition(current: PaymentStatus, target: PaymentStatus) -> bool:
    return target in TRANSITIONS[current]


class RefundStatus(StrEnum):
    """``pending``: the amount is reserved on the payment, the wallet hold is not confirmed;
    ``held``: the ledger holds the amount in the wallet, only now may the PSP be asked."""

    PENDING = "pending"
    HELD = "held"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


R = RefundStatus

REFUND_TRANSITIONS: dict[RefundStatus, frozenset[RefundStatus]] = {
    # pending -> failed: the ledger refused the hold (the money is spent); nothing reached the PSP.
    R.PENDING: frozenset({R.HELD, R.FAILED}),
    R.HELD: frozenset({R.SUCCEEDED, R.FAILED}),
    R.SUCCEEDED: frozenset(),
    R.FAILED: frozenset(),
}


def can_refund_transition(current: RefundStatus, target: RefundStatus) -> bool:
    return target in REFUND_TRANSITIONS[current]


# -- what to do when the PSP reports a payment's state -------------------------------------


class PspState(StrEnum):
    """A PaymentIntent's state as it matters to us."""

    IN_FLIGHT = "in_flight"  # requires_confirmation, requires_action, processing
    AUTHORIZED = "authorized"  # requires_capture
    SUCCEEDED = "succeeded"
    CANCELED = "canceled"
    DECLINED = "declined"  # requires_payment_method with a decline


class Action(StrEnum):
    NOTHING = "nothing"  # we already know this (or more)
    AUTHORIZE = "authorize"  # created -> authorized
    CAPTURE = "capture"  # -> captured (through authorized)
    CANCEL = "cancel"  # -> canceled
    FAIL = "fail"  # -> failed
    VOID_AT_PSP = "void_at_psp"  # compensation: cancel the PSP's authorization
    REFUND_AT_PSP = "refund_at_psp"  # compensation: refund the PSP's charge in full
    FLAG = "flag"  # reality contradicts us in a way no rule resolves: an operator looks


P = PspState

# (our status, the PSP's state) -> what to do. Every pair is listed (tested exhaustively).
# The compensations are why this table exists: a payment we consider canceled or failed that
# the PSP authorized or charged anyway (a cancel that raced the asynchronous authorization, a
# late answer after a timeout) is voided or refunded at the PSP, never left charged.
PSP_ACTIONS: dict[tuple[PaymentStatus, PspState], Action] = {
    (S.CREATED, P.IN_FLIGHT): Action.NOTHING,
    (S.CREATED, P.AUTHORIZED): Action.AUTHORIZE,
    (S.CREATED, P.SUCCEEDED): Action.CAPTURE,
    (S.CREATED, P.CANCELED): Action.CANCEL,
    (S.CREATED, P.DECLINED): Action.FAIL,
    (S.AUTHORIZED, P.IN_FLIGHT): Action.NOTHING,
    (S.AUTHORIZED, P.AUTHORIZED): Action.NOTHING,
    (S.AUTHORIZED, P.SUCCEEDED): Action.CAPTURE,
    (S.AUTHORIZED, P.CANCELED): Action.CANCEL,
    (S.AUTHORIZED, P.DECLINED): Action.FAIL,
    (S.CAPTURED, P.IN_FLIGHT): Action.FLAG,
    (S.CAPTURED, P.AUTHORIZED): Action.FLAG,
    (S.CAPTURED, P.SUCCEEDED): Action.NOTHING,
    (S.CAPTURED, P.CANCELED): Action.FLAG,
    (S.CAPTURED, P.DECLINED): Action.FLAG,
    (S.SETTLED, P.IN_FLIGHT): Action.FLAG,
    (S.SETTLED, P.AUTHORIZED): Action.FLAG,
    (S.SETTLED, P.SUCCEEDED): Action.NOTHING,
    (S.SETTLED, P.CANCELED): Action.FLAG,
    (S.SETTLED, P.DECLINED): Action.FLAG,
    (S.REFUNDED, P.IN_FLIGHT): Action.FLAG,
    (S.REFUNDED, P.AUTHORIZED): Action.FLAG,
    (S.REFUNDED, P.SUCCEEDED): Action.NOTHING,
    (S.REFUNDED, P.CANCELED): Action.FLAG,
    (S.REFUNDED, P.DECLINED): Action.FLAG,
    (S.FAILED, P.IN_FLIGHT): Action.NOTHING,
    (S.FAILED, P.AUTHORIZED): Action.VOID_AT_PSP,
    (S.FAILED, P.SUCCEEDED): Action.REFUND_AT_PSP,
    (S.FAILED, P.CANCELED): Action.NOTHING,
    (S.FAILED, P.DECLINED): Action.NOTHING,
    (S.CANCELED, P.IN_FLIGHT): Action.NOTHING,
    (S.CANCELED, P.AUTHORIZED): Action.VOID_AT_PSP,
    (S.CANCELED, P.SUCCEEDED): Action.REFUND_AT_PSP,
    (S.CANCELED, P.CANCELED): Action.NOTHING,
    (S.CANCELED, P.DECLINED): Action.NOTHING,
}


def psp_state(intent_status: str, decline_code: str | None) -> PspState:
    if intent_status == "requires_capture":
        return P.AUTHORIZED
    if intent_status == "succeeded":
        return P.SUCCEEDED
    if intent_status == "canceled":
        return P.CANCELED
    if intent_status == "requires_payment_method" and decline_code:
        return P.DECLINED
    return P.IN_FLIGHT


def psp_action(current: PaymentStatus, reported: PspState) -> Action:
    return PSP_ACTIONS[(current, reported)]


# -- payouts -------------------------------------------------------------------------------


class PayoutStatus(StrEnum):
    """Stripe's payout statuses. How far our own phases got is the payout's ``stage``."""

    PENDING = "pending"
    IN_TRANSIT = "in_transit"
    PAID = "paid"
    FAILED = "failed"
    CANCELED = "canceled"


class PayoutStage(StrEnum):
    """The recovery point of a pending payout: ``reserved`` (the row, no hold yet), ``held``
    (the ledger holds the money), ``sending`` (the PSP call is claimed: a cancel can no longer
    just drop it), ``sent`` (the PSP's payout id is recorded)."""

    RESERVED = "reserved"
    HELD = "held"
    SENDING = "sending"
    SENT = "sent"


PO = PayoutStatus

PAYOUT_TRANSITIONS: dict[PayoutStatus, frozenset[PayoutStatus]] = {
    # pending -> failed also before the PSP: the hold refused (money spent), the PSP refused.
    PO.PENDING: frozenset({PO.IN_TRANSIT, PO.PAID, PO.FAILED, PO.CANCELED}),
    PO.IN_TRANSIT: frozenset({PO.PAID, PO.FAILED}),
    PO.PAID: frozenset(),
    PO.FAILED: frozenset(),
    PO.CANCELED: frozenset(),
}

PAYOUT_FINAL = frozenset(s for s, nxt in PAYOUT_TRANSITIONS.items() if not nxt)


def payout_sources(target: PayoutStatus) -> list[str]:
    """The statuses allowed to move to ``target`` (for the conditional UPDATE)."""
    return [s.value for s in PO if target in PAYOUT_TRANSITIONS[s]]
