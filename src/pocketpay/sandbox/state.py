"""The sandbox's objects in memory, lookups, expansion, balance and settlement.

Not thread- or task-safe by itself: the ``Sandbox`` holds its ``asyncio.Lock`` around every
call. Operations never await, so one request's effects are applied atomically. The objects
are loaded from the sandbox's database at start (``storage.SandboxDB``); every object an
operation creates or looks up to change is recorded in ``touched``, which the ``Sandbox``
writes back in one transaction after the operation (``take_touched``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

from pocketpay.kit.clock import Clock
from pocketpay.sandbox import cards
from pocketpay.sandbox.errors import invalid_request, resource_missing
from pocketpay.sandbox.models import (
    BalanceTransaction,
    BankAccount,
    Charge,
    Customer,
    Dispute,
    PaymentIntent,
    PaymentMethod,
    Payout,
    Refund,
    SandboxObject,
    new_id,
)

Emit = Callable[[str, dict[str, Any]], None]

Kind = Literal["pi", "ch", "re", "txn", "cus", "pm", "dp", "po"]
_KINDS = {
    "pi": "payment_intent",
    "ch": "charge",
    "re": "refund",
    "txn": "balance_transaction",
    "cus": "customer",
    "pm": "PaymentMethod",
    "dp": "dispute",
    "po": "payout",
}


class Store:
    """Every object the sandbox knows, keyed by id, plus the rules shared by operations."""

    def __init__(self, clock: Clock, settle_delay_seconds: float, emit: Emit) -> None:
        self.clock = clock
        self.settle_delay_seconds = settle_delay_seconds
        self.emit = emit
        # Processing fee taken from each captured charge (Stripe's US card price by default).
        self.fee_percent = 2.9
        self.fee_fixed = 30
        self.payment_intents: dict[str, PaymentIntent] = {}
        self.charges: dict[str, Charge] = {}
        self.refunds: dict[str, Refund] = {}
        self.balance_transactions: dict[str, BalanceTransaction] = {}
        self.customers: dict[str, Customer] = {}
        self.payment_methods: dict[str, PaymentMethod] = {}
        self.disputes: dict[str, Dispute] = {}
        self.bank_accounts: dict[str, BankAccount] = {}
        self.payouts: dict[str, Payout] = {}
        self.touched: dict[str, SandboxObject] = {}

    def load(self, objs: list[SandboxObject]) -> None:
        """Replace memory by stored objects (oldest first: dicts keep that order)."""
        for table in self._tables():
            table.clear()
        self.touched.clear()
        for obj in objs:
            self._table(obj)[obj.id] = obj

    def put(self, obj: SandboxObject) -> None:
        """Add (or replace) an object; it will be saved with the operation."""
        self._table(obj)[obj.id] = obj
        self.touched[obj.id] = obj

    def take_touched(self) -> list[SandboxObject]:
        touched, self.touched = list(self.touched.values()), {}
        return touched

    def _tables(self) -> tuple[dict[str, Any], ...]:
        return (
            self.payment_intents,
            self.charges,
            self.refunds,
            self.balance_transactions,
            self.customers,
            self.payment_methods,
            self.disputes,
            self.bank_accounts,
            self.payouts,
        )

    def _table(self, obj: SandboxObject) -> dict[str, Any]:
        if isinstance(obj, PaymentIntent):
            return self.payment_intents
        if isinstance(obj, Charge):
            return self.charges
        if isinstance(obj, Refund):
            return self.refunds
        if isinstance(obj, Customer):
            return self.customers
        if isinstance(obj, PaymentMethod):
            return self.payment_methods
        if isinstance(obj, Dispute):
            return self.disputes
        if isinstance(obj, BankAccount):
            return self.bank_accounts
        if isinstance(obj, Payout):
            return self.payouts
        return self.balance_transactions

    def now(self) -> float:
        return self.clock.now().timestamp()

    def timestamp(self) -> int:
        return int(self.now())

    # -- lookups ---------------------------------------------------------------------------

    def payment_intent(self, pi_id: str) -> PaymentIntent:
        found = self.payment_intents.get(pi_id)
        if found is None:
            raise resource_missing("payment_intent", pi_id, param="intent")
        self.touched[found.id] = found
        return found

    def charge(self, ch_id: str, *, param: str = "id") -> Charge:
        found = self.charges.get(ch_id)
        if found is None:
            raise resource_missing("charge", ch_id, param=param)
        self.touched[found.id] = found
        return found

    def customer(self, cus_id: str, *, param: str = "id", status: int = 404) -> Customer:
        found = self.customers.get(cus_id)
        if found is None:
            raise resource_missing("customer", cus_id, param=param, status=status)
        self.touched[found.id] = found
        return found

    def payment_method(self, pm_id: str) -> PaymentMethod:
        """A stored (attached or detached) payment method, by its path id."""
        found = self.payment_methods.get(pm_id)
        if found is None:
            raise resource_missing("PaymentMethod", pm_id)
        self.touched[found.id] = found
        return found

    def render(self, obj_id: str) -> dict[str, Any] | None:
        """The Stripe JSON of any object by id, or None."""
        obj = (
            self.payment_intents.get(obj_id)
            or self.charges.get(obj_id)
            or self.refunds.get(obj_id)
            or self.customers.get(obj_id)
            or self.payment_methods.get(obj_id)
            or self.disputes.get(obj_id)
            or self.bank_accounts.get(obj_id)
            or self.payouts.get(obj_id)
        )
        if obj is not None:
            return obj.to_stripe()
        if txn := self.balance_transactions.get(obj_id):
            return txn.to_stripe(self.now())
        if obj_id in cards.CARDS:
            return cards.payment_method_object(obj_id, self.timestamp())
        return None

    def retrieve(self, kind: Kind, obj_id: str) -> dict[str, Any]:
        found = self.render(obj_id) if obj_id.startswith(f"{kind}_") else None
        if found is None:
            raise resource_missing(_KINDS[kind], obj_id)
        return found

    def expand(self, obj: dict[str, Any], paths: list[str]) -> dict[str, Any]:
        """Replace id fields by their objects, as Stripe's ``expand[]`` does."""
        for path in paths:
            self._expand_path(obj, path.split("."), path)
        return obj

    def _expand_path(self, obj: dict[str, Any], parts: list[str], path: str) -> None:
        head, rest = parts[0], parts[1:]
        if head not in obj:
            raise invalid_request(f"This property cannot be expanded ({path}).", param="expand")
        value = obj[head]
        if isinstance(value, str):
            found = self.render(value)
            if found is None:
                raise invalid_request(f"This property cannot be expanded ({path}).")
            obj[head] = value = found
        if rest and isinstance(value, dict):
            self._expand_path(value, rest, path)

    # -- money movement --------------------------------------------------------------------

    def fee_for(self, amount: int) -> int:
        return min(amount, round(amount * self.fee_percent / 100) + self.fee_fixed)

    def add_balance_transaction(
        self,
        kind: Literal["charge", "refund", "adjustment", "payout"],
        source: str,
        amount: int,
        currency: str,
        fee: int | None = None,
    ) -> BalanceTransaction:
        created = self.timestamp()
        if fee is None:
            fee = self.fee_for(amount) if kind == "charge" else 0
        # Funds come in after the settlement delay; payouts and dispute adjustments move
        # available funds at once, as Stripe's do.
        immediate = kind in ("payout", "adjustment")
        available_on = created if immediate else created + math.ceil(self.settle_delay_seconds)
        txn = BalanceTransaction(
            new_id("txn"), kind, source, amount, fee, currency, created, available_on
        )
        self.put(txn)
        return txn

    def available(self, currency: str) -> int:
        now = self.now()
        return sum(
            t.net
            for t in self.balance_transactions.values()
            if t.currency == currency and t.is_available(now)
        )

    def balance(self) -> dict[str, Any]:
        now = self.now()
        sums: dict[str, dict[str, int]] = {}
        for txn in self.balance_transactions.values():
            bucket = "available" if txn.is_available(now) else "pending"
            per = sums.setdefault(txn.currency, {"available": 0, "pending": 0})
            per[bucket] += txn.net
        sums = sums or {"usd": {"available": 0, "pending": 0}}

        def entries(bucket: str) -> list[dict[str, Any]]:
            return [
                {"amount": v[bucket], "currency": c, "source_types": {"card": v[bucket]}}
                for c, v in sorted(sums.items())
            ]

        return {
            "object": "balance",
            "available": entries("available"),
            "pending": entries("pending"),
            "livemode": False,
        }

    def settle_due(self) -> list[str]:
        """Mark balance transactions whose ``available_on`` has passed; one event for all."""
        now = self.now()
        due = [
            t for t in self.balance_transactions.values() if not t.announced and t.is_available(now)
        ]
        for txn in due:
            txn.announced = True
            self.touched[txn.id] = txn
        if due:
            self.emit("balance.available", self.balance())
        return [t.id for t in due]
