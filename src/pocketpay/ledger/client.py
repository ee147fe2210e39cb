"""What other components may ask of the ledger: the ``LedgerClient`` protocol, answered with
``ledger.schemas`` models. Two implementations: ``ledger.api.LedgerApi`` itself when the ledger
runs in the caller's process (direct calls), and ``HttpLedgerClient`` when it runs elsewhere
(the internal API over HTTP). Errors are the same ``AppError`` codes either way."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from pocketpay.kit.client import InternalClient
from pocketpay.kit.listing import Page
from pocketpay.ledger.schemas import (
    Backlog,
    Collection,
    Conversion,
    ConversionList,
    EntryList,
    FxQuote,
    FxRates,
    PayoutHeld,
    RefundHeld,
    Transfer,
    TransferList,
    TransferListQuery,
    Wallet,
    WalletList,
)


class LedgerClient(Protocol):
    async def ping(self) -> float: ...

    async def refund_hold(
        self, *, refund_id: str, payment_id: str, owner_id: str, amount_minor: int, currency: str
    ) -> RefundHeld: ...

    async def payout_hold(
        self, *, payout_id: str, owner_id: str, amount_minor: int, currency: str
    ) -> PayoutHeld:
        """Hold a payout's amount in the wallet; see ``LedgerApi.payout_hold``."""
        ...

    async def send(self, body: dict[str, Any], request_id: str | None = None) -> Transfer: ...

    async def collect(
        self, *, owner_id: str, transfer_id: str, amount_minor: int, currency: str, reference: str
    ) -> Collection:
        """Take ``amount_minor`` from the owner's wallet into revenue as the posted transfer
        ``transfer_id`` (billing: ``inv_pay:<charge>``). Refused (nothing written)
        with ``ledger.insufficient_funds`` when the available balance does not cover it; the
        same id again answers the original, or ``ledger.transfer_id_conflict`` if any value
        differs. See ``LedgerApi.collect``."""
        ...

    async def get_transfer(self, owner_id: str, transfer_id: str) -> Transfer: ...

    async def list_transfers(self, owner_id: str, query: TransferListQuery) -> TransferList: ...

    async def wallets(self, owner_id: str) -> WalletList: ...

    async def entries(self, owner_id: str, currency: str, page: Page) -> EntryList: ...

    async def account_entries(self, owner_id: str, account_id: str, page: Page) -> EntryList:
        """The entries of the owner's wallet or debt account; see ``LedgerApi.account_entries``."""
        ...

    async def backlog(self) -> Backlog: ...

    async def fx_rates(self) -> FxRates: ...

    async def create_fx_quote(self, owner_id: str, body: dict[str, Any]) -> FxQuote: ...

    async def get_fx_quote(self, owner_id: str, quote_id: str) -> FxQuote: ...

    async def convert(self, owner_id: str, quote_id: str) -> Conversion:
        """Execute a quote at most once; see ``LedgerApi.convert``."""
        ...

    async def get_conversion(self, owner_id: str, conversion_id: str) -> Conversion: ...

    async def list_conversions(self, owner_id: str, page: Page) -> ConversionList: ...

    async def wallet_at(self, owner_id: str, account_id: str, at: datetime | None) -> Wallet:
        """The owner's wallet now, or as it was at ``at``; see ``LedgerApi.wallet_at``."""
        ...

    async def open_wallet(self, owner_id: str, currency: str) -> Wallet: ...


class HttpLedgerClient:
    """``LedgerClient`` over the ledger's internal API (scale mode)."""

    def __init__(self, http: InternalClient) -> None:
        self.http = http

    async def ping(self) -> float:
        return await self.http.ping()

    async def _req(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.http.request(method, path, **kw)
        return result

    async def refund_hold(
        self, *, refund_id: str, payment_id: str, owner_id: str, amount_minor: int, currency: str
    ) -> RefundHeld:
        body = await self._req(
            "POST",
            "/refund-holds",
            json={
                "refund_id": refund_id,
                "payment_id": payment_id,
                "owner_id": owner_id,
                "amount_minor": amount_minor,
                "currency": currency,
            },
        )
        return RefundHeld.model_validate(body)

    async def payout_hold(
        self, *, payout_id: str, owner_id: str, amount_minor: int, currency: str
    ) -> PayoutHeld:
        body = await self._req(
            "POST",
            "/payout-holds",
            json={
                "payout_id": payout_id,
                "owner_id": owner_id,
                "amount_minor": amount_minor,
                "currency": currency,
            },
        )
        return PayoutHeld.model_validate(body)

    async def send(self, body: dict[str, Any], request_id: str | None = None) -> Transfer:
        """A ``WalletTransferIn`` body: the transfer, once per (sender, idempotency_key)."""
        answer = await self._req("POST", "/wallet-transfers", json=body, request_id=request_id)
        return Transfer.model_validate(answer)

    async def collect(
        self, *, owner_id: str, transfer_id: str, amount_minor: int, currency: str, reference: str
    ) -> Collection:
        """``POST /collections``. Not retried here: after a timeout (``ledger.unavailable``,
        an unknown outcome) the caller retries with the same ``transfer_id``."""
        body = await self._req(
            "POST",
            "/collections",
            json={
                "owner_id": owner_id,
                "transfer_id": transfer_id,
                "amount_minor": amount_minor,
                "currency": currency,
                "reference": reference,
            },
        )
        return Collection.model_validate(body)

    async def get_transfer(self, owner_id: str, transfer_id: str) -> Transfer:
        path = f"/wallet-transfers/{transfer_id}"
        return Transfer.model_validate(await self._req("GET", path, params={"owner_id": owner_id}))

    async def list_transfers(self, owner_id: str, query: TransferListQuery) -> TransferList:
        params = query.model_dump(exclude_none=True) | {"owner_id": owner_id}
        answer = await self._req("GET", "/wallet-transfers", params=params)
        return TransferList.model_validate(answer)

    async def wallets(self, owner_id: str) -> WalletList:
        answer = await self._req("GET", "/wallets", params={"owner_id": owner_id})
        return WalletList.model_validate(answer)

    async def entries(self, owner_id: str, currency: str, page: Page) -> EntryList:
        params = page.model_dump(exclude_none=True) | {"owner_id": owner_id}
        answer = await self._req("GET", f"/wallets/{currency}/entries", params=params)
        return EntryList.model_validate(answer)

    async def account_entries(self, owner_id: str, account_id: str, page: Page) -> EntryList:
        params = page.model_dump(exclude_none=True) | {"owner_id": owner_id}
        answer = await self._req("GET", f"/accounts/{account_id}/entries", params=params)
        return EntryList.model_validate(answer)

    async def backlog(self) -> Backlog:
        return Backlog.model_validate(await self._req("GET", "/health/backlog"))

    async def fx_rates(self) -> FxRates:
        return FxRates.model_validate(await self._req("GET", "/fx/rates"))

    async def create_fx_quote(self, owner_id: str, body: dict[str, Any]) -> FxQuote:
        answer = await self._req("POST", "/fx/quotes", params={"owner_id": owner_id}, json=body)
        return FxQuote.model_validate(answer)

    async def get_fx_quote(self, owner_id: str, quote_id: str) -> FxQuote:
        answer = await self._req("GET", f"/fx/quotes/{quote_id}", params={"owner_id": owner_id})
        return FxQuote.model_validate(answer)

    async def convert(self, owner_id: str, quote_id: str) -> Conversion:
        """Not retried here: after a timeout the caller converts the same quote again, which
        answers ``fx.quote_already_converted`` if the first attempt went through."""
        answer = await self._req(
            "POST", "/conversions", json={"owner_id": owner_id, "quote_id": quote_id}
        )
        return Conversion.model_validate(answer)

    async def get_conversion(self, owner_id: str, conversion_id: str) -> Conversion:
        path = f"/conversions/{conversion_id}"
        answer = await self._req("GET", path, params={"owner_id": owner_id})
        return Conversion.model_validate(answer)

    async def list_conversions(self, owner_id: str, page: Page) -> ConversionList:
        params = page.model_dump(exclude_none=True) | {"owner_id": owner_id}
        answer = await self._req("GET", "/conversions", params=params)
        return ConversionList.model_validate(answer)

    async def wallet_at(self, owner_id: str, account_id: str, at: datetime | None) -> Wallet:
        params = {"owner_id": owner_id} | ({"at": at.isoformat()} if at else {})
        answer = await self._req("GET", f"/accounts/{account_id}/balance", params=params)
        return Wallet.model_validate(answer)

    async def open_wallet(self, owner_id: str, currency: str) -> Wallet:
        body = {"owner_id": owner_id, "currency": currency}
        return Wallet.model_validate(await self._req("POST", "/accounts", json=body))
