"""``engine``: a migrated, empty database on SQLite and on PostgreSQL (the ledger tests')."""

from __future__ import annotations

from tests.ledger.conftest import engine

__all__ = ["engine"]
