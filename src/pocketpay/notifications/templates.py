"""What a domain event says to its user: a subject, a text body and an HTML body.

Each notified event type has two Jinja2 templates in ``templates/``: ``<name>.txt`` (the text
body; it sets ``subject``) and ``<name>.html`` (extends ``_layout.html``; autoescaped, since
descriptions and notes are user input). Both see the event's data as ``data``. Undefined
names raise, so a template that does not match its event's payload fails its test rather than
sending an email with holes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from pocketpay.kit.money import Money, MoneyError

# Event type -> template name, for the events every user is told about the same way.
TEMPLATES = {
    "payments.payment.captured": "payment_captured",
    "payments.payment.settled": "payment_settled",
    "payments.payment.failed": "payment_failed",
    "payments.refund.succeeded": "refund_succeeded",
    "payments.dispute.created": "dispute_created",
    "payments.dispute.closed": "dispute_closed",
    "payments.payout.paid": "payout_paid",
    "payments.payout.failed": "payout_failed",
    "billing.invoice.paid": "invoice_paid",
    "billing.invoice.payment_failed": "invoice_payment_failed",
    "billing.subscription.updated": "subscription_status",
    "notifications.endpoint.disabled": "endpoint_disabled",
}
TRANSFER = "ledger.transfer.posted"

STATUS_WORDS = {
    "incomplete": "waiting for its first payment",
    "incomplete_expired": "expired before its first payment",
    "trialing": "in its trial",
    "active": "active",
    "past_due": "past due",
    "unpaid": "unpaid",
    "paused": "paused",
    "canceled": "canceled",
}


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def money(amount_minor: int, currency: str) -> str:
    """``1234, "USD"`` -> ``12.34 USD``, with the currency's exponent."""
    try:
        return Money(amount_minor, currency).format()
    except MoneyError:  # a currency we do not know: the raw figure rather than no email
        return f"{amount_minor} {currency} (minor units)"


def when(iso: str) -> str:
    """An ISO 8601 instant as people read it in an email: ``2026-01-02 15:04 UTC``."""
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _environment(autoescape: bool) -> Environment:
    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=autoescape,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = money
    env.filters["when"] = when
    env.globals["status_words"] = STATUS_WORDS
    return env


_TEXT = _environment(autoescape=False)
_HTML = _environment(autoescape=True)


def render(event_type: str, data: dict[str, Any], *, user_id: str) -> Rendered | None:
    """The notification ``user_id`` gets for this event, or None when there is none."""
    name = _template_name(event_type, data, user_id)
    if name is None:
        return None
    text = _TEXT.get_template(f"{name}.txt").make_module({"data": data})
    # The text template sets ``subject``; one line, however the template wraps it.
    subject = " ".join(str(vars(text)["subject"]).split())
    html = _HTML.get_template(f"{name}.html").render(data=data, subject=subject)
    return Rendered(subject=subject, text=str(text).strip() + "\n", html=html)


def _template_name(event_type: str, data: dict[str, Any], user_id: str) -> str | None:
    if event_type == TRANSFER:
        # Both sides are told: the sender that it left, the recipient that it arrived.
        sides = {
            data.get("sender_id"): "transfer_sent",
            data.get("recipient_id"): "transfer_received",
        }
        return sides.get(user_id)
    if event_type == "billing.subscription.updated" and (
        data.get("previous_status") in (None, data.get("status"))
    ):
        return None  # not a status change (a new payment method, cancel at period end...)
    return TEMPLATES.get(event_type)
