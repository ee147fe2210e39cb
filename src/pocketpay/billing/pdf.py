"""The invoice PDF: ``render_invoice(doc)`` turns an ``InvoiceDocument`` into A4 PDF bytes.

fpdf2 with its built-in core fonts only (Helvetica): no font files to ship or load. Core fonts
are single-byte (WinAnsi, i.e. cp1252, a superset of latin-1's printable characters), so text
the user typed (names, emails, descriptions) goes through ``pdf_safe`` first: a character the
font cannot show becomes its unaccented base letter when it has one (``ř`` -> ``r``) and ``?``
otherwise (CJK, emoji). Rendering never fails on such text, and the same input always gives the
same output.

Output is deterministic: the only time in the file is its creation date, set from the invoice's
``created_at``, so two renders of one invoice are byte-identical. Dates print as ISO dates in
UTC; amounts as ``Money.format()`` does, with the currency's ISO 4217 exponent.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime

from fpdf import FPDF
from fpdf.fonts import FontFace

from pocketpay.billing.documents import InvoiceDocument, InvoiceLine
from pocketpay.kit.money import Money

ENCODING = "cp1252"  # what fpdf2 declares for core fonts (WinAnsiEncoding)
FONT = "helvetica"
MARGIN = 20.0  # mm
EN_DASH = "\u2013"
STAMPS: dict[str, tuple[str, tuple[int, int, int]]] = {
    "paid": ("PAID", (0, 128, 64)),
    "void": ("VOID", (170, 30, 30)),
}
GREY = (110, 110, 110)
BLACK = (0, 0, 0)


def _encodable(char: str) -> bool:
    try:
        char.encode(ENCODING)
    except UnicodeEncodeError:
        return False
    return True


def pdf_safe(text: str) -> str:
    """``text`` with every character a core font can show kept, whitespace and control
    characters turned to spaces, letters with an accent the font lacks reduced to their base
    letter, and anything else replaced by ``?``."""
    out: list[str] = []
    for char in unicodedata.normalize("NFC", text):
        category = unicodedata.category(char)
        if char.isspace() or category == "Cc":
            out.append(" ")
        elif category.startswith("C"):  # format (ZWJ), private use, unassigned, surrogates
            out.append("?")
        elif _encodable(char):
            out.append(char)
        else:
            base = "".join(
                c
                for c in unicodedata.normalize("NFKD", char)
                if unicodedata.category(c) != "Mn" and _encodable(c)
            )
            out.append(base or "?")
    return "".join(out)


def _utc(moment: datetime) -> datetime:
    """Aware datetimes converted to UTC; a naive one (SQLite's) is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _date(moment: datetime) -> str:
    return _utc(moment).date().isoformat()


def _period(start: datetime | None, end: datetime | None) -> str:
    if start is not None and end is not None:
        return f"{_date(start)} {EN_DASH} {_date(end)}"
    if start is not None:
        return f"from {_date(start)}"
    if end is not None:
        return f"until {_date(end)}"
    return ""


class _InvoicePDF(FPDF):
    def __init__(self, number: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.core_fonts_encoding = ENCODING
        self._number = number

    def footer(self) -> None:
        self.set_y(-MARGIN + 5)
        self.set_font(FONT, size=8)
        self.set_text_color(*GREY)
        self.cell(0, 5, f"Invoice {self._number}", align="L")
        self.set_x(self.l_margin)
        self.cell(0, 5, f"Page {self.page_no()} of {{nb}}", align="R")


def render_invoice(doc: InvoiceDocument) -> bytes:
    """The invoice as an A4 PDF (bytes beginning with ``%PDF-``)."""
    number = pdf_safe(doc.number)
    pdf = _InvoicePDF(number)
    pdf.set_creation_date(_utc(doc.created_at))
    pdf.set_title(f"Invoice {number}")
    pdf.set_author(pdf_safe(doc.issuer_name))
    pdf.set_creator("PocketPay")
    pdf.set_margins(MARGIN, MARGIN, MARGIN)
    pdf.set_auto_page_break(auto=True, margin=MARGIN + 5)
    pdf.add_page()
    width = pdf.epw

    def money(amount_minor: int) -> str:
        return Money(amount_minor, doc.currency).format()

    # Header: the issuer on the left, the invoice number on the right, then the status stamp.
    top = pdf.get_y()
    pdf.set_font(FONT, "B", 16)
    pdf.multi_cell(width * 0.55, 8, pdf_safe(doc.issuer_name), align="L")
    after_issuer = pdf.get_y()
    pdf.set_xy(pdf.l_margin + width * 0.55, top)
    pdf.set_font(FONT, "B", 18)
    pdf.multi_cell(width * 0.45, 9, f"Invoice {number}", align="R")
    pdf.set_x(pdf.l_margin + width * 0.55)
    pdf.set_font(FONT, "", 10)
    pdf.set_text_color(*GREY)
    pdf.multi_cell(width * 0.45, 6, f"Status: {pdf_safe(doc.status).upper()}", align="R")
    pdf.set_text_color(*BLACK)
    stamp = STAMPS.get(doc.status.lower())
    if stamp is not None:
        label, color = stamp
        pdf.set_x(pdf.l_margin + width - 40)
        pdf.set_font(FONT, "B", 20)
        pdf.set_text_color(*color)
        pdf.set_draw_color(*color)
        pdf.set_line_width(0.8)
        pdf.cell(40, 12, label, border=1, align="C")
        pdf.ln(12)
        pdf.set_text_color(*BLACK)
        pdf.set_draw_color(*BLACK)
        pdf.set_line_width(0.2)
    pdf.set_y(max(pdf.get_y(), after_issuer) + 6)

    # Dates (left) and bill-to (right).
    block_top = pdf.get_y()
    dates = [
        ("Date of issue", _date(doc.created_at)),
        ("Billing period", _period(doc.period_start, doc.period_end)),
    ]
    if doc.paid_at is not None:
        dates.append(("Paid on", _date(doc.paid_at)))
    for label, value in dates:
        pdf.set_font(FONT, "B", 10)
        pdf.cell(32, 6, label)
        pdf.set_font(FONT, "", 10)
        pdf.cell(width * 0.55 - 32, 6, value, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, "", 8)
    pdf.set_text_color(*GREY)
    pdf.cell(width * 0.55, 5, "Dates in UTC", new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(*BLACK)
    after_dates = pdf.get_y()

    right = pdf.l_margin + width * 0.55
    pdf.set_xy(right, block_top)
    pdf.set_font(FONT, "B", 10)
    pdf.cell(width * 0.45, 6, "Bill to", new_x="LEFT", new_y="NEXT")
    pdf.set_font(FONT, "", 10)
    pdf.multi_cell(width * 0.45, 6, pdf_safe(doc.customer_name), new_x="LEFT", new_y="NEXT")
    pdf.multi_cell(width * 0.45, 6, pdf_safe(doc.customer_email), new_x="LEFT", new_y="NEXT")
    pdf.set_xy(pdf.l_margin, max(pdf.get_y(), after_dates) + 8)

    # The lines.
    pdf.set_font(FONT, "", 10)
    with pdf.table(
        col_widths=(0.5 * width, 0.28 * width, 0.22 * width),
        width=width,
        text_align=("LEFT", "LEFT", "RIGHT"),
        borders_layout="HORIZONTAL_LINES",
        headings_style=FontFace(emphasis="BOLD", fill_color=(235, 235, 235)),
        line_height=6,
        padding=(1.5, 2, 1.5, 2),
    ) as table:
        table.row(("Description", "Period", "Amount"))
        for line in doc.lines:
            table.row(_line_cells(line, money))
    pdf.ln(4)

    # Totals, right-aligned under the amount column.
    totals = [
        ("Subtotal", money(doc.total_minor), False),
        ("Total", money(doc.total_minor), True),
        ("Amount paid", money(doc.amount_paid_minor), False),
        ("Amount due", money(doc.amount_due_minor), True),
    ]
    for label, value, strong in totals:
        pdf.set_x(pdf.l_margin + width * 0.5)
        pdf.set_font(FONT, "B" if strong else "", 11 if strong else 10)
        pdf.cell(width * 0.28, 7, label, align="L")
        pdf.cell(width * 0.22, 7, value, align="R", new_x="LMARGIN", new_y="NEXT")

    return bytes(pdf.output())


def _line_cells(line: InvoiceLine, money: Callable[[int], str]) -> tuple[str, str, str]:
    return (
        pdf_safe(line.description),
        _period(line.period_start, line.period_end),
        money(line.amount_minor),
    )
