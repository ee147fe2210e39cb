"""A plain, storage-free view of an invoice, as the PDF renderer and other documents see it.

The billing service builds an ``InvoiceDocument`` from its rows; nothing here knows about
tables or sessions. Amounts are integers in minor units of ``currency`` (ISO 4217 exponent).
Construction refuses an invoice whose total is not the sum of its lines, so such an invoice
can never be rendered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pocketpay.kit.money import Money


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    description: str
    amount_minor: int  # negative for credits, e.g. the unused time of a plan change
    period_start: datetime | None
    period_end: datetime | None
    kind: str  # "subscription", "proration", "one_off", ...


@dataclass(frozen=True, slots=True)
class InvoiceDocument:
    number: str  # PP-<user seq>-0001
    status: str  # draft, open, paid, void, uncollectible
    currency: str
    created_at: datetime
    period_start: datetime
    period_end: datetime
    customer_email: str
    customer_name: str
    issuer_name: str
    lines: tuple[InvoiceLine, ...]
    total_minor: int
    amount_paid_minor: int
    paid_at: datetime | None

    def __post_init__(self) -> None:
        # Money checks the currency is ISO 4217 and every amount an integer (MoneyError is a
        # ValueError).
        Money(self.total_minor, self.currency)
        Money(self.amount_paid_minor, self.currency)
        for line in self.lines:
            Money(line.amount_minor, self.currency)
        lines_sum = sum(line.amount_minor for line in self.lines)
        if lines_sum != self.total_minor:
            raise ValueError(
                f"invoice {self.number}: total {self.total_minor} is not the sum of its "
                f"lines {lines_sum}"
            )

    @property
    def amount_due_minor(self) -> int:
        return self.total_minor - self.amount_paid_minor
