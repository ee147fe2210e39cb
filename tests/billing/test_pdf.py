"""The invoice PDF: rendered with fpdf2, read back with pypdf."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pypdf import PdfReader

from pocketpay.billing.documents import InvoiceDocument, InvoiceLine
from pocketpay.billing.pdf import pdf_safe, render_invoice


def at(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


SUBSCRIPTION = InvoiceLine(
    "Pro plan (monthly)", 4900, at(2027, 1, 1), at(2027, 2, 1), "subscription"
)
PRORATION = InvoiceLine(
    "Unused time on Basic plan after 16 Jan 2027", -1250, at(2027, 1, 16), at(2027, 2, 1),
    "proration",
)  # fmt: skip
ONE_OFF = InvoiceLine("Setup fee", 2500, None, None, "one_off")


def invoice(**changes: object) -> InvoiceDocument:
    fields: dict[str, object] = {
        "number": "PP-7-0003",
        "status": "paid",
        "currency": "USD",
        "created_at": at(2027, 1, 1, 9),
        "period_start": at(2027, 1, 1),
        "period_end": at(2027, 2, 1),
        "customer_email": "ada@example.com",
        "customer_name": "Ada Lovelace",
        "issuer_name": "PocketPay Demo Ltd",
        "lines": (SUBSCRIPTION, PRORATION, ONE_OFF),
        "total_minor": 6150,
        "amount_paid_minor": 6150,
        "paid_at": at(2027, 1, 1, 9),
    }
    fields.update(changes)
    return InvoiceDocument(**fields)  # type: ignore[arg-type]


def text_of(pdf: bytes) -> str:
    reader = PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() for page in reader.pages)


def test_a_paid_invoice_shows_its_number_customer_lines_and_totals() -> None:
    pdf = render_invoice(invoice())
    assert pdf.startswith(b"%PDF-")
    text = text_of(pdf)
    for expected in (
        "PocketPay Demo Ltd",
        "Invoice PP-7-0003",
        "PAID",
        "Ada Lovelace",
        "ada@example.com",
        "Pro plan (monthly)",
        "Unused time on Basic plan after 16 Jan 2027",
        "Setup fee",
        "49.00 USD",
        "-12.50 USD",
        "25.00 USD",
        "61.50 USD",  # subtotal, total and amount paid
        "0.00 USD",  # amount due
        "2027-01-01 \u2013 2027-02-01",
        "2027-01-16 \u2013 2027-02-01",
    ):
        assert expected in text, expected
    assert "Amount due" in text and "Amount paid" in text and "Total" in text


def test_an_open_invoice_has_no_stamp_and_shows_what_is_due() -> None:
    text = text_of(render_invoice(invoice(status="open", amount_paid_minor=0, paid_at=None)))
    assert "PAID" not in text
    assert "Status: OPEN" in text
    assert text.count("61.50 USD") == 3  # subtotal, total, amount due
    assert "Paid on" not in text


def test_a_void_invoice_is_stamped_void() -> None:
    text = text_of(render_invoice(invoice(status="void", amount_paid_minor=0, paid_at=None)))
    assert "VOID" in text
    assert "PAID" not in text


def test_amounts_use_the_currency_exponent() -> None:
    jpy = invoice(
        currency="JPY",
        lines=(replace(SUBSCRIPTION, amount_minor=1500), replace(PRORATION, amount_minor=-300)),
        total_minor=1200,
        amount_paid_minor=1200,
    )
    text = text_of(render_invoice(jpy))
    assert "1500 JPY" in text and "-300 JPY" in text and "1200 JPY" in text
    assert "15.00 JPY" not in text

    bhd = invoice(
        currency="BHD",
        lines=(replace(SUBSCRIPTION, amount_minor=12345), replace(PRORATION, amount_minor=-5)),
        total_minor=12340,
        amount_paid_minor=0,
        status="open",
        paid_at=None,
    )
    text = text_of(render_invoice(bhd))
    assert "12.345 BHD" in text and "-0.005 BHD" in text and "12.340 BHD" in text


def test_text_outside_the_core_fonts_renders_replaced() -> None:
    doc = invoice(
        customer_name="山田 太郎 🎉 Dvořák",
        issuer_name="Łódź Payments 💳",
        lines=(replace(SUBSCRIPTION, description="Plan 😀 Pro\u200d", amount_minor=6150),),
    )
    pdf = render_invoice(doc)
    text = text_of(pdf)
    assert "?? ?? ? Dvorák" in text
    assert "Plan ? Pro?" in text
    assert "Payments ?" in text
    assert render_invoice(doc) == pdf


def test_pdf_safe_keeps_what_the_font_shows_and_replaces_the_rest() -> None:
    kept = "Zo\u00eb O\u2019Brien \u2013 5 \u20ac"  # cp1252 has these (quote, dash, euro)
    assert pdf_safe(kept) == kept
    assert pdf_safe("Cafe\u0301") == "Café"  # combined, not replaced
    assert pdf_safe("\uff26\uff55\uff4c\uff4c") == "Full"  # full-width
    assert pdf_safe("a\tb\nc\x00d") == "a b c d"
    assert pdf_safe("東京") == "??"
    assert pdf_safe("") == ""


def test_two_renders_are_identical_and_the_creation_date_is_the_invoices() -> None:
    doc = invoice()
    first = render_invoice(doc)
    assert render_invoice(doc) == first
    reader = PdfReader(io.BytesIO(first))
    assert reader.metadata is not None
    assert reader.metadata.creation_date == at(2027, 1, 1, 9)
    later = render_invoice(replace(doc, created_at=at(2027, 1, 2)))
    assert later != first


def test_dates_print_in_utc() -> None:
    # 23:30 on Jan 31 at UTC-5 is Feb 1 in UTC; a naive datetime is taken as UTC.
    minus_five = timezone(timedelta(hours=-5))
    doc = invoice(
        created_at=datetime(2027, 1, 31, 23, 30, tzinfo=minus_five),
        period_start=datetime(2027, 1, 1),
        period_end=datetime(2027, 2, 1),
        paid_at=None,
        status="open",
        amount_paid_minor=0,
    )
    text = text_of(render_invoice(doc))
    assert "2027-02-01" in text.split("Date of issue", 1)[1].splitlines()[0]


def test_many_and_long_lines_flow_onto_further_pages() -> None:
    lines = tuple(
        replace(ONE_OFF, description=f"Usage item {i} " + "x" * 150, amount_minor=100)
        for i in range(80)
    )
    pdf = render_invoice(invoice(lines=lines, total_minor=8000, amount_paid_minor=8000))
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) > 1
    text = text_of(pdf)
    assert "Usage item 79" in text and "80.00 USD" in text


def test_an_invoice_whose_total_is_not_the_sum_of_its_lines_is_refused() -> None:
    with pytest.raises(ValueError, match="not the sum of its lines"):
        invoice(total_minor=6151)
    with pytest.raises(ValueError):
        invoice(currency="XYZ")


def test_amount_due_is_total_less_paid() -> None:
    assert invoice().amount_due_minor == 0
    assert invoice(amount_paid_minor=1000, status="open", paid_at=None).amount_due_minor == 5150
