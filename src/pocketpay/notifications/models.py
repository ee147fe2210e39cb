"""Tables owned by notifications."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

from pocketpay.kit.db import seq_column
from pocketpay.kit.outbox import inbox_table, outbox_table

metadata = MetaData()

# Where a user's email goes: kept from the gateway's ``gateway.user.created`` events (and the
# users that existed before, copied by migration 0012), never read from the gateway's tables.
contacts = Table(
    "notifications_contacts",
    metadata,
    Column("user_id", String(40), primary_key=True),
    Column("email", String(254), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# A user without a row has the defaults: email on, no Slack.
preferences = Table(
    "notifications_preferences",
    metadata,
    Column("user_id", String(40), primary_key=True),
    Column("email", Boolean, nullable=False),
    Column("slack_webhook_url", String(2048), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

endpoints = Table(
    "notifications_endpoints",
    metadata,
    seq_column(),
    Column("id", String(40), nullable=False, unique=True),
    Column("user_id", String(40), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("description", String(200), nullable=False),
    Column("events", JSON, nullable=False),  # event types, or ["*"]
    Column("status", String(10), nullable=False),  # enabled | disabled
    # Standard Webhooks secrets (whsec_...): HMAC keys, so kept as they are. After a rotation
    # the previous one signs too until previous_expires_at (receivers switch over meanwhile).
    Column("secret", String(100), nullable=False),
    Column("previous_secret", String(100), nullable=True),
    Column("previous_expires_at", DateTime(timezone=True), nullable=True),
    # Since when every attempt failed (NULL after a success): disabled after 3 days of it.
    Column("failing_since", DateTime(timezone=True), nullable=True),
    Column("disabled_reason", String(200), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_notifications_endpoints_user_seq", "user_id", "seq"),
)

# One message to send: a webhook delivery to an endpoint, an email or a Slack post. Written by
# the consumer in the transaction that claims the event; sent by the delivery job outside it.
deliveries = Table(
    "notifications_deliveries",
    metadata,
    seq_column(),
    Column("id", String(40), nullable=False, unique=True),  # the webhook-id receivers dedupe on
    Column("channel", String(10), nullable=False),  # webhook | email | slack
    Column("user_id", String(40), nullable=False),
    Column("endpoint_id", String(40), nullable=True),  # webhooks only
    # The address (email), Slack URL, or the endpoint URL when enqueued (webhooks go to the
    # endpoint's current URL, so a fixed URL gets the retries).
    Column("target", String(2048), nullable=False),
    Column("event_id", String(80), nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("status", String(10), nullable=False),  # pending | succeeded | failed
    Column("attempts", Integer, nullable=False),
    # Due time while pending; a claimed delivery's is pushed past the send (a lease), so a
    # crash mid-send leaves it due again later rather than lost.
    Column("next_attempt_at", DateTime(timezone=True), nullable=True, index=True),
    Column("first_attempt_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_notifications_deliveries_endpoint_seq", "endpoint_id", "seq"),
)

attempts = Table(
    "notifications_attempts",
    metadata,
    seq_column(),
    Column("delivery_id", String(40), nullable=False, index=True),
    Column("attempted_at", DateTime(timezone=True), nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("latency_ms", Integer, nullable=False),
    Column("response_excerpt", String(500), nullable=False),
    Column("error", String(500), nullable=True),
)

outbox = outbox_table(metadata, "notifications")
inbox = inbox_table(metadata, "notifications")
