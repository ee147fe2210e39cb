"""payment purpose

A payment says what its money is for: ``purpose`` ``top_up`` (the owner's wallet is credited,
as every payment so far) or ``invoice`` (billing charges an invoice; the platform's revenue
account is credited), ``reference`` (the invoice id) and ``off_session`` (the customer is not
there: a saved card charged by a renewal). Only components set them, never the public API.
Existing payments become ``top_up``, not off-session. On PostgreSQL the table is in the
``payments`` schema (0004).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _schema() -> str | None:
    return "payments" if op.get_bind().dialect.name == "postgresql" else None


def upgrade() -> None:
    with op.batch_alter_table("payments_payments", schema=_schema()) as batch_op:
        batch_op.add_column(
            sa.Column("purpose", sa.String(length=16), nullable=False, server_default="top_up")
        )
        batch_op.add_column(sa.Column("reference", sa.String(length=100), nullable=True))
        batch_op.add_column(
            sa.Column("off_session", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("payments_payments", schema=_schema()) as batch_op:
        batch_op.drop_column("off_session")
        batch_op.drop_column("reference")
        batch_op.drop_column("purpose")
