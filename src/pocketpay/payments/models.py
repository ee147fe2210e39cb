"""Tables owned by payments."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
)

from pocketpay.kit.db import seq_column
from pocketpay.kit.outbox import inbox_table, outbox_table

metadata = MetaData()

payments = Table(
    "payments_payments",
    metadata,
    seq_column(),
    Column("id", String(40), nullable=False, unique=True),
    Column("owner_id", String(60), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("capture_method", String(10), nullable=False),
    Column("amount_captured_minor", BigInteger, nullable=False, default=0),
    Column("amount_refunded_minor", BigInteger, nullable=False, default=0),
    Column("payment_method", String(100), nullable=False),
    Column("description", String(500), nullable=True),
    Column("metadata", JSON, nullable=False),
    Column("failure_code", String(60), nullable=True),
    Column("failure_message", String(500), nullable=True),
    Column("provider", String(20), nullable=False),
    Column("psp_intent_id", String(80), nullable=True, index=True),
    # A saved payment method (``payment_methods``): the PSP's ids to charge it with. None for a
    # one-time payment method (a test card id), which goes to the PSP as it is.
    Column("psp_customer_id", String(80), nullable=True),
    Column("psp_payment_method", String(80), nullable=True),
    # What the money is for (internal: only components set it, never the public API):
    # ``top_up`` credits the owner's wallet, ``invoice`` the platform's revenue (billing),
    # ``reference`` naming what it pays (the invoice id). ``off_session``: the customer is not
    # there (a renewal charging a saved card), told to the PSP.
    Column("purpose", String(16), nullable=False, server_default="top_up"),
    Column("reference", String(100), nullable=True),
    Column("off_session", Boolean, nullable=False, server_default=false()),
    Column("psp_charge_id", String(80), nullable=True),
    Column("psp_balance_txn_id", String(80), nullable=True),
    # When to ask the PSP again whether a captured payment's funds are available.
    Column("settle_check_at", DateTime(timezone=True), nullable=True, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_payments_owner_seq", "owner_id", "seq"),
    Index("ix_payments_status", "status"),
)

attempts = Table(
    "payments_attempts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("payment_id", String(40), nullable=False, index=True),
    Column("operation", String(20), nullable=False),  # authorize | capture | cancel
    # pending | succeeded | failed | unknown (a timeout: resolved by webhook or by asking)
    Column("status", String(12), nullable=False),
    Column("idempotency_key", String(100), nullable=False),
    Column("error", Text, nullable=True),
    Column("tries", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

timeline = Table(
    "payments_timeline",
    metadata,
    seq_column(),
    Column("payment_id", String(40), nullable=False, index=True),
    Column("from_status", String(16), nullable=True),
    Column("to_status", String(16), nullable=False),
    Column("cause", String(40), nullable=False),  # api | psp | psp_webhook | settlement | ...
    Column("detail", JSON, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
)

refunds = Table(
    "payments_refunds",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("payment_id", String(40), nullable=False, index=True),
    Column("owner_id", String(60), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(12), nullable=False),
    Column("reason", String(60), nullable=True),
    Column("psp_refund_id", String(80), nullable=True),
    Column("failure_code", String(60), nullable=True),
    Column("metadata", JSON, nullable=False, server_default="{}"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# The PSP customer that keeps a user's saved payment methods: one per user, made on first save.
customers = Table(
    "payments_customers",
    metadata,
    Column("owner_id", String(60), primary_key=True),
    Column("psp_customer_id", String(80), nullable=False),
    Column("provider", String(20), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Saved payment methods (cards kept at the PSP for their owner); ``id`` derives from (owner,
# Idempotency-Key) so a retried save converges on one row and one PSP attachment.
payment_methods = Table(
    "payments_payment_methods",
    metadata,
    seq_column(),
    Column("id", String(40), nullable=False, unique=True),
    Column("owner_id", String(60), nullable=False),
    Column("source", String(100), nullable=False),  # what the caller gave (pm_card_visa)
    Column("psp_customer_id", String(80), nullable=False),
    Column("psp_payment_method", String(80), nullable=False),
    Column("brand", String(20), nullable=False),
    Column("last4", String(4), nullable=False),
    Column("exp_month", Integer, nullable=False),
    Column("exp_year", Integer, nullable=False),
    Column("status", String(10), nullable=False),  # active | detached
    Column("metadata", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("detached_at", DateTime(timezone=True), nullable=True),
    Index("ix_payments_payment_methods_owner_seq", "owner_id", "seq"),
)

# Payouts from a wallet to a bank account (``flows.payouts``). ``id`` derives from (owner,
# Idempotency-Key). Only the account's last 4 digits are kept: the full number went to the PSP
# once (its bank account token) and ``psp_bank_account_id`` names it there.
payouts = Table(
    "payments_payouts",
    metadata,
    seq_column(),
    Column("id", String(40), nullable=False, unique=True),
    Column("owner_id", String(60), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(12), nullable=False),  # payouts' PayoutStatus
    Column("stage", String(10), nullable=False),  # the recovery point: PayoutStage
    Column("country", String(2), nullable=False),
    Column("routing_number", String(9), nullable=False),
    Column("last4", String(4), nullable=False),
    Column("psp_bank_account_id", String(80), nullable=False),
    Column("psp_payout_id", String(80), nullable=True),
    Column("description", String(500), nullable=True),
    Column("metadata", JSON, nullable=False),
    Column("failure_code", String(60), nullable=True),
    Column("failure_message", String(500), nullable=True),
    # When to ask the PSP about a sent, unfinished payout again (lost webhooks).
    Column("check_at", DateTime(timezone=True), nullable=True, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_payments_payouts_owner_seq", "owner_id", "seq"),
)

# Disputes (chargebacks and inquiries) the PSP opened on our payments (``flows.disputes``).
# ``id`` derives from the PSP's dispute id, so concurrent webhooks of one dispute make one row.
# ``status`` is Stripe's; the evidence text we sent is kept as the user wrote it.
disputes = Table(
    "payments_disputes",
    metadata,
    seq_column(),
    Column("id", String(40), nullable=False, unique=True),
    Column("psp_dispute_id", String(80), nullable=False, unique=True),
    Column("payment_id", String(40), nullable=False, index=True),
    Column("owner_id", String(60), nullable=False),
    Column("purpose", String(16), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(24), nullable=False),
    Column("reason", String(40), nullable=False),
    Column("evidence_due_by", DateTime(timezone=True), nullable=True),
    Column("evidence_text", Text, nullable=True),
    Column("evidence_submitted_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("closed_at", DateTime(timezone=True), nullable=True),
    Index("ix_payments_disputes_owner_seq", "owner_id", "seq"),
)

# Inbox for PSP webhooks: each PSP event id is applied once.
psp_events = inbox_table(metadata, "payments_psp")

outbox = outbox_table(metadata, "payments")
inbox = inbox_table(metadata, "payments")
