"""Money in integer minor units with an ISO 4217 currency. Never a float."""

from __future__ import annotations

import re
from dataclasses import dataclass

# ISO 4217 codes we accept, with their minor-unit exponent.
CURRENCY_EXPONENTS: dict[str, int] = {
    "USD": 2, "EUR": 2, "GBP": 2, "CHF": 2, "CAD": 2, "AUD": 2, "NZD": 2, "SEK": 2, "NOK": 2,
    "DKK": 2, "PLN": 2, "CZK": 2, "HUF": 2, "RON": 2, "BRL": 2, "MXN": 2, "SGD": 2, "HKD": 2,
    "INR": 2, "ZAR": 2, "CNY": 2, "TRY": 2, "ILS": 2, "AED": 2,
    "JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0,
    "BHD": 3, "KWD": 3, "JOD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip

# The largest amount one operation may carry: 10^12 minor units (10 billion USD). Keeps every
# sum of a realistic number of amounts far inside a signed 64-bit column.
MAX_AMOUNT_MINOR = 10**12


class MoneyError(ValueError):
    """An amount or currency that is not valid money."""


class AmountError(MoneyError):
    """A decimal amount ``parse_decimal`` refuses; ``reason`` says why, so a form can say it in
    its own words: ``format`` (not a plain decimal number), ``places`` (more decimals than
    the currency has), ``zero`` (not above zero), ``too_large``."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def normalize_currency(code: str) -> str:
    upper = code.strip().upper()
    if upper not in CURRENCY_EXPONENTS:
        raise MoneyError(f"unknown currency {code!r}: use an ISO 4217 code such as USD or EUR")
    return upper


@dataclass(frozen=True, slots=True)
class Money:
    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.amount_minor, bool) or not isinstance(self.amount_minor, int):
            raise MoneyError("amount_minor must be an integer number of minor units")
        if self.currency not in CURRENCY_EXPONENTS:
            raise MoneyError(f"unknown currency {self.currency!r}")

    @property
    def exponent(self) -> int:
        return CURRENCY_EXPONENTS[self.currency]

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise MoneyError(f"currency mismatch: {self.currency} and {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def is_positive(self) -> bool:
        return self.amount_minor > 0

    def format(self) -> str:
        """Human form, e.g. ``12.34 USD``."""
        exp = self.exponent
        sign = "-" if self.amount_minor < 0 else ""
        whole, frac = (
            divmod(abs(self.amount_minor), 10**exp) if exp else (abs(self.amount_minor), 0)
        )
        return (
            f"{sign}{whole}.{frac:0{exp}d} {self.currency}"
            if exp
            else f"{sign}{whole} {self.currency}"
        )


def decimal_string(amount_minor: int, currency: str) -> str:
    """The amount in major units, exactly: 12345 USD -> ``"123.45"``, 500 JPY -> ``"500"``,
    1500 BHD -> ``"1.500"``."""
    exp = CURRENCY_EXPONENTS[currency]
    sign = "-" if amount_minor < 0 else ""
    if not exp:
        return f"{sign}{abs(amount_minor)}"
    whole, frac = divmod(abs(amount_minor), 10**exp)
    return f"{sign}{whole}.{frac:0{exp}d}"


_DECIMAL = re.compile(r"^([0-9]{1,13})(?:\.([0-9]{1,12}))?$")


def parse_decimal(amount: str, currency: str) -> int:
    """A decimal string in major units as exact minor units: ``"100.00"`` USD -> 10000,
    ``"500"`` JPY -> 500. More decimals than the currency has, a sign, an exponent or any
    other form raise ``MoneyError`` (nothing is rounded)."""
    match = _DECIMAL.fullmatch(amount.strip())
    if match is None:
        raise AmountError(f"amount {amount[:40]!r} is not a decimal number such as 12.34", "format")
    exp = CURRENCY_EXPONENTS[currency]
    whole: str = match.group(1)
    frac: str = match.group(2) or ""
    if len(frac) > exp:
        raise AmountError(
            f"{currency} has {exp} decimal places; {amount.strip()} has {len(frac)}: "
            "nothing is rounded",
            "places",
        )
    minor: int = int(whole) * 10**exp + int(frac.ljust(exp, "0") or "0")
    if not 0 < minor <= MAX_AMOUNT_MINOR:
        limit = f"amount must be above 0 and at most {MAX_AMOUNT_MINOR} minor units"
        raise AmountError(limit, "zero" if minor == 0 else "too_large")
    return minor
