"""Money: integer minor units with an ISO 4217 currency, never a float."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pocketpay.kit.money import (
    CURRENCY_EXPONENTS,
    MAX_AMOUNT_MINOR,
    Money,
    MoneyError,
    normalize_currency,
)

INT64_MAX = 2**63 - 1
currencies = st.sampled_from(sorted(CURRENCY_EXPONENTS))
amounts = st.integers(min_value=-MAX_AMOUNT_MINOR, max_value=MAX_AMOUNT_MINOR)


@st.composite
def money_pair(draw: st.DrawFn) -> tuple[Money, Money]:
    cur = draw(currencies)
    return Money(draw(amounts), cur), Money(draw(amounts), cur)


# -- construction ---------------------------------------------------------------------------


def test_money_holds_integer_minor_units() -> None:
    m = Money(1234, "USD")
    assert m.amount_minor == 1234
    assert m.currency == "USD"
    assert m == Money(1234, "USD")
    assert hash(m) == hash(Money(1234, "USD"))


@pytest.mark.parametrize("bad", [1.5, 10.0, Decimal("1"), "100", None, True, False])
def test_amount_must_be_an_int(bad: object) -> None:
    with pytest.raises(MoneyError):
        Money(bad, "USD")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["usd", "XXX", "", "US", "USDD", " USD"])
def test_currency_must_be_a_known_upper_case_code(bad: str) -> None:
    with pytest.raises(MoneyError):
        Money(100, bad)


def test_money_error_is_a_value_error() -> None:
    assert issubclass(MoneyError, ValueError)


def test_money_is_immutable() -> None:
    m = Money(1, "USD")
    with pytest.raises(AttributeError):
        m.amount_minor = 2  # type: ignore[misc]


# -- exponents ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "exponent"),
    [("USD", 2), ("EUR", 2), ("GBP", 2), ("JPY", 0), ("KRW", 0), ("BHD", 3), ("KWD", 3)],
)
def test_exponents(currency: str, exponent: int) -> None:
    assert Money(0, currency).exponent == exponent


def test_every_code_is_three_upper_case_letters_with_a_sane_exponent() -> None:
    for code, exp in CURRENCY_EXPONENTS.items():
        assert len(code) == 3 and code.isalpha() and code.isupper()
        assert exp in (0, 2, 3)


# -- normalize_currency ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"), [("usd", "USD"), ("USD", "USD"), (" eur ", "EUR"), ("JpY", "JPY")]
)
def test_normalize_currency(raw: str, expected: str) -> None:
    assert normalize_currency(raw) == expected


@pytest.mark.parametrize("bad", ["", "   ", "US", "dollars", "XXX", "BTC", "US D"])
def test_normalize_currency_rejects_unknown_codes(bad: str) -> None:
    with pytest.raises(MoneyError, match="unknown currency"):
        normalize_currency(bad)


@given(currencies)
def test_normalize_is_idempotent_and_case_insensitive(code: str) -> None:
    assert normalize_currency(code) == code
    assert normalize_currency(code.lower()) == code
    assert normalize_currency(normalize_currency(code.lower())) == code


# -- arithmetic -----------------------------------------------------------------------------


def test_add_sub_neg() -> None:
    a, b = Money(1000, "EUR"), Money(250, "EUR")
    assert a + b == Money(1250, "EUR")
    assert a - b == Money(750, "EUR")
    assert b - a == Money(-750, "EUR")


def test_is_positive() -> None:
    assert Money(1, "USD").is_positive()
    assert not Money(0, "USD").is_positive()
    assert not Money(-1, "USD").is_positive()


def test_currency_mismatch_is_refused() -> None:
    usd, eur = Money(100, "USD"), Money(100, "EUR")
    with pytest.raises(MoneyError, match="currency mismatch: USD and EUR"):
        _ = usd + eur
    with pytest.raises(MoneyError, match="currency mismatch: EUR and USD"):
        _ = eur - usd


@given(currencies, currencies, amounts, amounts)
def test_mixing_currencies_always_fails(c1: str, c2: str, x: int, y: int) -> None:
    a, b = Money(x, c1), Money(y, c2)
    if c1 == c2:
        assert (a + b).currency == c1
    else:
        with pytest.raises(MoneyError):
            _ = a + b
        with pytest.raises(MoneyError):
            _ = a - b


@given(money_pair())
def test_add_then_sub_is_identity(pair: tuple[Money, Money]) -> None:
    a, b = pair
    assert a + b - b == a
    assert a - b + b == a


@given(money_pair())
def test_add_commutes(pair: tuple[Money, Money]) -> None:
    a, b = pair
    assert a + b == b + a


@given(currencies, amounts, amounts, amounts)
def test_add_associates(cur: str, x: int, y: int, z: int) -> None:
    a, b, c = Money(x, cur), Money(y, cur), Money(z, cur)
    assert (a + b) + c == a + (b + c)


@given(currencies, amounts)
def test_zero_and_difference(cur: str, x: int) -> None:
    a, zero = Money(x, cur), Money(0, cur)
    assert a + zero == a
    assert a - a == zero
    assert zero - a == Money(-x, cur)


@given(money_pair())
def test_results_stay_integers(pair: tuple[Money, Money]) -> None:
    a, b = pair
    for result in (a + b, a - b):
        assert type(result.amount_minor) is int


# -- limits ---------------------------------------------------------------------------------


def test_max_amount() -> None:
    assert MAX_AMOUNT_MINOR == 10**12
    assert isinstance(MAX_AMOUNT_MINOR, int)
    # Millions of maximal amounts still fit in a signed 64-bit column.
    assert INT64_MAX // MAX_AMOUNT_MINOR > 9_000_000
    assert Money(MAX_AMOUNT_MINOR, "USD").format() == "10000000000.00 USD"


# -- format ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (1234, "USD", "12.34 USD"),
        (5, "USD", "0.05 USD"),
        (0, "EUR", "0.00 EUR"),
        (100, "GBP", "1.00 GBP"),
        (-1234, "USD", "-12.34 USD"),
        (-5, "USD", "-0.05 USD"),
        (1234, "JPY", "1234 JPY"),
        (-7, "JPY", "-7 JPY"),
        (0, "JPY", "0 JPY"),
        (1234, "BHD", "1.234 BHD"),
        (5, "KWD", "0.005 KWD"),
        (-1001, "BHD", "-1.001 BHD"),
    ],
)
def test_format(amount: int, currency: str, text: str) -> None:
    assert Money(amount, currency).format() == text


@given(currencies, amounts)
def test_format_round_trips_exactly(cur: str, x: int) -> None:
    m = Money(x, cur)
    number, code = m.format().split(" ")
    assert code == cur
    assert Decimal(number).scaleb(m.exponent) == x
    if m.exponent:
        assert len(number.split(".")[1]) == m.exponent
    else:
        assert "." not in number
