"""The ledger API as one typed object: what other components may ask of the ledger.

``LedgerApi`` implements the ``LedgerClient`` protocol. In one process other components call it
directly (no HTTP); at scale the internal routes (``ledger.routes``) serve it over HTTP and
``HttpLedgerClient`` calls them: the same code, models and errors in both modes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.bus import Bus
from pocketpay.kit.clock import Clock
from pocketpay.kit.db import single_statements
from pocketpay.kit.errors import ValidationFailed
from pocketpay.kit.failpoints import failpoint
from pocketpay.kit.listing import Page, next_cursor
from pocketpay.kit.metrics import CONSUMER_LAG, CONSUMER_PENDING
from pocketpay.kit.money import MoneyError, decimal_string, normalize_currency
from pocketpay.kit.outbox import OutboxRelay
from pocketpay.kit.tracing import client_span
from pocketpay.ledger import conversions, history, service, wallet_transfers
from pocketpay.ledger import fx as fx_rates
from pocketpay.ledger.chart import (
    AccountCode,
    debt_of_wallet,
    is_user_account,
    parse_account_id,
    wallet_account_id,
)
from pocketpay.ledger.errors import AccountNotFound, InvalidTransfer
from pocketpay.ledger.schemas import (
    Backlog,
    Collection,
    CollectionIn,
    Conversion,
    ConversionList,
    Entry,
    EntryList,
    FxQuote,
    FxQuoteIn,
    FxRates,
    PayoutHeld,
    PayoutHoldIn,
    RefundHeld,
    RefundHoldIn,
    Transfer,
    TransferList,
    TransferListQuery,
    Wallet,
    WalletList,
    WalletTransferIn,
)
from pocketpay.settings import FxSettings

DURABLE = "ledger"  # the durable name of the ledger's event consumer


def _currency(code: str) -> str:
    try:
        return normalize_currency(code)
    except MoneyError as exc:
        raise InvalidTransfer(str(exc), code="validation.unknown_currency") from exc


def _invalid(exc: ValidationError) -> ValidationFailed:
    """The error the internal route answers for the same input (``validation.failed``)."""
    errors = [
        {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"], "type": e["type"]}
        for e in exc.errors()
    ]
    first = errors[0]
    return ValidationFailed(f"{first['field']}: {first['message']}", errors=errors)


class LedgerApi:
    def __init__(
        self, engine: AsyncEngine, clock: Clock, relay: OutboxRelay, bus: Bus, fx: FxSettings
    ) -> None:
        self._engine = engine
        self._fx = fx
        self._rates: fx_rates.RateSource = (
            fx_rates.FileRates(fx.rates_file) if fx.rates_file else fx_rates.StaticRates()
        )
        self._reads = single_statements(engine)  # reads: one round trip each on PostgreSQL
        self._clock = clock
        self._relay = relay
        self._bus = bus

    async def ping(self) -> float:
        return 0.0  # in this process: nothing between the caller and the ledger

    async def refund_hold(
        self, *, refund_id: str, payment_id: str, owner_id: str, amount_minor: int, currency: str
    ) -> RefundHeld:
        body = RefundHoldIn(
            refund_id=refund_id,
            payment_id=payment_id,
            owner_id=owner_id,
            amount_minor=amount_minor,
            currency=currency,
        )
        now = self._clock.now()
        with client_span("ledger POST /refund-holds"):
            async with service.unit(self._engine, now) as conn:
                await wallet_transfers.refund_hold(
                    conn,
                    body.refund_id,
                    body.payment_id,
                    body.owner_id,
                    body.amount_minor,
                    _currency(body.currency),
                    now,
                )
            self._relay.notify()
        return RefundHeld(status="held")

    async def payout_hold(
        self, *, payout_id: str, owner_id: str, amount_minor: int, currency: str
    ) -> PayoutHeld:
        """Hold a payout's amount in the owner's wallet (``payout_hold:<payout>``, pending to
        ``sys_psp_settled_<CUR>``): ``ledger.insufficient_funds`` (422) holds nothing; the
        same payout again answers ``held`` and writes nothing."""
        body = PayoutHoldIn(
            payout_id=payout_id, owner_id=owner_id, amount_minor=amount_minor, currency=currency
        )
        now = self._clock.now()
        with client_span("ledger POST /payout-holds"):
            async with service.unit(self._engine, now) as conn:
                await wallet_transfers.payout_hold(conn, body, _currency(body.currency), now)
            self._relay.notify()
        return PayoutHeld(status="held")

    async def send(self, body: dict[str, Any], request_id: str | None = None) -> Transfer:
        """A ``WalletTransferIn`` body: the transfer, once per (sender, idempotency_key)."""
        req = WalletTransferIn.model_validate(body)
        req = req.model_copy(update={"currency": _currency(req.currency)})
        with client_span("ledger POST /wallet-transfers"):
            now = self._clock.now()
            async with service.unit(self._engine, now) as conn:
                result = await wallet_transfers.send(conn, req, now)
            self._relay.notify()
            await failpoint("ledger.transfer.after_commit")
        return Transfer.model_validate(result)

    async def collect(
        self, *, owner_id: str, transfer_id: str, amount_minor: int, currency: str, reference: str
    ) -> Collection:
        """Take ``amount_minor`` from the owner's wallet into revenue (an invoice paid from
        the wallet), as one posted transfer with the caller's ``transfer_id``, plus the event
        ``ledger.collection.posted`` (the answer's data), in one transaction.

        - Refused with ``ledger.insufficient_funds`` (422) unless the wallet's available
          balance covers the amount at that instant (one guarded UPDATE: concurrent
          collections and transfers never overdraw); nothing is written.
        - Idempotent: the same ``transfer_id`` with the same values answers the original
          collection (its ``created_at``) and writes nothing; with another owner, amount,
          currency or reference, ``ledger.transfer_id_conflict`` (409). So after a timeout
          (an unknown outcome) the caller retries with the same id and converges.
        - ``validation.failed`` (422) for an amount not in 1..MAX_AMOUNT_MINOR, empty ids or
          reference; ``validation.unknown_currency`` (422) for an unknown currency.
        """
        try:
            body = CollectionIn(
                owner_id=owner_id,
                transfer_id=transfer_id,
                amount_minor=amount_minor,
                currency=currency,
                reference=reference,
            )
        except ValidationError as exc:
            raise _invalid(exc) from exc
        body = body.model_copy(update={"currency": _currency(body.currency)})
        with client_span("ledger POST /collections"):
            now = self._clock.now()
            async with service.unit(self._engine, now) as conn:
                result = await wallet_transfers.collect(conn, body, now)
            self._relay.notify()
        return Collection.model_validate(result)

    async def get_transfer(self, owner_id: str, transfer_id: str) -> Transfer:
        async with self._reads.connect() as conn:
            return Transfer.model_validate(await wallet_transfers.get(conn, owner_id, transfer_id))

    async def list_transfers(self, owner_id: str, query: TransferListQuery) -> TransferList:
        async with self._reads.connect() as conn:
            rows, more = await wallet_transfers.list_for(conn, owner_id, query)
        data = [Transfer.model_validate(t) for t in rows]
        cursor = next_cursor(query, [t.id for t in data], more)
        return TransferList(data=data, has_more=more, next_cursor=cursor)

    async def wallets(self, owner_id: str) -> WalletList:
        async with self._reads.connect() as conn:
            rows = await service.wallets_and_debts(conn, owner_id)
        return WalletList(data=[_wallet(b, debt) for b, debt in rows])

    async def entries(self, owner_id: str, currency: str, page: Page) -> EntryList:
        acct = wallet_account_id(owner_id, _currency(currency))
        return await self._entries(acct, page)

    async def account_entries(self, owner_id: str, account_id: str, page: Page) -> EntryList:
        """The entries of the owner's account ``account_id`` (a wallet or a debt account),
        newest first; another user's account or no account: ``not_found``."""
        _mine(owner_id, account_id)
        return await self._entries(account_id, page)

    async def _entries(self, acct: str, page: Page) -> EntryList:
        async with self._reads.connect() as conn:
            rows, more = await service.entries(conn, acct, page)
        data = [_entry(service.transfer_dict(r), acct) for r in rows]
        cursor = next_cursor(page, [str(e.seq) for e in data], more)
        return EntryList(data=data, has_more=more, next_cursor=cursor)

    async def backlog(self) -> Backlog:
        pending, age = await self._bus.lag(DURABLE)
        CONSUMER_LAG.labels(DURABLE).set(age)
        CONSUMER_PENDING.labels(DURABLE).set(pending)
        return Backlog(consumer=DURABLE, pending=pending, oldest_age_seconds=round(age, 3))

    # -- currency conversions (ledger.conversions) -------------------------------------------

    async def fx_rates(self) -> FxRates:
        rates = self._rates.current()
        return FxRates(
            base=fx_rates.BASE,
            as_of=rates.as_of,
            source=rates.source,
            rates={c: str(r) for c, r in sorted(rates.per_euro.items())},
        )

    async def create_fx_quote(self, owner_id: str, body: dict[str, Any]) -> FxQuote:
        """A price for converting between two of the owner's wallets (``FxQuoteIn``), valid
        for ``fx.quote_ttl_seconds``. ``fx.unsupported_currency``, ``fx.same_currency``,
        ``fx.amount_too_small`` (buys less than one minor unit), ``validation.failed``."""
        try:
            req = FxQuoteIn.model_validate(body)
        except ValidationError as exc:
            raise _invalid(exc) from exc
        req = req.model_copy(
            update={
                "sell_currency": _currency(req.sell_currency),
                "buy_currency": _currency(req.buy_currency),
            }
        )
        now = self._clock.now()
        rates = self._rates.current()
        async with self._engine.begin() as conn:
            view = await conversions.create_quote(
                conn, owner_id, req, rates, self._fx.fee_bps, self._fx.quote_ttl_seconds, now
            )
        return FxQuote.model_validate(view)

    async def get_fx_quote(self, owner_id: str, quote_id: str) -> FxQuote:
        async with self._reads.connect() as conn:
            row = await conversions.get_quote(conn, owner_id, quote_id)
        return FxQuote.model_validate(conversions.quote_view(row._mapping, self._clock.now()))

    async def convert(self, owner_id: str, quote_id: str) -> Conversion:
        """Execute the quote, at most once (``ledger.conversions``): ``fx.quote_expired``,
        ``fx.quote_already_converted`` (409), ``fx.quote_not_found`` (404),
        ``ledger.insufficient_funds`` (422; the quote stays open)."""
        now = self._clock.now()
        with client_span("ledger POST /conversions"):
            async with service.unit(self._engine, now) as conn:
                view = await conversions.convert(conn, owner_id, quote_id, now)
            self._relay.notify()
        return Conversion.model_validate(view)

    async def get_conversion(self, owner_id: str, conversion_id: str) -> Conversion:
        async with self._reads.connect() as conn:
            row = await conversions.get_conversion(conn, owner_id, conversion_id)
        return Conversion.model_validate(conversions.conversion_view(row))

    async def wallet_at(self, owner_id: str, account_id: str, at: datetime | None) -> Wallet:
        """The owner's account ``account_id`` (a wallet, with its debt; or a debt account) now,
        or as it was at ``at`` (its running balance after its last transfer by then: one
        index seek each, ``ledger.history``). Another user's account, or no account:
        ``not_found``."""
        currency = _mine(owner_id, account_id)
        code, _, _ = parse_account_id(account_id)
        debt_id = debt_of_wallet(account_id) if code == AccountCode.WALLET else account_id
        async with self._reads.connect() as conn:
            if at is None:
                found = await service.balances_of(conn, list({account_id, debt_id}))
                zero = service.Balance(account_id, currency, 0, 0, 0, 0)
                b, debt = found.get(account_id, zero), found.get(debt_id)
            else:
                counters = await history.balance_at(conn, account_id, at) or history.ZERO
                b = service.Balance(account_id, currency, *counters)
                owed = await history.balance_at(conn, debt_id, at)
                debt = None if owed is None else service.Balance(debt_id, currency, *owed)
        return _wallet(b, debt)

    async def open_wallet(self, owner_id: str, currency: str) -> Wallet:
        """The owner's wallet in ``currency``, made now if it does not exist (idempotent)."""
        account_id = wallet_account_id(owner_id, _currency(currency))
        now = self._clock.now()
        async with self._engine.begin() as conn:
            await service.ensure_account(conn, account_id, now)
            found = await service.balances_of(conn, [account_id, debt_of_wallet(account_id)])
        return _wallet(found[account_id], found.get(debt_of_wallet(account_id)))

    async def list_conversions(self, owner_id: str, page: Page) -> ConversionList:
        async with self._reads.connect() as conn:
            rows, more = await conversions.list_conversions(conn, owner_id, page)
        data = [Conversion.model_validate(conversions.conversion_view(r)) for r in rows]
        cursor = next_cursor(page, [c.id for c in data], more)
        return ConversionList(data=data, has_more=more, next_cursor=cursor)


def _mine(owner_id: str, account_id: str) -> str:
    """The currency of ``account_id`` if it is a wallet or a debt account of ``owner_id``;
    else not found."""
    try:
        code, owner, currency = parse_account_id(account_id)
    except ValueError:
        owner, currency = None, ""
    if owner != owner_id or not is_user_account(code):
        raise AccountNotFound(f"No account {account_id[:120]} of yours.", code="not_found")
    return currency


def _wallet(b: service.Balance, debt: service.Balance | None = None) -> Wallet:
    """A wallet with its debt account's debt, or a debt account (itself its debt)."""
    code, _, _ = parse_account_id(b.account_id)
    return Wallet(
        account_id=b.account_id,
        account_type="debt" if code == AccountCode.DEBT else "wallet",
        currency=b.currency,
        available_minor=b.available_minor,
        pending_minor=b.pending_minor,
        posted_minor=b.posted_minor,
        debits_pending=b.debits_pending,
        debits_posted=b.debits_posted,
        credits_pending=b.credits_pending,
        credits_posted=b.credits_posted,
        debt_minor=0 if debt is None else debt.debits_posted - debt.credits_posted,
        debt_account_id=None if debt is None else debt.account_id,
    )


def _entry(t: dict[str, Any], account_id: str) -> Entry:
    credit = t["credit_account_id"] == account_id
    return Entry(
        id=t["id"],
        seq=t["seq"],
        code=t["code"],
        kind=t["kind"],
        direction="credit" if credit else "debit",
        amount_minor=t["amount_minor"],
        amount=decimal_string(t["amount_minor"], t["currency"]),
        currency=t["currency"],
        pending_state=t["pending_state"],
        created_at=t["created_at"],
        payment_id=t["user_data"].get("payment_id"),
        note=t["user_data"].get("note"),
    )
