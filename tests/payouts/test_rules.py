"""The payout rules that need no stack: the bank account's form (hypothesis over strings) and
the status table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pocketpay.payments.errors import InvalidDestination
from pocketpay.payments.flows.payouts import checked_destination
from pocketpay.payments.schemas import PayoutDestination
from pocketpay.payments.states import (
    PAYOUT_FINAL,
    PAYOUT_TRANSITIONS,
    PayoutStatus,
    payout_sources,
)

ASCII_DIGITS = st.text(alphabet="0123456789", min_size=1, max_size=20)


def _dest(**kw: str) -> PayoutDestination:
    base = {"country": "US", "routing_number": "110000000", "account_number": "000123456789"}
    return PayoutDestination(**(base | kw))


@given(ASCII_DIGITS)
def test_an_account_number_is_4_to_17_ascii_digits(number: str) -> None:
    if 4 <= len(number) <= 17:
        assert checked_destination(_dest(account_number=number)).account_number == number
    else:
        with pytest.raises(InvalidDestination, match="account_number"):
            checked_destination(_dest(account_number=number))


@given(st.text(max_size=20))
def test_anything_but_ascii_digits_is_refused_in_numbers(text: str) -> None:
    digits = text.isascii() and text.isdigit()
    for field, ok_len in (
        ("routing_number", len(text) == 9),
        ("account_number", 4 <= len(text) <= 17),
    ):
        if digits and ok_len:
            checked_destination(_dest(**{field: text}))
        else:
            with pytest.raises(InvalidDestination, match=field):
                checked_destination(_dest(**{field: text}))


@given(st.text(max_size=4))
def test_a_country_is_two_ascii_letters_in_any_case(country: str) -> None:
    valid = len(country) == 2 and country.isascii() and country.isalpha()
    if valid:
        assert checked_destination(_dest(country=country)).country == country.upper()
    else:
        with pytest.raises(InvalidDestination, match="country"):
            checked_destination(_dest(country=country))


def test_the_status_table() -> None:
    assert {PayoutStatus.PAID, PayoutStatus.FAILED, PayoutStatus.CANCELED} == PAYOUT_FINAL
    assert all(not PAYOUT_TRANSITIONS[s] for s in PAYOUT_FINAL)
    # Only a pending payout can be canceled; an in-transit one can still fail at the bank.
    assert payout_sources(PayoutStatus.CANCELED) == ["pending"]
    assert set(payout_sources(PayoutStatus.FAILED)) == {"pending", "in_transit"}
    assert set(payout_sources(PayoutStatus.PAID)) == {"pending", "in_transit"}
    assert payout_sources(PayoutStatus.IN_TRANSIT) == ["pending"]
    assert payout_sources(PayoutStatus.PENDING) == []
