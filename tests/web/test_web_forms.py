"""What a person types as an amount, read as minor units: every amount written the way the
app writes it reads back exactly; more decimals than the currency has are refused, never
rounded; a comma (a decimal mark or a thousands separator, depending on where you live) is
refused, never guessed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pocketpay.gateway.web.forms import FormError, amount_minor, money
from pocketpay.kit.money import CURRENCY_EXPONENTS, MAX_AMOUNT_MINOR

CURRENCY = st.sampled_from(sorted(CURRENCY_EXPONENTS))


@given(minor=st.integers(1, MAX_AMOUNT_MINOR), currency=CURRENCY)
def test_an_amount_as_shown_reads_back_exactly(minor: int, currency: str) -> None:
    shown = money(minor, currency)  # "12.50 USD"
    number, code = shown.split(" ")
    assert code == currency
    assert amount_minor(number, currency) == minor
    assert amount_minor(f" {number} ", currency) == minor  # spaces around are fine


@given(minor=st.integers(1, 10**9), currency=CURRENCY)
def test_one_more_decimal_is_refused_not_rounded(minor: int, currency: str) -> None:
    number = money(minor, currency).split(" ")[0]
    typed = f"{number}1" if "." in number else f"{number}.1"
    with pytest.raises(FormError) as refused:
        amount_minor(typed, currency)
    assert set(refused.value.errors) == {"amount"}


def test_empty_is_none_only_where_optional() -> None:
    assert amount_minor("  ", "USD", required=False) is None
    with pytest.raises(FormError):
        amount_minor("", "USD")
    for bad in ("nan", "inf", "1e3x", "-1", "0.00"):
        with pytest.raises(FormError):
            amount_minor(bad, "USD")


def test_a_comma_is_refused_rather_than_guessed() -> None:
    for typed in ("12,50", "1,250.00", "1,250"):
        with pytest.raises(FormError) as refused:
            amount_minor(typed, "USD")
        assert "dot" in refused.value.errors["amount"]
