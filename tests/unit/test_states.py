"""The payment state machine, exhaustively: every (from, to) pair, rejected moves included."""

from __future__ import annotations

import itertools

import pytest

from pocketpay.payments.states import (
    REFUND_TRANSITIONS,
    TERMINAL,
    TRANSITIONS,
    Action,
    PaymentStatus,
    PspState,
    RefundStatus,
    can_refund_transition,
    can_transition,
    psp_action,
    psp_state,
)

S = PaymentStatus
ALL_PAIRS = list(itertools.product(PaymentStatus, repeat=2))

# The product's state machine written out independently of the table under test, so a change
# to ``TRANSITIONS`` has to be made twice on purpose.
EXPECTED_ALLOWED = {
    (S.CREATED, S.AUTHORIZED),
    (S.CREATED, S.FAILED),
    (S.CREATED, S.CANCELED),
    (S.AUTHORIZED, S.CAPTURED),
    (S.AUTHORIZED, S.CANCELED),
    (S.AUTHORIZED, S.FAILED),
    (S.CAPTURED, S.SETTLED),
    (S.CAPTURED, S.REFUNDED),
    (S.SETTLED, S.REFUNDED),
}
HAPPY_PATH = [S.CREATED, S.AUTHORIZED, S.CAPTURED, S.SETTLED, S.REFUNDED]


def test_table_covers_every_status() -> None:
    assert set(TRANSITIONS) == set(PaymentStatus)
    for targets in TRANSITIONS.values():
        assert targets <= set(PaymentStatus)


def test_table_is_exactly_the_product_state_machine() -> None:
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == EXPECTED_ALLOWED


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS, ids=lambda s: str(s))
def test_every_pair(current: PaymentStatus, target: PaymentStatus) -> None:
    allowed = (current, target) in EXPECTED_ALLOWED
    assert can_transition(current, target) is allowed
    assert (target in TRANSITIONS[current]) is allowed


def test_pair_counts() -> None:
    allowed = [p for p in ALL_PAIRS if can_transition(*p)]
    assert len(ALL_PAIRS) == 49
    assert len(allowed) == len(EXPECTED_ALLOWED) == 9
    assert len(ALL_PAIRS) - len(allowed) == 40


@pytest.mark.parametrize("status", list(PaymentStatus), ids=str)
def test_no_self_transitions(status: PaymentStatus) -> None:
    assert not can_transition(status, status)


def test_terminal_states() -> None:
    assert {S.REFUNDED, S.FAILED, S.CANCELED} == TERMINAL
    for status in TERMINAL:
        assert not any(can_transition(status, t) for t in PaymentStatus)
    for status in set(PaymentStatus) - TERMINAL:
        assert any(can_transition(status, t) for t in PaymentStatus)


def test_nothing_leads_back_to_created() -> None:
    assert not any(can_transition(s, S.CREATED) for s in PaymentStatus)


def test_money_taken_cannot_fail_or_be_canceled() -> None:
    for status in (S.CAPTURED, S.SETTLED):
        assert not can_transition(status, S.FAILED)
        assert not can_transition(status, S.CANCELED)


def test_happy_path_is_a_chain_of_allowed_moves() -> None:
    for a, b in itertools.pairwise(HAPPY_PATH):
        assert can_transition(a, b), (a, b)


def test_every_status_is_reachable_from_created() -> None:
    seen, frontier = {S.CREATED}, [S.CREATED]
    while frontier:
        current = frontier.pop()
        for nxt in TRANSITIONS[current] - seen:
            seen.add(nxt)
            frontier.append(nxt)
    assert seen == set(PaymentStatus)


def test_status_values_are_the_api_strings() -> None:
    assert [s.value for s in PaymentStatus] == [
        "created",
        "authorized",
        "captured",
        "settled",
        "refunded",
        "failed",
        "canceled",
    ]
    assert PaymentStatus("captured") is S.CAPTURED


@pytest.mark.parametrize(
    ("current", "target"), list(itertools.product(RefundStatus, repeat=2)), ids=str
)
def test_refund_transitions(current: RefundStatus, target: RefundStatus) -> None:
    expected = {
        (RefundStatus.PENDING, RefundStatus.HELD),
        (RefundStatus.PENDING, RefundStatus.FAILED),  # the ledger refused the hold
        (RefundStatus.HELD, RefundStatus.SUCCEEDED),
        (RefundStatus.HELD, RefundStatus.FAILED),
    }
    assert can_refund_transition(current, target) is ((current, target) in expected)
    # Only a held refund may end succeeded: the PSP is never asked before the wallet hold.
    if target is RefundStatus.SUCCEEDED:
        assert can_refund_transition(current, target) is (current is RefundStatus.HELD)


def test_refund_table_covers_every_status() -> None:
    assert set(REFUND_TRANSITIONS) == set(RefundStatus)


# -- (our status x the PSP's state) -> action ------------------------------------------------

A, P = Action, PspState
# Written out independently of PSP_ACTIONS: the cases that move money.
EXPECTED_ACTIONS = {
    (S.CREATED, P.AUTHORIZED): A.AUTHORIZE,
    (S.CREATED, P.SUCCEEDED): A.CAPTURE,
    (S.CREATED, P.CANCELED): A.CANCEL,
    (S.CREATED, P.DECLINED): A.FAIL,
    (S.AUTHORIZED, P.SUCCEEDED): A.CAPTURE,
    (S.AUTHORIZED, P.CANCELED): A.CANCEL,
    (S.AUTHORIZED, P.DECLINED): A.FAIL,
    (S.CANCELED, P.AUTHORIZED): A.VOID_AT_PSP,
    (S.CANCELED, P.SUCCEEDED): A.REFUND_AT_PSP,
    (S.FAILED, P.AUTHORIZED): A.VOID_AT_PSP,
    (S.FAILED, P.SUCCEEDED): A.REFUND_AT_PSP,
}


@pytest.mark.parametrize(("ours", "psp"), list(itertools.product(PaymentStatus, PspState)), ids=str)
def test_psp_action_table(ours: PaymentStatus, psp: PspState) -> None:
    action = psp_action(ours, psp)
    if (ours, psp) in EXPECTED_ACTIONS:
        assert action is EXPECTED_ACTIONS[(ours, psp)]
    elif ours in (S.CAPTURED, S.SETTLED, S.REFUNDED):
        # Money was captured: only "succeeded" agrees with us; anything else needs a person.
        assert action is (A.NOTHING if psp is P.SUCCEEDED else A.FLAG)
    else:
        assert action is A.NOTHING
    # A move the table orders is always one the state machine allows.
    targets = {A.AUTHORIZE: S.AUTHORIZED, A.CANCEL: S.CANCELED, A.FAIL: S.FAILED}
    if action in targets:
        assert can_transition(ours, targets[action])
    if action is A.CAPTURE:
        assert ours is S.AUTHORIZED or can_transition(ours, S.AUTHORIZED)


def test_no_charged_and_canceled_payment_is_left_alone() -> None:
    for ours in (S.CANCELED, S.FAILED):
        assert psp_action(ours, P.SUCCEEDED) is A.REFUND_AT_PSP
        assert psp_action(ours, P.AUTHORIZED) is A.VOID_AT_PSP


@pytest.mark.parametrize(
    ("status", "decline", "state"),
    [
        ("requires_capture", None, P.AUTHORIZED),
        ("succeeded", None, P.SUCCEEDED),
        ("canceled", None, P.CANCELED),
        ("requires_payment_method", "card_declined", P.DECLINED),
        ("requires_payment_method", None, P.IN_FLIGHT),
        ("processing", None, P.IN_FLIGHT),
        ("requires_action", None, P.IN_FLIGHT),
    ],
)
def test_psp_state(status: str, decline: str | None, state: PspState) -> None:
    assert psp_state(status, decline) is state
