"""Foreign exchange: reference rates and the exact pricing of a conversion, in minor units.

Rates come from a ``RateSource``: the built-in table (``STATIC``, ECB euro reference rates of
one day) or a file in the ECB's published formats (``eurofxref.csv``: a header row
``Date, USD, JPY, ...`` and one row of rates; ``eurofxref-daily.xml``: ``<Cube currency=...
rate=...>``), read again whenever the file changes. Rates are units of a currency per euro;
any pair is crossed through the euro. No network is needed.

Pricing (``price``) is exact integer arithmetic on ``Decimal`` rates, with the remainders
allocated explicitly:

- the rate in minor units is ``rate * 10**(buy_exponent - sell_exponent)`` (JPY has 0
  decimals, USD 2, BHD 3);
- the user buys ``buy = floor(converted * minor_rate)``: never more than the rate gives;
- ``converted`` is the least sell amount that buys ``buy`` at that rate, so no sell minor
  unit is spent for nothing;
- the fee is everything else the user sells: ``fee_bps`` of ``converted`` rounded up, plus
  the rounding remainder. ``sell = converted + fee`` exactly, so the books balance in each
  currency: the sell wallet gives ``sell``, the FX liquidity account takes ``converted`` and
  the fee account ``fee``; in the buy currency the liquidity account gives ``buy`` to the
  wallet.
"""

from __future__ import annotations

import csv
import io
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext
from pathlib import Path
from typing import Protocol

from pocketpay.kit.errors import AppError
from pocketpay.kit.money import CURRENCY_EXPONENTS, MAX_AMOUNT_MINOR

BASE = "EUR"
# Significant digits a quoted rate keeps; the conversion uses exactly the quoted rate.
RATE_DIGITS = 10
BPS = 10_000


class UnsupportedCurrency(AppError):
    code = "fx.unsupported_currency"
    status = 422
    title = "No exchange rate for this currency"


class SameCurrency(AppError):
    code = "fx.same_currency"
    status = 422
    title = "Sell and buy currencies are the same"


class AmountTooSmall(AppError):
    code = "fx.amount_too_small"
    status = 422
    title = "Amount too small to convert"


class AmountTooLarge(AppError):
    code = "fx.amount_too_large"
    status = 422
    title = "Amount too large to convert"


class RatesUnavailable(AppError):
    code = "fx.rates_unavailable"
    status = 503
    title = "Exchange rates unavailable"


@dataclass(frozen=True)
class Rates:
    """Units of each currency per one euro, as of a date, from a source."""

    per_euro: dict[str, Decimal]
    as_of: str
    source: str

    def rate(self, sell: str, buy: str) -> Decimal:
        """Units of ``buy`` one unit of ``sell`` buys, rounded to ``RATE_DIGITS`` digits."""
        if sell == buy:
            raise SameCurrency("Choose two different currencies to convert between.")
        for cur in (sell, buy):
            if cur not in self.per_euro:
                raise UnsupportedCurrency(
                    f"There is no exchange rate for {cur}; supported: "
                    f"{', '.join(sorted(self.per_euro))}."
                )
        with localcontext() as ctx:
            ctx.prec = RATE_DIGITS
            return +(self.per_euro[buy] / self.per_euro[sell])


class RateSource(Protocol):
    def current(self) -> Rates: ...


# ECB euro foreign exchange reference rates of 2026-11-30 (per euro), for the currencies
# PocketPay accepts that the ECB publishes, plus the euro itself; BHD, KWD, JOD, OMR, AED,
# TND, VND, CLP are pegged or widely quoted rates of the same day, marked in the source name.
_STATIC_TABLE = {
    "EUR": "1", "USD": "1.0565", "JPY": "158.42", "GBP": "0.83218", "CHF": "0.9302",
    "CAD": "1.4781", "AUD": "1.6214", "NZD": "1.7893", "SEK": "11.5165", "NOK": "11.7040",
    "DKK": "7.4589", "PLN": "4.3010", "CZK": "25.269", "HUF": "410.55", "RON": "4.9765",
    "BRL": "6.3051", "MXN": "21.4985", "SGD": "1.4170", "HKD": "8.2193", "INR": "89.269",
    "ZAR": "19.0912", "CNY": "7.6534", "TRY": "36.6190", "ILS": "3.8548", "KRW": "1475.30",
    "ISK": "145.10", "BHD": "0.39824", "KWD": "0.32494", "JOD": "0.74906", "OMR": "0.40675",
    "AED": "3.8800", "TND": "3.3190", "VND": "26843", "CLP": "1031.5",
}  # fmt: skip
STATIC = Rates(
    {k: Decimal(v) for k, v in _STATIC_TABLE.items()},
    as_of="2026-11-30",
    source="static (ECB reference rates; Gulf and other pegs of the same day)",
)


class StaticRates:
    def current(self) -> Rates:
        return STATIC


class FileRates:
    """An ECB rates file (CSV or XML), read again when its modification time changes."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._mtime: float | None = None
        self._rates: Rates | None = None

    def current(self) -> Rates:
        try:
            mtime = os.stat(self.path).st_mtime
            if self._rates is None or mtime != self._mtime:
                self._rates = parse_ecb(self.path.read_text(encoding="utf-8"), str(self.path))
                self._mtime = mtime
        except (OSError, ValueError) as exc:
            if self._rates is None:
                raise RatesUnavailable(f"The rates file {self.path} cannot be read: {exc}") from exc
        return self._rates


def parse_ecb(text: str, source: str) -> Rates:
    """Rates from the ECB's daily file, CSV or XML (the euro itself is added)."""
    stripped = text.lstrip()
    per_euro, as_of = _ecb_xml(stripped) if stripped.startswith("<") else _ecb_csv(stripped)
    per_euro = {c: r for c, r in per_euro.items() if c in CURRENCY_EXPONENTS}
    if not per_euro or any(r <= 0 for r in per_euro.values()):
        raise ValueError("no usable rates in the file")
    return Rates({BASE: Decimal(1), **per_euro}, as_of=as_of, source=source)


def _ecb_csv(text: str) -> tuple[dict[str, Decimal], str]:
    rows = [[c.strip() for c in row] for row in csv.reader(io.StringIO(text)) if row]
    if len(rows) < 2 or rows[0][0] != "Date":
        raise ValueError("not an ECB CSV: the first row must start with Date")
    header, values = rows[0], rows[1]
    rates = {cur: Decimal(v) for cur, v in zip(header[1:], values[1:], strict=False) if cur and v}
    return rates, values[0]


def _ecb_xml(text: str) -> tuple[dict[str, Decimal], str]:
    root = ET.fromstring(text)
    rates: dict[str, Decimal] = {}
    as_of = ""
    for el in root.iter():
        if el.tag.endswith("Cube"):
            as_of = el.get("time", as_of)
            if el.get("currency") and el.get("rate"):
                rates[el.get("currency", "")] = Decimal(el.get("rate", ""))
    return rates, as_of


@dataclass(frozen=True)
class Priced:
    sell_amount_minor: int  # what leaves the sell wallet: converted + fee
    buy_amount_minor: int  # what reaches the buy wallet
    converted_minor: int  # the part of sell that is exchanged (to the liquidity account)
    fee_minor: int  # the rest of sell (to the fee account)


def minor_rate(rate: Decimal, sell: str, buy: str) -> Decimal:
    """Buy minor units per sell minor unit."""
    return rate.scaleb(CURRENCY_EXPONENTS[buy] - CURRENCY_EXPONENTS[sell])


def _ceil(x: Decimal) -> int:
    return int(x.to_integral_value(rounding=ROUND_CEILING))


def _floor(x: Decimal) -> int:
    return int(x.to_integral_value(rounding=ROUND_FLOOR))


def fee_for(converted: int, fee_bps: int) -> int:
    return -(-converted * fee_bps // BPS)


def price(
    sell: str,
    buy: str,
    rate: Decimal,
    fee_bps: int,
    *,
    sell_amount_minor: int | None = None,
    buy_amount_minor: int | None = None,
) -> Priced:
    """Price a conversion with exactly one of the two amounts fixed (see the module doc)."""
    r = minor_rate(rate, sell, buy)
    with localcontext() as ctx:
        ctx.prec = 60  # exact for amounts up to 10^12 and rates of 10 digits
        if sell_amount_minor is not None:
            return _from_sell(sell_amount_minor, r, fee_bps)
        assert buy_amount_minor is not None
        return _from_buy(buy_amount_minor, r, fee_bps)


def _from_sell(total: int, r: Decimal, fee_bps: int) -> Priced:
    # The most that can be converted while converted + its fee fits in total.
    most = total * BPS // (BPS + fee_bps)
    while most > 0 and most + fee_for(most, fee_bps) > total:
        most -= 1
    buy = _floor(most * r)
    if buy < 1:
        raise AmountTooSmall("This amount buys less than one minor unit; sell more.")
    converted = _least_sell(buy, r)
    return _checked(total, buy, converted)


def _from_buy(buy: int, r: Decimal, fee_bps: int) -> Priced:
    if buy < 1:
        raise AmountTooSmall("buy_amount_minor must be at least 1.")
    converted = _least_sell(buy, r)
    return _checked(converted + fee_for(converted, fee_bps), buy, converted)


def _least_sell(buy: int, r: Decimal) -> int:
    """The least sell amount ``s`` with ``floor(s * r) >= buy``."""
    converted = _ceil(Decimal(buy) / r)
    while converted > 1 and _floor((converted - 1) * r) >= buy:
        converted -= 1
    while _floor(converted * r) < buy:
        converted += 1
    return converted


def _checked(total: int, buy: int, converted: int) -> Priced:
    if max(total, buy) > MAX_AMOUNT_MINOR:
        raise AmountTooLarge(f"Amounts are limited to {MAX_AMOUNT_MINOR} minor units.")
    return Priced(total, buy, converted, total - converted)
