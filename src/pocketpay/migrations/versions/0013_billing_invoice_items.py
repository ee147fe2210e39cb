"""billing invoice items

A pending line gets an ``id`` (``ii_...``): an admin's one-off line is an object of its own,
its id derived from the admin and the request's Idempotency-Key, so a retried request finds
the line instead of adding a second charge. Lines made before (prorations, credits carried
forward) keep a NULL id; the unique index allows any number of NULLs on both backends.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 10:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _schema() -> str | None:
    return "billing" if op.get_bind().dialect.name == "postgresql" else None


def upgrade() -> None:
    schema = _schema()
    op.add_column("billing_pending_lines", sa.Column("id", sa.String(40)), schema=schema)
    op.create_index(
        "uq_billing_pending_lines_id", "billing_pending_lines", ["id"], unique=True, schema=schema
    )


def downgrade() -> None:
    schema = _schema()
    op.drop_index("uq_billing_pending_lines_id", "billing_pending_lines", schema=schema)
    with op.batch_alter_table("billing_pending_lines", schema=schema) as batch:
        batch.drop_column("id")
