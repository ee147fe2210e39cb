"""The payment state machine, exhaustively: every (from, to) pair, rejected moves included."""

from __future__ import annotations

import itertools

import pytest

from pocketpay.payments.states import (
    RANK,
    REFUND_TRANSITIONS,
    TERMINAL,
    TRANSITIONS,
    PaymentStatus,
    RefundStatus,
    can_transition,
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
    assert set(RANK) == set(PaymentStatus)
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


def test_rank_is_strictly_monotone_along_the_happy_path() -> None:
    ranks = [RANK[s] for s in HAPPY_PATH]
    assert ranks == sorted(ranks)
    assert len(set(ranks)) == len(ranks)


def test_every_allowed_move_goes_forward_in_rank() -> None:
    # A PSP event never moves a payment backwards: each allowed move raises the rank.
    for a, b in EXPECTED_ALLOWED:
        assert RANK[b] > RANK[a], (a, b)


def test_exits_rank_above_every_non_terminal_state() -> None:
    for exit_ in (S.FAILED, S.CANCELED):
        for status in set(PaymentStatus) - TERMINAL:
            assert RANK[exit_] > RANK[status]


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
    allowed = current is RefundStatus.PENDING and target is not RefundStatus.PENDING
    assert (target in REFUND_TRANSITIONS[current]) is allowed


def test_refund_table_covers_every_status() -> None:
    assert set(REFUND_TRANSITIONS) == set(RefundStatus)
