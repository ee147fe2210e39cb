"""The interface every PSP adapter implements, and the errors it may raise."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from pocketpay.kit.clock import Clock


@dataclass(frozen=True)
class IntentResult:
    intent_id: str
    # Stripe's statuses: requires_capture, succeeded, canceled, requires_payment_method, ...
    status: str
    amount_capturable_minor: int = 0
    amount_received_minor: int = 0
    charge_id: str | None = None
    balance_txn_id: str | None = None
    # When the PSP says the charge's funds become available (unix seconds): the expanded
    # balance transaction's ``available_on``. None when the answer did not carry it.
    available_on: int | None = None
    decline_code: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True)
class SavedCard:
    """A payment method the PSP keeps for a customer (to charge it later, off-session)."""

    psp_payment_method_id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int


@dataclass(frozen=True)
class RefundResult:
    refund_id: str
    status: str  # succeeded | pending | failed | canceled
    failure_code: str | None = None


@dataclass(frozen=True)
class BankAccount:
    """A bank account the PSP keeps (tokenized): its id is a payout's destination."""

    bank_account_id: str
    last4: str


@dataclass(frozen=True)
class PayoutResult:
    payout_id: str
    status: str  # Stripe's: pending | in_transit | paid | failed | canceled
    failure_code: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True)
class DisputeResult:
    """A dispute as the PSP has it now (Stripe's statuses)."""

    dispute_id: str
    intent_id: str | None
    amount_minor: int
    currency: str
    status: str  # warning_needs_response | warning_under_review | warning_closed |
    # needs_response | under_review | won | lost
    reason: str
    due_by: int | None  # the evidence deadline (unix seconds)


@dataclass(frozen=True)
class PspIntent:
    """A PaymentIntent as the PSP lists it (for reconciliation)."""

    intent_id: str
    status: str
    amount_minor: int
    amount_received_minor: int
    currency: str  # upper case, as ours
    created: int  # unix seconds
    metadata: dict[str, str]


@dataclass(frozen=True)
class PspRefund:
    """A refund as the PSP lists it (for reconciliation)."""

    refund_id: str
    status: str
    amount_minor: int
    intent_id: str | None
    created: int
    metadata: dict[str, str]


@dataclass(frozen=True)
class PspPayout:
    """A payout as the PSP lists it (for reconciliation)."""

    payout_id: str
    status: str  # Stripe's: pending | in_transit | paid | failed | canceled
    amount_minor: int
    currency: str  # upper case, as ours
    created: int  # unix seconds
    arrival_date: int  # unix seconds: when it is expected at the bank (paid or failed then)
    metadata: dict[str, str]


class PspError(Exception):
    """Base of adapter errors."""


class PspDeclined(PspError):
    """The PSP answered: the card was declined. Final for this attempt."""

    def __init__(self, code: str, message: str, intent_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.intent_id = intent_id


class PspRejected(PspError):
    """The PSP refused the request itself (4xx): our parameters or state were wrong."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class PspUnavailable(PspError):
    """No answer we can trust (timeout, network, 5xx, breaker open): the outcome is unknown."""


class Provider(Protocol):
    name: str

    async def authorize(
        self,
        *,
        amount_minor: int,
        currency: str,
        payment_method: str,
        capture_method: str,
        idempotency_key: str,
        metadata: dict[str, str],
        customer: str | None = None,
        off_session: bool = False,
    ) -> IntentResult: ...

    async def create_customer(self, *, idempotency_key: str, metadata: dict[str, str]) -> str:
        """A customer at the PSP (to keep payment methods for); returns its id."""
        ...

    async def attach_payment_method(
        self, payment_method: str, customer: str, idempotency_key: str
    ) -> SavedCard:
        """Keep ``payment_method`` for ``customer``. A card the PSP refuses raises
        ``PspDeclined``."""
        ...

    async def detach_payment_method(self, psp_payment_method_id: str) -> None: ...

    async def capture(
        self, intent_id: str, amount_minor: int | None, idempotency_key: str
    ) -> IntentResult: ...

    async def cancel(self, intent_id: str, idempotency_key: str) -> IntentResult: ...

    async def retrieve(self, intent_id: str) -> IntentResult: ...

    async def refund(
        self, intent_id: str, amount_minor: int, idempotency_key: str, metadata: dict[str, str]
    ) -> RefundResult: ...

    async def balance_available(self, balance_txn_id: str) -> bool: ...

    async def tokenize_bank_account(
        self,
        *,
        country: str,
        currency: str,
        routing_number: str,
        account_number: str,
        idempotency_key: str,
    ) -> BankAccount:
        """Give the account number to the PSP once; we keep only the returned id."""
        ...

    async def create_payout(
        self,
        *,
        amount_minor: int,
        currency: str,
        destination: str,
        idempotency_key: str,
        metadata: dict[str, str],
        description: str | None = None,
    ) -> PayoutResult:
        """Send available funds to ``destination``. ``PspRejected`` (``balance_insufficient``
        when the available balance is short) means no payout was made."""
        ...

    async def retrieve_payout(self, payout_id: str) -> PayoutResult: ...

    async def cancel_payout(self, payout_id: str, idempotency_key: str) -> PayoutResult: ...

    async def retrieve_dispute(self, dispute_id: str) -> DisputeResult: ...

    def list_disputes(self, *, created_gte: int | None = None) -> AsyncIterator[DisputeResult]:
        """Every dispute (opened at or after ``created_gte``), newest first."""
        ...

    async def submit_dispute_evidence(
        self, dispute_id: str, text: str, idempotency_key: str
    ) -> DisputeResult:
        """Send ``text`` as the dispute's evidence and submit it for the bank's decision.
        ``PspRejected`` when the dispute no longer takes evidence."""
        ...

    async def close_dispute(self, dispute_id: str, idempotency_key: str) -> DisputeResult:
        """Accept the dispute (the cardholder keeps the money)."""
        ...

    async def ping(self) -> float: ...

    def list_intents(self, *, created_gte: int | None = None) -> AsyncIterator[PspIntent]:
        """Every PaymentIntent (created at or after ``created_gte``), newest first."""
        ...

    def list_refunds(self, *, intent_id: str | None = None) -> AsyncIterator[PspRefund]:
        """Every refund (of ``intent_id`` only, if given), newest first."""
        ...

    def list_payouts(self) -> AsyncIterator[PspPayout]:
        """Every payout, newest first."""
        ...

    def stats(self) -> dict[str, Any]: ...


class CallWindow:
    """Outcomes of PSP calls over a sliding window (for the 5-minute error rate)."""

    def __init__(self, clock: Clock, window_seconds: float = 300.0, limit: int = 100_000) -> None:
        self._clock = clock
        self._window = window_seconds
        self._calls: deque[tuple[float, bool]] = deque(maxlen=limit)

    def record(self, ok: bool) -> None:
        self._calls.append((self._clock.monotonic(), ok))

    def counts(self) -> tuple[int, int]:
        horizon = self._clock.monotonic() - self._window
        while self._calls and self._calls[0][0] < horizon:
            self._calls.popleft()
        errors = sum(1 for _, ok in self._calls if not ok)
        return len(self._calls), errors
