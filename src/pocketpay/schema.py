"""Every component's tables, for the migration tool only (components never share tables).

On PostgreSQL each component's tables live in a schema of the component's name and are
reached by a login role of its own (``pocketpay_<component>``) that has rights on that schema
alone (architecture rule 1; migration 0004 creates them). The models carry no schema, so
the same code runs on SQLite: on PostgreSQL the database's ``search_path`` finds the tables
(every schema for the owner, ``<component>, bus`` for a component's role).
"""

from __future__ import annotations

from sqlalchemy import MetaData

# Schemas in search_path order; ``bus`` holds the bus tables every component dead-letters to.
SCHEMAS = ("gateway", "payments", "ledger", "monitor", "billing", "notifications", "bus")
# Components that run against the database, each with its login role.
ROLES = {
    c: f"pocketpay_{c}"
    for c in ("gateway", "payments", "ledger", "monitor", "billing", "notifications")
}


def metadata_by_schema() -> dict[str, MetaData]:
    from pocketpay.billing.models import metadata as billing
    from pocketpay.gateway.models import metadata as gateway
    from pocketpay.kit.bus import metadata as bus
    from pocketpay.ledger.models import metadata as ledger
    from pocketpay.monitor.models import metadata as monitor
    from pocketpay.notifications.models import metadata as notifications
    from pocketpay.payments.models import metadata as payments

    return {
        "bus": bus,
        "gateway": gateway,
        "payments": payments,
        "ledger": ledger,
        "monitor": monitor,
        "billing": billing,
        "notifications": notifications,
    }


def all_metadata() -> list[MetaData]:
    return list(metadata_by_schema().values())


def placed_metadata() -> MetaData:
    """The tables as PostgreSQL holds them: each in its component's schema (for comparing)."""
    placed = MetaData()
    for schema, metadata in metadata_by_schema().items():
        for table in metadata.tables.values():
            copy = table.to_metadata(placed, schema=schema)
            # A column's ``index=True`` is named again from the copy's label, which now
            # carries the schema (ix_<schema>_<table>_<col>); the database has the original.
            names = {tuple(c.name for c in i.columns): i.name for i in table.indexes}
            for index in copy.indexes:
                index.name = names[tuple(c.name for c in index.columns)]
    return placed
