"""What every payment flow needs: storage, time, the PSP, the ledger and the relay."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.clock import Clock
from pocketpay.kit.outbox import OutboxRelay
from pocketpay.ledger.client import LedgerClient
from pocketpay.payments.providers.base import Provider


@dataclass
class Ctx:
    engine: AsyncEngine
    clock: Clock
    provider: Provider
    ledger: LedgerClient
    relay: OutboxRelay
    # How long an attempt may stay open before the reconciler resumes it.
    retry_seconds: float = 30.0
    settle_poll_seconds: float = 1.0
    # Resumptions before an attempt is flagged ``stuck`` for an operator.
    max_tries: int = 10
    # Wakes the settlement job (a ``balance.available`` webhook); set by the component's build.
    wake_settle: Callable[[], None] = field(default=lambda: None)
