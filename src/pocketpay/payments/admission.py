"""Admission control for payment creates: shed load before the pipeline collapses.

Every accepted create queues work behind it (an outbox event, a PSP authorization, a webhook,
postings). When creates arrive faster than the pipeline finishes them, the ``created``
payments pile up, the event loop spends itself on accepting more, and the pipeline starves:
measured on PostgreSQL, 100 offered creates/s posted ~1 payment/s. So payments counts the
payments still waiting for their PSP answer and, past ``psp.max_unauthorized``, answers
``503 payments.busy`` with ``Retry-After`` instead of accepting more. Nothing is written for a
shed request; the client's retry with the same Idempotency-Key runs it normally.

The gateway asks ``PaymentsClient.admit()`` before it claims the idempotency key, so a shed
request costs no database write (in one process that is this object's ``check``; over HTTP
the client remembers a ``payments.busy`` answer for its Retry-After). ``PaymentsApi.create``
checks again, authoritatively.

The count is global (all processes share the table): a sampler reads it every
``SAMPLE_SECONDS``; between samples each process adds the creates it accepted itself.
"""

from __future__ import annotations

import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.db import single_statements
from pocketpay.payments.errors import PaymentsBusy
from pocketpay.payments.models import payments
from pocketpay.payments.states import PaymentStatus

log = structlog.get_logger(__name__)

SAMPLE_SECONDS = 0.25

_WAITING = (
    select(func.count())
    .select_from(payments)
    .where(payments.c.status == PaymentStatus.CREATED.value)
)


class Admission:
    """``limit`` 0 admits everything (and never samples)."""

    def __init__(self, engine: AsyncEngine, limit: int) -> None:
        self._reads = single_statements(engine)
        self.limit = limit
        self.waiting = 0
        self._admitted = 0  # creates this process let through, ever
        self._in_flight = 0  # ... whose transaction has not ended yet

    def check(self) -> None:
        """Raise ``PaymentsBusy`` when the backlog is full."""
        if self.limit and self.waiting >= self.limit:
            raise PaymentsBusy.shed(
                f"{self.waiting} payments are waiting for the payment provider (limit "
                f"{self.limit})."
            )

    def admit(self) -> None:
        """``check``, then count one more waiting payment."""
        self.check()
        self.waiting += 1
        self._admitted += 1
        self._in_flight += 1

    def done(self) -> None:
        """The admitted create's transaction ended (committed or not)."""
        self._in_flight -= 1

    async def sample(self) -> None:
        """Read the global count. A failed read keeps the last one (the database is down:
        creates fail on their own) and is not logged 4 times a second."""
        try:
            before, in_flight = self._admitted, self._in_flight
            async with self._reads.connect() as conn:
                counted = int((await conn.execute(_WAITING)).scalar_one())
            # Creates of this process not committed when the count began, or admitted while
            # it ran, may be missing from it: add them. Counting one twice only sheds a little
            # early; forgetting it would let the limit slip.
            self.waiting = counted + in_flight + self._admitted - before
        except Exception as exc:
            log.debug("payments.admission.sample_failed", error=type(exc).__name__)
