"""The sandbox's objects, rendered in Stripe's JSON shapes by ``to_stripe``.

Amounts are integer minor units, currencies lowercase, timestamps unix seconds.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from typing import Any, Literal

_ALNUM = string.ascii_letters + string.digits

PiStatus = Literal[
    "requires_payment_method",
    "requires_confirmation",
    "requires_capture",
    "processing",
    "succeeded",
    "canceled",
]


def new_id(prefix: str, length: int = 24) -> str:
    """A random Stripe-like id: ``pi_3PqXy...``."""
    return f"{prefix}_" + "".join(secrets.choice(_ALNUM) for _ in range(length))


@dataclass
class PaymentIntent:
    id: str
    amount: int
    currency: str
    capture_method: str
    created: int
    status: PiStatus
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    payment_method: str | None = None
    latest_charge: str | None = None
    amount_capturable: int = 0
    amount_received: int = 0
    last_payment_error: dict[str, Any] | None = None
    canceled_at: int | None = None
    cancellation_reason: str | None = None
    client_secret: str = ""
    customer: str | None = None

    def to_stripe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "amount_capturable": self.amount_capturable,
            "amount_received": self.amount_received,
            "canceled_at": self.canceled_at,
            "cancellation_reason": self.cancellation_reason,
            "capture_method": self.capture_method,
            "client_secret": self.client_secret,
            "confirmation_method": "automatic",
            "created": self.created,
            "currency": self.currency,
            "customer": self.customer,
            "description": self.description,
            "last_payment_error": self.last_payment_error,
            "latest_charge": self.latest_charge,
            "livemode": False,
            "metadata": dict(self.metadata),
            "next_action": None,
            "payment_method": self.payment_method,
            "payment_method_types": ["card"],
            "status": self.status,
        }


@dataclass
class Charge:
    id: str
    payment_intent: str
    payment_method: str
    amount: int
    currency: str
    created: int
    status: Literal["succeeded", "failed"]
    card: dict[str, Any]
    captured: bool = False
    amount_captured: int = 0
    amount_refunded: int = 0
    balance_transaction: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    decline_code: str | None = None
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    customer: str | None = None
    disputed: bool = False
    # Not Stripe's: the test card asks for a dispute once the charge is captured.
    dispute_on_capture: bool = False

    @property
    def refundable(self) -> int:
        return self.amount_captured - self.amount_refunded

    def outcome(self) -> dict[str, Any]:
        if self.status == "succeeded":
            return {
                "network_status": "approved_by_network",
                "reason": None,
                "risk_level": "normal",
                "seller_message": "Payment complete.",
                "type": "authorized",
            }
        return {
            "network_status": "declined_by_network",
            "reason": self.decline_code,
            "risk_level": "normal",
            "seller_message": "The bank declined the payment.",
            "type": "issuer_declined",
        }

    def to_stripe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "charge",
            "amount": self.amount,
            "amount_captured": self.amount_captured,
            "amount_refunded": self.amount_refunded,
            "balance_transaction": self.balance_transaction,
            "captured": self.captured,
            "created": self.created,
            "currency": self.currency,
            "customer": self.customer,
            "description": self.description,
            "failure_code": self.failure_code,
            "failure_message": self.failure_message,
            "livemode": False,
            "metadata": dict(self.metadata),
            "outcome": self.outcome(),
            "paid": self.status == "succeeded",
            "payment_intent": self.payment_intent,
            "payment_method": self.payment_method,
            "payment_method_details": {"type": "card", "card": dict(self.card)},
            "disputed": self.disputed,
            "refunded": self.amount_captured > 0 and self.refundable == 0,
            "status": self.status,
        }


@dataclass
class Refund:
    id: str
    amount: int
    charge: str
    payment_intent: str
    currency: str
    created: int
    balance_transaction: str
    reason: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    status: str = "succeeded"

    def to_stripe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "refund",
            "amount": self.amount,
            "balance_transaction": self.balance_transaction,
            "charge": self.charge,
            "created": self.created,
            "currency": self.currency,
            "metadata": dict(self.metadata),
            "payment_intent": self.payment_intent,
            "reason": self.reason,
            "status": self.status,
        }


@dataclass
class BalanceTransaction:
    id: str
    type: Literal["charge", "refund", "adjustment", "payout"]
    source: str
    amount: int
    fee: int
    currency: str
    created: int
    available_on: int
    announced: bool = False  # ``balance.available`` already sent for it

    @property
    def net(self) -> int:
        return self.amount - self.fee

    def is_available(self, now: float) -> bool:
        return now >= self.available_on

    def to_stripe(self, now: float) -> dict[str, Any]:
        fee_details = [
            {
                "amount": self.fee,
                "currency": self.currency,
                "type": "stripe_fee",
                "description": "Stripe processing fees",
                "application": None,
            }
        ]
        return {
            "id": self.id,
            "object": "balance_transaction",
            "amount": self.amount,
            "available_on": self.available_on,
            "created": self.created,
            "currency": self.currency,
            "description": None,
            "exchange_rate": None,
            "fee": self.fee,
            "fee_details": fee_details if self.fee else [],
            "net": self.net,
            "reporting_category": self.type,
            "source": self.source,
            "status": "available" if self.is_available(now) else "pending",
            "type": self.type,
        }


@dataclass
class Customer:
    id: str
    created: int
    email: str | None = None
    name: str | None = None
    description: str | None = None
    phone: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    default_payment_method: str | None = None  # invoice_settings.default_payment_method

    def to_stripe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": self.created,
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": self.description,
            "discount": None,
            "email": self.email,
            "invoice_prefix": self.id.removeprefix("cus_")[:8].upper(),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": self.default_payment_method,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": dict(self.metadata),
            "name": self.name,
            "next_invoice_sequence": 1,
            "phone": self.phone,
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }


@dataclass
class PaymentMethod:
    """A card payment method. The stored ones were made by attaching a test payment method
    (``test_card``, e.g. ``pm_card_visa``) to a customer, as Stripe makes a new object then;
    a stored one without ``customer`` was detached and can never be used again."""

    id: str
    created: int
    test_card: str
    card: dict[str, Any]
    customer: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def to_stripe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "payment_method",
            "allow_redisplay": "unspecified",
            "billing_details": {
                "address": {
                    "city": None,
                    "country": None,
                    "line1": None,
                    "line2": None,
                    "postal_code": None,
                    "state": None,
                },
                "email": None,
                "name": None,
                "phone": None,
            },
            "card": dict(self.card),
            "created": self.created,
            "customer": self.customer,
            "livemode": False,
            "metadata": dict(self.metadata),
            "type": "card",
        }


DisputeStatus = Literal[
    "warning_needs_response",
    "warning_under_review",
    "warning_closed",
    "needs_response",
    "under_review",
    "won",
    "lost",
]


@dataclass
class Dispute:
    """A chargeback (or, with an ``warning_`` status, an inquiry that moves no money)."""

    id: str
    amount: int
    currency: str
    charge: str
    payment_intent: str
    created: int
    status: DisputeStatus
    reason: str
    due_by: int
    evidence: dict[str, str] = field(default_factory=dict)
    submission_count: int = 0
    submitted_at: int | None = None
    balance_transactions: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def is_inquiry(self) -> bool:
        return self.status.startswith("warning_")

    @property
    def closed(self) -> bool:
        return self.status in ("won", "lost", "warning_closed")

    def to_stripe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "dispute",
            "amount": self.amount,
            "balance_transactions": list(self.balance_transactions),
            "charge": self.charge,
            "created": self.created,
            "currency": self.currency,
            "evidence": dict(self.evidence),
            "evidence_details": {
                "due_by": self.due_by,
                "has_evidence": bool(self.evidence),
                "past_due": False,
                "submission_count": self.submission_count,
            },
            "is_charge_refundable": False,
            "livemode": False,
            "metadata": dict(self.metadata),
            "payment_intent": self.payment_intent,
            "reason": self.reason,
            "status": self.status,
        }


@dataclass
class BankAccount:
    """A bank account made from a ``btok_`` token (``POST /v1/tokens``), a payout destination.
    Only the last four digits of the account number are kept, as Stripe shows them; the test
    account's outcome (``failure_code``, None: paid) is decided when it is tokenized."""

    id: str
    created: int
    token: str
    country: str
    currency: str
    routing_number: str
    last4: str
    account_holder_name: str | None = None
    failure_code: str | None = None

    def to_stripe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "bank_account",
            "account_holder_name": self.account_holder_name,
            "account_holder_type": "individual",
            "bank_name": "STRIPE TEST BANK",
            "country": self.country,
            "currency": self.currency,
            "fingerprint": self.id.removeprefix("ba_")[:16],
            "last4": self.last4,
            "routing_number": self.routing_number,
            "status": "new",
        }


PayoutStatus = Literal["pending", "in_transit", "paid", "failed", "canceled"]


@dataclass
class Payout:
    id: str
    amount: int
    currency: str
    destination: str
    created: int
    arrival_date: int
    in_transit_at: int
    status: PayoutStatus = "pending"
    balance_transaction: str | None = None
    failure_balance_transaction: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def to_stripe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "payout",
            "amount": self.amount,
            "arrival_date": self.arrival_date,
            "automatic": False,
            "balance_transaction": self.balance_transaction,
            "created": self.created,
            "currency": self.currency,
            "description": self.description,
            "destination": self.destination,
            "failure_balance_transaction": self.failure_balance_transaction,
            "failure_code": self.failure_code,
            "failure_message": self.failure_message,
            "livemode": False,
            "metadata": dict(self.metadata),
            "method": "standard",
            "source_type": "card",
            "statement_descriptor": None,
            "status": self.status,
            "type": "bank_account",
        }


SandboxObject = (
    PaymentIntent
    | Charge
    | Refund
    | BalanceTransaction
    | Customer
    | PaymentMethod
    | Dispute
    | BankAccount
    | Payout
)
