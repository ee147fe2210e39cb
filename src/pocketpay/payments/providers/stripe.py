"""The Stripe adapter, through the official SDK. Pointed at our sandbox by default; given real
keys and no ``api_base`` it talks to Stripe itself. Every call runs behind a timeout and a
circuit breaker and carries an idempotency key derived from our own ids."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import stripe

from pocketpay.kit.breaker import BreakerOpen, CircuitBreaker
from pocketpay.kit.clock import Clock
from pocketpay.kit.metrics import PSP_CALLS, PSP_LATENCY
from pocketpay.kit.tracing import client_span
from pocketpay.payments.providers.base import (
    BankAccount,
    CallWindow,
    DisputeResult,
    IntentResult,
    PayoutResult,
    PspDeclined,
    PspIntent,
    PspPayout,
    PspRefund,
    PspRejected,
    PspUnavailable,
    RefundResult,
    SavedCard,
)

T = TypeVar("T")


# Stripe's nested expansion: the charge and, inside it, its balance transaction, whose
# ``available_on`` tells when the funds settle (no separate balance transaction request).
EXPAND = ["latest_charge.balance_transaction"]


def _charge_ids(charge: Any) -> tuple[str | None, str | None, int | None]:
    """(charge id, balance transaction id, available_on) of an intent's ``latest_charge``,
    whether it came as an id or expanded (with its balance transaction as an id or an
    object)."""
    if charge is None or isinstance(charge, str):
        return charge, None, None
    bt = charge.get("balance_transaction")
    if bt is None or isinstance(bt, str):
        return charge.get("id"), bt, None
    available_on = bt.get("available_on")
    return charge.get("id"), bt.get("id"), int(available_on) if available_on else None


def _plain(obj: Any) -> Any:
    return obj.to_dict() if hasattr(obj, "to_dict") else obj


def _declined(exc: stripe.CardError) -> PspDeclined:
    """The decline code (``insufficient_funds``...; else the error code), Stripe's message and
    the declined intent's id. The error is read as a plain dict: since the 16.x SDK a
    ``StripeObject`` is not a dict (``.get`` raises AttributeError)."""
    err = _plain(exc.error) if exc.error is not None else {}
    intent = err.get("payment_intent")
    intent_id = intent if isinstance(intent, str) or intent is None else intent.get("id")
    return PspDeclined(
        err.get("decline_code") or exc.code or "card_declined",
        exc.user_message or str(exc),
        intent_id,
    )


def _intent(obj: Any) -> IntentResult:
    pi = _plain(obj)
    charge_id, btxn, available_on = _charge_ids(pi.get("latest_charge"))
    err = pi.get("last_payment_error") or {}
    return IntentResult(
        intent_id=pi["id"],
        status=pi["status"],
        amount_capturable_minor=int(pi.get("amount_capturable") or 0),
        amount_received_minor=int(pi.get("amount_received") or 0),
        charge_id=charge_id,
        balance_txn_id=btxn,
        available_on=available_on,
        decline_code=(err.get("decline_code") or err.get("code")) if err else None,
        failure_message=err.get("message") if err else None,
    )


class StripeProvider:
    name = "stripe"

    def __init__(
        self,
        api_key: str,
        api_base: str,
        clock: Clock,
        *,
        timeout_seconds: float = 5.0,
        ping_timeout_seconds: float = 1.0,
        failure_threshold: int = 5,
        reset_seconds: float = 30.0,
        name: str = "stripe",
    ) -> None:
        self.name = name
        base = {"api": api_base} if api_base else None
        self._client = stripe.StripeClient(
            api_key,
            base_addresses=base,  # type: ignore[arg-type]
            http_client=stripe.HTTPXClient(timeout=timeout_seconds),
            max_network_retries=0,
        )
        self._ping_client = stripe.StripeClient(
            api_key,
            base_addresses=base,  # type: ignore[arg-type]
            http_client=stripe.HTTPXClient(timeout=ping_timeout_seconds),
            max_network_retries=0,
        )
        self.breaker = CircuitBreaker(
            "psp", clock, failure_threshold=failure_threshold, reset_seconds=reset_seconds
        )
        self.window = CallWindow(clock)

    async def _call(self, op: str, fn: Callable[[], Awaitable[T]], *, probe: bool = False) -> T:
        # A probe (the health ping) goes around the breaker: never blocked by it, never
        # counted by it, so an idle system's pings cannot open or close it.
        trial = False
        if not probe:
            try:
                trial = self.breaker.before_call()
            except BreakerOpen as exc:
                PSP_CALLS.labels(op, "breaker_open").inc()
                raise PspUnavailable(str(exc)) from exc
        start = time.perf_counter()
        try:
            with client_span(f"psp {op}", **{"pocketpay.psp": self.name}):
                result = await fn()
        except stripe.CardError as exc:
            self._ok(op, "declined", trial, probe)
            raise _declined(exc) from exc
        except (stripe.InvalidRequestError, stripe.IdempotencyError) as exc:
            self._ok(op, "rejected", trial, probe)
            raise PspRejected(exc.code or "invalid_request", exc.user_message or str(exc)) from exc
        except (
            stripe.APIConnectionError,
            stripe.APIError,
            stripe.RateLimitError,
            stripe.AuthenticationError,
        ) as exc:
            self._fail(op, trial, probe)
            raise PspUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except stripe.StripeError as exc:
            self._fail(op, trial, probe)
            raise PspUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            self.breaker.release(trial)  # no verdict (cancelled, unexpected): free the trial
            raise
        finally:
            PSP_LATENCY.labels(op).observe(time.perf_counter() - start)
        self._ok(op, "ok", trial, probe)
        return result

    def _ok(self, op: str, outcome: str, trial: bool, probe: bool) -> None:
        if not probe:
            self.breaker.record_success(trial)
        self.window.record(True)
        PSP_CALLS.labels(op, outcome).inc()

    def _fail(self, op: str, trial: bool, probe: bool) -> None:
        if not probe:
            self.breaker.record_failure(trial)
        self.window.record(False)
        PSP_CALLS.labels(op, "error").inc()

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
    ) -> IntentResult:
        params: Any = {
            "amount": amount_minor,
            "currency": currency.lower(),
            "payment_method": payment_method,
            "confirm": True,
            "capture_method": capture_method,
            "metadata": metadata,
            "expand": EXPAND,
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
        }
        if customer is not None:
            params["customer"] = customer
        if off_session:  # the customer is not there: a charge of a saved card (billing)
            params["off_session"] = True
        pi = await self._call(
            "authorize",
            lambda: self._client.v1.payment_intents.create_async(
                params, {"idempotency_key": idempotency_key}
            ),
        )
        return _intent(pi)

    async def create_customer(self, *, idempotency_key: str, metadata: dict[str, str]) -> str:
        params: Any = {"metadata": metadata}
        cus = await self._call(
            "create_customer",
            lambda: self._client.v1.customers.create_async(
                params, {"idempotency_key": idempotency_key}
            ),
        )
        return str(_plain(cus)["id"])

    async def attach_payment_method(
        self, payment_method: str, customer: str, idempotency_key: str
    ) -> SavedCard:
        params: Any = {"customer": customer}
        pm = _plain(
            await self._call(
                "attach_payment_method",
                lambda: self._client.v1.payment_methods.attach_async(
                    payment_method, params, {"idempotency_key": idempotency_key}
                ),
            )
        )
        card = pm.get("card") or {}
        return SavedCard(
            psp_payment_method_id=pm["id"],
            brand=str(card.get("brand", "unknown")),
            last4=str(card.get("last4", "")),
            exp_month=int(card.get("exp_month") or 0),
            exp_year=int(card.get("exp_year") or 0),
        )

    async def detach_payment_method(self, psp_payment_method_id: str) -> None:
        await self._call(
            "detach_payment_method",
            lambda: self._client.v1.payment_methods.detach_async(psp_payment_method_id),
        )

    async def capture(
        self, intent_id: str, amount_minor: int | None, idempotency_key: str
    ) -> IntentResult:
        params: Any = {"expand": EXPAND}
        if amount_minor is not None:
            params["amount_to_capture"] = amount_minor
        pi = await self._call(
            "capture",
            lambda: self._client.v1.payment_intents.capture_async(
                intent_id, params, {"idempotency_key": idempotency_key}
            ),
        )
        return _intent(pi)

    async def cancel(self, intent_id: str, idempotency_key: str) -> IntentResult:
        pi = await self._call(
            "cancel",
            lambda: self._client.v1.payment_intents.cancel_async(
                intent_id, None, {"idempotency_key": idempotency_key}
            ),
        )
        return _intent(pi)

    async def retrieve(self, intent_id: str) -> IntentResult:
        params: Any = {"expand": EXPAND}
        pi = await self._call(
            "retrieve", lambda: self._client.v1.payment_intents.retrieve_async(intent_id, params)
        )
        return _intent(pi)

    async def refund(
        self, intent_id: str, amount_minor: int, idempotency_key: str, metadata: dict[str, str]
    ) -> RefundResult:
        params: Any = {"payment_intent": intent_id, "amount": amount_minor, "metadata": metadata}
        r = await self._call(
            "refund",
            lambda: self._client.v1.refunds.create_async(
                params, {"idempotency_key": idempotency_key}
            ),
        )
        body = _plain(r)
        return RefundResult(body["id"], body["status"], body.get("failure_reason"))

    async def balance_available(self, balance_txn_id: str) -> bool:
        bt = await self._call(
            "balance_transaction",
            lambda: self._client.v1.balance_transactions.retrieve_async(balance_txn_id),
        )
        return bool(_plain(bt)["status"] == "available")

    # -- payouts ----------------------------------------------------------------------------

    async def tokenize_bank_account(
        self,
        *,
        country: str,
        currency: str,
        routing_number: str,
        account_number: str,
        idempotency_key: str,
    ) -> BankAccount:
        params: Any = {
            "bank_account": {
                "country": country,
                "currency": currency.lower(),
                "routing_number": routing_number,
                "account_number": account_number,
            }
        }
        tok = _plain(
            await self._call(
                "tokenize_bank_account",
                lambda: self._client.v1.tokens.create_async(
                    params, {"idempotency_key": idempotency_key}
                ),
            )
        )
        account = tok["bank_account"]
        return BankAccount(bank_account_id=account["id"], last4=account["last4"])

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
        params: Any = {
            "amount": amount_minor,
            "currency": currency.lower(),
            "destination": destination,
            "metadata": metadata,
        }
        if description:
            params["description"] = description
        po = await self._call(
            "create_payout",
            lambda: self._client.v1.payouts.create_async(
                params, {"idempotency_key": idempotency_key}
            ),
        )
        return _payout(po)

    async def retrieve_payout(self, payout_id: str) -> PayoutResult:
        po = await self._call(
            "retrieve_payout", lambda: self._client.v1.payouts.retrieve_async(payout_id)
        )
        return _payout(po)

    async def cancel_payout(self, payout_id: str, idempotency_key: str) -> PayoutResult:
        po = await self._call(
            "cancel_payout",
            lambda: self._client.v1.payouts.cancel_async(
                payout_id, None, {"idempotency_key": idempotency_key}
            ),
        )
        return _payout(po)

    async def retrieve_dispute(self, dispute_id: str) -> DisputeResult:
        dp = await self._call(
            "retrieve_dispute", lambda: self._client.v1.disputes.retrieve_async(dispute_id)
        )
        return _dispute(dp)

    async def list_disputes(
        self, *, created_gte: int | None = None
    ) -> AsyncIterator[DisputeResult]:
        """Every dispute, newest first, auto-paged (the sweep that finds lost webhooks)."""
        params: Any = {"limit": 100}
        if created_gte is not None:
            params["created"] = {"gte": created_gte}
        first = await self._call(
            "list_disputes", lambda: self._client.v1.disputes.list_async(params)
        )
        async for dp in _paged(first):
            yield _dispute(dp)

    async def submit_dispute_evidence(
        self, dispute_id: str, text: str, idempotency_key: str
    ) -> DisputeResult:
        params: Any = {"evidence": {"uncategorized_text": text}, "submit": True}
        dp = await self._call(
            "submit_dispute_evidence",
            lambda: self._client.v1.disputes.update_async(
                dispute_id, params, {"idempotency_key": idempotency_key}
            ),
        )
        return _dispute(dp)

    async def close_dispute(self, dispute_id: str, idempotency_key: str) -> DisputeResult:
        dp = await self._call(
            "close_dispute",
            lambda: self._client.v1.disputes.close_async(
                dispute_id, None, {"idempotency_key": idempotency_key}
            ),
        )
        return _dispute(dp)

    async def ping(self) -> float:
        start = time.perf_counter()
        await self._call("ping", lambda: self._ping_client.v1.balance.retrieve_async(), probe=True)
        return (time.perf_counter() - start) * 1000

    def stats(self) -> dict[str, Any]:
        calls, errors = self.window.counts()
        return {
            "breaker": self.breaker.state,
            "calls_5m": calls,
            "errors_5m": errors,
            "error_rate_5m": round(errors / calls, 4) if calls else 0.0,
        }

    # -- lists (reconciliation) ------------------------------------------------------------

    async def list_intents(self, *, created_gte: int | None = None) -> AsyncIterator[PspIntent]:
        """Every PaymentIntent, newest first, through the SDK's auto-paging (100 a page)."""
        params: Any = {"limit": 100}
        if created_gte is not None:
            params["created"] = {"gte": created_gte}
        first = await self._call(
            "list_intents", lambda: self._client.v1.payment_intents.list_async(params)
        )
        async for pi in _paged(first):
            yield _listed_intent(_plain(pi))

    async def list_refunds(self, *, intent_id: str | None = None) -> AsyncIterator[PspRefund]:
        """Every refund (of one intent if given), newest first, auto-paged."""
        params: Any = {"limit": 100}
        if intent_id is not None:
            params["payment_intent"] = intent_id
        first = await self._call("list_refunds", lambda: self._client.v1.refunds.list_async(params))
        async for r in _paged(first):
            body = _plain(r)
            yield PspRefund(
                refund_id=body["id"],
                status=body["status"],
                amount_minor=int(body["amount"]),
                intent_id=body.get("payment_intent"),
                created=int(body["created"]),
                metadata=dict(body.get("metadata") or {}),
            )

    async def list_payouts(self) -> AsyncIterator[PspPayout]:
        """Every payout, newest first, auto-paged."""
        params: Any = {"limit": 100}
        first = await self._call("list_payouts", lambda: self._client.v1.payouts.list_async(params))
        async for po in _paged(first):
            body = _plain(po)
            yield PspPayout(
                payout_id=body["id"],
                status=body["status"],
                amount_minor=int(body["amount"]),
                currency=str(body["currency"]).upper(),
                created=int(body["created"]),
                arrival_date=int(body.get("arrival_date") or body["created"]),
                metadata=dict(body.get("metadata") or {}),
            )


async def _paged(first: Any) -> AsyncIterator[Any]:
    """The SDK's auto-paging of a list; a failure on a later page is an unknown outcome."""
    try:
        async for item in first.auto_paging_iter():
            yield item
    except stripe.StripeError as exc:
        raise PspUnavailable(f"{type(exc).__name__}: {exc}") from exc


def _payout(obj: Any) -> PayoutResult:
    po = _plain(obj)
    return PayoutResult(
        payout_id=po["id"],
        status=po["status"],
        failure_code=po.get("failure_code"),
        failure_message=po.get("failure_message"),
    )


def _dispute(obj: Any) -> DisputeResult:
    dp = _plain(obj)
    intent = dp.get("payment_intent")
    due_by = (dp.get("evidence_details") or {}).get("due_by")
    return DisputeResult(
        dispute_id=dp["id"],
        intent_id=intent if isinstance(intent, str) or intent is None else intent.get("id"),
        amount_minor=int(dp["amount"]),
        currency=str(dp["currency"]).upper(),
        status=dp["status"],
        reason=dp.get("reason") or "general",
        due_by=int(due_by) if due_by else None,
    )


def _listed_intent(pi: dict[str, Any]) -> PspIntent:
    return PspIntent(
        intent_id=pi["id"],
        status=pi["status"],
        amount_minor=int(pi["amount"]),
        amount_received_minor=int(pi.get("amount_received") or 0),
        currency=str(pi["currency"]).upper(),
        created=int(pi["created"]),
        metadata=dict(pi.get("metadata") or {}),
    )
