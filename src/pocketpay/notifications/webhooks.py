"""Outgoing webhooks, the Standard Webhooks way (https://www.standardwebhooks.com/): secrets,
the signed request, the event types an endpoint may ask for, and the retry schedule.

A request carries ``webhook-id`` (the delivery id: the same on every retry and redelivery, so
a receiver dedupes on it), ``webhook-timestamp`` (unix seconds of this attempt) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256 of id.timestamp.body>``, by the
``standardwebhooks`` package). During a secret rotation's overlap both secrets sign, the
signatures space-separated, so a receiver holding either one verifies.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

from pocketpay.notifications.errors import UnknownEventType

SECRET_BYTES = 32

# Every event type a user may subscribe an endpoint to, besides "*": the events that concern
# one user (``users_of`` finds them).
EVENT_TYPES = frozenset(
    [
        *(
            f"payments.payment.{s}"
            for s in (
                "created",
                "authorized",
                "captured",
                "settled",
                "refunded",
                "failed",
                "canceled",
            )
        ),
        "payments.refund.succeeded",
        "payments.refund.failed",
        "ledger.transfer.posted",
        "ledger.collection.posted",
        "ledger.conversion.posted",
        "ledger.wallet.updated",
        "billing.subscription.created",
        "billing.subscription.updated",
        "billing.invoice.finalized",
        "billing.invoice.paid",
        "billing.invoice.payment_failed",
        "billing.invoice.voided",
        "billing.invoice_item.created",
    ]
)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def check_events(events: Sequence[str]) -> list[str]:
    """The endpoint's event list, deduplicated in order; ``*`` stands alone."""
    unknown = [e for e in events if e != "*" and e not in EVENT_TYPES]
    if unknown:
        known = ", ".join(sorted(EVENT_TYPES))
        raise UnknownEventType(f"Unknown event type {unknown[0]!r}: use '*' or one of {known}.")
    out = list(dict.fromkeys(events))
    return ["*"] if "*" in out else out


def wants(events: Sequence[str], event_type: str) -> bool:
    return "*" in events or event_type in events


def body(event_type: str, occurred_at: str, data: dict[str, Any]) -> bytes:
    """The request body the spec suggests: type, timestamp and the event's data."""
    doc = {"type": event_type, "timestamp": occurred_at, "data": data}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def headers(
    delivery_id: str, at: datetime, content: bytes, signing_secrets: Sequence[str]
) -> dict[str, str]:
    text = content.decode()
    signatures = " ".join(Webhook(s).sign(delivery_id, at, text) for s in signing_secrets)
    return {
        "content-type": "application/json",
        "user-agent": "PocketPay-Webhooks/1",
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
    }


def retry_delay_seconds(attempts: int, schedule: Sequence[float], jitter: float = 0.2) -> float:
    """The wait after failed attempt number ``attempts`` (1-based): the schedule's step (its
    last step once past the end), spread by +-``jitter`` so endpoints that failed together
    are not all retried in the same second."""
    step = schedule[min(max(attempts, 1), len(schedule)) - 1]
    return step * random.uniform(1 - jitter, 1 + jitter)
