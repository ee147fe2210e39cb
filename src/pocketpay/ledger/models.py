"""Tables owned by the ledger. No other component reads or writes them."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
)

from pocketpay.kit.db import seq_column
from pocketpay.kit.outbox import inbox_table, outbox_table

metadata = MetaData()

accounts = Table(
    "ledger_accounts",
    metadata,
    Column("id", String(120), primary_key=True),
    Column("code", Integer, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("owner_id", String(60), nullable=True, index=True),
    Column("shards", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Stored balances: one row per account (wallets) or SYSTEM_SHARDS rows (system accounts).
balances = Table(
    "ledger_balances",
    metadata,
    Column("account_id", String(120), nullable=False),
    Column("shard", Integer, nullable=False),
    Column("debits_pending", BigInteger, nullable=False, default=0),
    Column("debits_posted", BigInteger, nullable=False, default=0),
    Column("credits_pending", BigInteger, nullable=False, default=0),
    Column("credits_posted", BigInteger, nullable=False, default=0),
    PrimaryKeyConstraint("account_id", "shard"),
)

transfers = Table(
    "ledger_transfers",
    metadata,
    seq_column(),
    Column("id", String(120), nullable=False, unique=True),  # chosen by the caller
    Column("debit_account_id", String(120), nullable=False),
    Column("credit_account_id", String(120), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("code", Integer, nullable=False),
    # posted | pending | post_pending | void_pending
    Column("kind", String(16), nullable=False),
    Column("pending_id", String(120), nullable=True),
    # for kind=pending: open | posted | voided
    Column("pending_state", String(10), nullable=True),
    Column("debit_shard", Integer, nullable=False, default=0),
    Column("credit_shard", Integer, nullable=False, default=0),
    Column("user_data", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_ledger_transfers_debit", "debit_account_id", "seq"),
    Index("ix_ledger_transfers_credit", "credit_account_id", "seq"),
)

# The running balance of every unsharded account (wallets): one row per transfer that changed
# it, with the account's four counters after that transfer. The balance at any time is the
# last row at or before it (one index seek, whatever the history); ``pocketpay ledger replay``
# rebuilds these rows from the transfers and reports any difference.
balance_history = Table(
    "ledger_balance_history",
    metadata,
    seq_column(),
    Column("account_id", String(120), nullable=False),
    Column("transfer_id", String(120), nullable=False, index=True),
    Column("debits_pending", BigInteger, nullable=False),
    Column("debits_posted", BigInteger, nullable=False),
    Column("credits_pending", BigInteger, nullable=False),
    Column("credits_posted", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_ledger_balance_history_at", "account_id", "created_at", "seq"),
)

# A price for converting between two of a user's wallets, executable once before it expires
# (``ledger/conversions.py``). ``rate`` is the quoted decimal rate as text (exact).
fx_quotes = Table(
    "ledger_fx_quotes",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("owner_id", String(60), nullable=False, index=True),
    Column("sell_currency", String(3), nullable=False),
    Column("buy_currency", String(3), nullable=False),
    Column("sell_amount_minor", BigInteger, nullable=False),
    Column("buy_amount_minor", BigInteger, nullable=False),
    Column("converted_minor", BigInteger, nullable=False),
    Column("fee_minor", BigInteger, nullable=False),
    Column("rate", String(40), nullable=False),
    Column("rate_source", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    # Set by the one transaction that executes the quote (the conversion).
    Column("conversion_id", String(40), nullable=True, unique=True),
    Column("converted_at", DateTime(timezone=True), nullable=True),
    Index("ix_ledger_fx_quotes_conversions", "owner_id", "converted_at"),
)

outbox = outbox_table(metadata, "ledger")
inbox = inbox_table(metadata, "ledger")
