"""Every component's tables, for the migration tool only (components never share tables)."""

from __future__ import annotations

from sqlalchemy import MetaData


def all_metadata() -> list[MetaData]:
    from pocketpay.gateway.models import metadata as gateway
    from pocketpay.kit.bus import metadata as bus
    from pocketpay.ledger.models import metadata as ledger
    from pocketpay.monitor.models import metadata as monitor
    from pocketpay.payments.models import metadata as payments

    return [bus, gateway, payments, ledger, monitor]
