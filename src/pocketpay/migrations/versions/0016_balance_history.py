"""balance history

``ledger_balance_history``: every unsharded account's (a wallet's) four counters after each
transfer that changed it, so a balance at any time is one index seek
(``ledger/history.py``). Existing transfers are replayed here, in their order, into the
history of the accounts they touched (a database upgraded while running transfers were
posting would be reported by ``pocketpay ledger replay``; upgrades run with the apps down).
On PostgreSQL the table lives in the ``ledger`` schema (0004's default privileges give
``pocketpay_ledger`` its rights).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 10:50:00
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def _schema() -> str | None:
    return "ledger" if op.get_bind().dialect.name == "postgresql" else None


def upgrade() -> None:
    schema = _schema()
    history = op.create_table(
        "ledger_balance_history",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True),
        sa.Column("account_id", sa.String(120), nullable=False),
        sa.Column("transfer_id", sa.String(120), nullable=False),
        sa.Column("debits_pending", sa.BigInteger(), nullable=False),
        sa.Column("debits_posted", sa.BigInteger(), nullable=False),
        sa.Column("credits_pending", sa.BigInteger(), nullable=False),
        sa.Column("credits_posted", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        schema=schema,
    )
    op.create_index(
        "ix_ledger_balance_history_at",
        "ledger_balance_history",
        ["account_id", "created_at", "seq"],
        schema=schema,
    )
    op.create_index(
        "ix_ledger_balance_history_transfer_id",
        "ledger_balance_history",
        ["transfer_id"],
        schema=schema,
    )
    _backfill(history, schema)


def _backfill(history: Any, schema: str | None) -> None:
    """The history of every unsharded account, replayed from the transfers in order."""
    bind = op.get_bind()
    prefix = f"{schema}." if schema else ""
    query = sa.text(f"SELECT id FROM {prefix}ledger_accounts WHERE shards = 1")
    unsharded = {r[0] for r in bind.execute(query)}
    if not unsharded:
        return
    rows = bind.execute(
        sa.text(
            "SELECT id, debit_account_id, credit_account_id, amount_minor, kind, pending_id, "
            f"user_data, created_at FROM {prefix}ledger_transfers ORDER BY seq"
        )
    )
    pending: dict[str, tuple[int, bool]] = {}
    running: dict[str, list[int]] = {}
    out: list[dict[str, Any]] = []
    for tid, debit, credit, amount, kind, pending_id, user_data, created_at in rows:
        data = json.loads(user_data) if isinstance(user_data, str) else user_data
        tombstone = bool((data or {}).get("tombstone"))
        if kind == "pending":
            pending[tid] = (int(amount), tombstone)
        for account, is_debit in ((debit, True), (credit, False)):
            if account not in unsharded:
                continue
            delta = _effect(kind, int(amount), is_debit, tombstone, pending.get(pending_id or ""))
            c = running.setdefault(account, [0, 0, 0, 0])
            for i, d in enumerate(delta):
                c[i] += d
            out.append(
                {
                    "account_id": account,
                    "transfer_id": tid,
                    "debits_pending": c[0],
                    "debits_posted": c[1],
                    "credits_pending": c[2],
                    "credits_posted": c[3],
                    "created_at": created_at,
                }
            )
    for start in range(0, len(out), 1000):
        op.bulk_insert(history, out[start : start + 1000])


def _effect(
    kind: str, amount: int, is_debit: bool, tombstone: bool, hold: tuple[int, bool] | None
) -> tuple[int, int, int, int]:
    if kind == "posted":
        return (0, amount, 0, 0) if is_debit else (0, 0, 0, amount)
    if kind == "pending":
        if tombstone:
            return (0, 0, 0, 0)
        return (amount, 0, 0, 0) if is_debit else (0, 0, amount, 0)
    if hold is None or hold[1]:
        return (0, 0, 0, 0)
    posted = amount if kind == "post_pending" else 0
    return (-hold[0], posted, 0, 0) if is_debit else (0, 0, -hold[0], posted)


def downgrade() -> None:
    op.drop_table("ledger_balance_history", schema=_schema())
