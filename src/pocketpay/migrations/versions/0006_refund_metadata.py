"""refund metadata

Refunds carry ``metadata`` like payments (the caller's string key-value pairs). Existing
refunds get ``{}``. On PostgreSQL the table is in the ``payments`` schema (0004).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 05:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _schema() -> str | None:
    return "payments" if op.get_bind().dialect.name == "postgresql" else None


def upgrade() -> None:
    with op.batch_alter_table("payments_refunds", schema=_schema()) as batch_op:
        batch_op.add_column(sa.Column("metadata", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("payments_refunds", schema=_schema()) as batch_op:
        batch_op.drop_column("metadata")
