"""FX pricing: exact in minor units across exponents (JPY 0, USD 2, BHD 3), the user never
gets more than the quoted rate gives, no sell unit is spent for nothing, the fee takes the
rounding remainder, and the books balance per currency; the ECB file formats."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocketpay.kit.money import MAX_AMOUNT_MINOR
from pocketpay.ledger import fx

CURRENCIES = sorted(fx.STATIC.per_euro)
pairs = st.tuples(st.sampled_from(CURRENCIES), st.sampled_from(CURRENCIES)).filter(
    lambda p: p[0] != p[1]
)
fees = st.integers(min_value=0, max_value=500)


def check_invariants(p: fx.Priced, rate: Decimal, sell: str, buy: str, fee_bps: int) -> None:
    r = fx.minor_rate(rate, sell, buy)
    assert p.sell_amount_minor == p.converted_minor + p.fee_minor  # books balance (sell side)
    assert p.buy_amount_minor >= 1 and p.converted_minor >= 1
    assert p.buy_amount_minor <= p.converted_minor * r  # never more than the rate gives
    assert (p.converted_minor - 1) * r < p.buy_amount_minor  # no sell unit spent for nothing
    assert p.fee_minor >= fx.fee_for(p.converted_minor, fee_bps)  # at least the stated fee


@settings(max_examples=400, deadline=None)
@given(pair=pairs, amount=st.integers(1, 10**11), fee_bps=fees)
def test_selling_a_fixed_amount(pair: tuple[str, str], amount: int, fee_bps: int) -> None:
    sell, buy = pair
    rate = fx.STATIC.rate(sell, buy)
    try:
        p = fx.price(sell, buy, rate, fee_bps, sell_amount_minor=amount)
    except fx.AmountTooSmall:
        # Only when the amount, less about its fee, buys less than one minor unit.
        r = fx.minor_rate(rate, sell, buy)
        assert amount * r < 1 + r * (fx.fee_for(amount, fee_bps) + 1)
        return
    except fx.AmountTooLarge:
        return
    assert p.sell_amount_minor == amount
    check_invariants(p, rate, sell, buy, fee_bps)
    # The fee is the stated fee plus less than one rounding step of the conversion.
    r = fx.minor_rate(rate, sell, buy)
    slack = amount - p.converted_minor - fx.fee_for(p.converted_minor, fee_bps)
    assert 0 <= slack <= 4 + 2 * (1 / r + 1)


@settings(max_examples=400, deadline=None)
@given(pair=pairs, amount=st.integers(1, 10**10), fee_bps=fees)
def test_buying_a_fixed_amount(pair: tuple[str, str], amount: int, fee_bps: int) -> None:
    sell, buy = pair
    rate = fx.STATIC.rate(sell, buy)
    try:
        p = fx.price(sell, buy, rate, fee_bps, buy_amount_minor=amount)
    except fx.AmountTooLarge:
        return
    assert p.buy_amount_minor == amount
    check_invariants(p, rate, sell, buy, fee_bps)
    assert p.fee_minor == fx.fee_for(p.converted_minor, fee_bps)


def test_exponents_are_honoured() -> None:
    # 1 USD at 150 JPY per USD: 100 cents buy 150 yen; 1 JPY buys 0.00666 USD.
    rate = Decimal("150")
    p = fx.price("USD", "JPY", rate, 0, sell_amount_minor=100)
    assert (p.buy_amount_minor, p.converted_minor, p.fee_minor) == (150, 100, 0)
    # 1.000 BHD at 2.65 USD: 1000 fils buy 265 cents.
    p = fx.price("BHD", "USD", Decimal("2.65"), 0, sell_amount_minor=1000)
    assert (p.buy_amount_minor, p.converted_minor) == (265, 1000)
    # Selling 1 yen at 0.0066 USD buys nothing: refused, not rounded up.
    with pytest.raises(fx.AmountTooSmall):
        fx.price("JPY", "USD", Decimal("0.0066"), 0, sell_amount_minor=1)


def test_rounding_remainder_goes_to_the_fee() -> None:
    # 1001 cents at 0.5 GBP per USD, no fee: 500.5 pence -> 500, converting 1000 cents;
    # the remaining cent is the fee account's.
    p = fx.price("USD", "GBP", Decimal("0.5"), 0, sell_amount_minor=1001)
    assert (p.buy_amount_minor, p.converted_minor, p.fee_minor) == (500, 1000, 1)
    # With a 1 % fee: at most 991 cents convert (991 + 10 = 1001) -> 495 pence for 990.
    p = fx.price("USD", "GBP", Decimal("0.5"), 100, sell_amount_minor=1001)
    assert (p.buy_amount_minor, p.converted_minor, p.fee_minor) == (495, 990, 11)


def test_limits_and_pairs() -> None:
    with pytest.raises(fx.AmountTooLarge):
        fx.price("USD", "JPY", Decimal("150"), 0, sell_amount_minor=MAX_AMOUNT_MINOR)
    with pytest.raises(fx.SameCurrency):
        fx.STATIC.rate("USD", "USD")
    with pytest.raises(fx.UnsupportedCurrency) as err:
        fx.STATIC.rate("USD", "XAU")
    assert "XAU" in err.value.detail and "USD" in err.value.detail
    assert fx.STATIC.rate("EUR", "USD") == Decimal("1.0565")
    assert fx.STATIC.rate("USD", "EUR") == Decimal("0.9465215334")


ECB_CSV = """Date, USD, JPY, BGN, CZK, GBP,
 28 November 2026, 1.0500, 160.00, 1.9558, 25.100, 0.8300,
"""
ECB_XML = """<?xml version="1.0" encoding="UTF-8"?>
<gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01"
  xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref">
  <gesmes:subject>Reference rates</gesmes:subject>
  <Cube><Cube time="2026-11-28">
    <Cube currency="USD" rate="1.0500"/><Cube currency="JPY" rate="160.00"/>
    <Cube currency="BGN" rate="1.9558"/>
  </Cube></Cube>
</gesmes:Envelope>
"""


@pytest.mark.parametrize("text", [ECB_CSV, ECB_XML], ids=["csv", "xml"])
def test_ecb_files(tmp_path: Path, text: str) -> None:
    path = tmp_path / "rates"
    path.write_text(text)
    source = fx.FileRates(str(path))
    rates = source.current()
    assert rates.per_euro["USD"] == Decimal("1.0500") and rates.per_euro["EUR"] == 1
    assert "BGN" not in rates.per_euro  # not a currency PocketPay accepts
    assert rates.rate("USD", "JPY") == Decimal("152.3809524")
    assert "28" in rates.as_of
    # A broken rewrite keeps the last good rates; a missing file at start is an error.
    path.write_text("garbage")
    assert source.current().per_euro["USD"] == Decimal("1.0500")
    with pytest.raises(fx.RatesUnavailable):
        fx.FileRates(str(tmp_path / "missing.csv")).current()
