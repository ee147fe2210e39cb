"""Tables owned by billing."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

from pocketpay.kit.db import seq_column
from pocketpay.kit.outbox import inbox_table, outbox_table

metadata = MetaData()

plans = Table(
    "billing_plans",
    metadata,
    seq_column(),
    Column("id", String(40), nullable=False, unique=True),
    Column("name", String(100), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("interval", String(5), nullable=False),  # day | week | month | year
    Column("interval_count", Integer, nullable=False),
    Column("trial_days", Integer, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("archived_at", DateTime(timezone=True), nullable=True),
)

# A user's billing identity: ``number`` (the seq) and the next invoice number, so invoices are
# numbered per user without gaps (PP-<number>-<n>), the counter moving in the transaction that
# finalizes the invoice.
customers = Table(
    "billing_customers",
    metadata,
    seq_column(),
    Column("owner_id", String(60), nullable=False, unique=True),
    Column("invoices_numbered", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

subscriptions = Table(
    "billing_subscriptions",
    metadata,
    seq_column(),
    Column("id", String(40), nullable=False, unique=True),
    Column("owner_id", String(60), nullable=False),
    Column("plan_id", String(40), nullable=False),
    Column("status", String(20), nullable=False),
    Column("payment_source", String(10), nullable=False),  # card | wallet
    Column("payment_method", String(40), nullable=True),  # a saved method of payments
    Column("currency", String(3), nullable=False),
    Column("anchor", DateTime(timezone=True), nullable=False),  # billing cycle anchor
    Column("trial_end", DateTime(timezone=True), nullable=True),
    Column("period", Integer, nullable=False),  # index of the current paid period
    Column("current_period_start", DateTime(timezone=True), nullable=False),
    Column("current_period_end", DateTime(timezone=True), nullable=False),
    Column("cancel_at_period_end", Boolean, nullable=False),
    Column("canceled_at", DateTime(timezone=True), nullable=True),
    # When the scheduler must look at it next (billing time): the period's end.
    Column("next_action_at", DateTime(timezone=True), nullable=True, index=True),
    Column("metadata", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_billing_subscriptions_owner_seq", "owner_id", "seq"),
)

invoices = Table(
    "billing_invoices",
    metadata,
    seq_column(),
    Column("id", String(40), nullable=False, unique=True),
    Column("owner_id", String(60), nullable=False),
    Column("subscription_id", String(40), nullable=False),
    Column("number", String(30), nullable=True),  # set when finalized
    Column("status", String(15), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("amount_paid_minor", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),  # charge attempts made
    Column("next_attempt_at", DateTime(timezone=True), nullable=True, index=True),
    Column("last_decline_code", String(60), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finalized_at", DateTime(timezone=True), nullable=True),
    Column("paid_at", DateTime(timezone=True), nullable=True),
    Column("voided_at", DateTime(timezone=True), nullable=True),
    # One invoice per subscription period, whatever retries or concurrent schedulers do.
    UniqueConstraint("subscription_id", "period_start", name="uq_billing_invoices_period"),
    Index("ix_billing_invoices_owner_seq", "owner_id", "seq"),
)

invoice_lines = Table(
    "billing_invoice_lines",
    metadata,
    seq_column(),
    Column("invoice_id", String(40), nullable=False, index=True),
    Column("kind", String(12), nullable=False),  # subscription | proration | credit | one_off
    Column("description", String(200), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=True),
    Column("period_end", DateTime(timezone=True), nullable=True),
)

# Lines waiting for the subscription's next invoice: a plan change's prorations
# (``create_prorations``), the credit an invoice whose lines sum below zero carries forward,
# and an admin's one-off lines (with an ``id``, derived from the admin's Idempotency-Key).
# ``open_invoice`` adds them and sets ``invoice_id`` in the transaction that makes the invoice.
pending_lines = Table(
    "billing_pending_lines",
    metadata,
    seq_column(),
    Column("id", String(40), nullable=True),  # one_off lines only (ii_...)
    Column("subscription_id", String(40), nullable=False, index=True),
    Column("kind", String(12), nullable=False),  # proration | credit | one_off
    Column("description", String(200), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=True),
    Column("period_end", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("invoice_id", String(40), nullable=True),  # NULL until an invoice takes it
    Index("uq_billing_pending_lines_id", "id", unique=True),
)

# Each charge of an invoice: its id is ``<invoice>:<n>``; the payment or ledger transfer made
# for it carries an id derived from that, so a resumed attempt converges on one charge.
charges = Table(
    "billing_charges",
    metadata,
    Column("id", String(60), primary_key=True),
    Column("invoice_id", String(40), nullable=False, index=True),
    Column("n", Integer, nullable=False),
    Column("source", String(10), nullable=False),  # card | wallet
    # pending (asked, answer not applied) | succeeded | failed
    Column("status", String(10), nullable=False),
    Column("payment_id", String(40), nullable=True, index=True),
    Column("decline_code", String(60), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# The test clock: billing time = wall time + offset (one row). Only the sandbox may move it.
clock = Table(
    "billing_clock",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("offset_seconds", Float, nullable=False),
)

outbox = outbox_table(metadata, "billing")
inbox = inbox_table(metadata, "billing")
