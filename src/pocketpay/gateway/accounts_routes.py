"""The accounts API (the Go Payments API seed's shape): a user's ledger accounts by id, their
balance now or at any past time, and their transactions. Amounts come as integer minor units
and as exact decimal strings in major units. Thin: ``LedgerClient`` does the work."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from pocketpay.gateway.problems import AUTH, BODY, IDEMPOTENT, LIST, problems
from pocketpay.gateway.route_kit import RouteKit
from pocketpay.kit.listing import Page
from pocketpay.kit.money import decimal_string
from pocketpay.kit.tokens import Principal
from pocketpay.ledger.schemas import EntryList, Wallet


class Account(BaseModel):
    id: str = Field(
        description="The ledger account's id (a wallet: wal_<user>_<CUR>; a debt account: "
        "debt_<user>_<CUR>)."
    )
    object: Literal["account"] = "account"
    type: Literal["wallet", "debt"] = Field(
        default="wallet",
        description="wallet: your money; debt: what you owe (a disputed payment your wallet "
        "could no longer cover), shown negative and repaid first by your next credits.",
    )
    currency: str
    available_minor: int
    pending_minor: int
    posted_minor: int
    available: str = Field(description="available_minor in major units, exactly.")
    pending: str
    posted: str


class AccountList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Account]


class AccountBalance(BaseModel):
    object: Literal["balance"] = "balance"
    account_id: str
    currency: str
    at: str | None = Field(description="The time asked for; null: now.")
    available_minor: int
    pending_minor: int
    posted_minor: int
    available: str
    pending: str
    posted: str


class AccountOpen(BaseModel):
    model_config = ConfigDict(extra="forbid")

    currency: str = Field(min_length=3, max_length=3, description="ISO 4217, e.g. EUR.")


def _figures(w: Wallet) -> dict[str, Any]:
    cur = w.currency
    return {
        "currency": cur,
        "available_minor": w.available_minor,
        "pending_minor": w.pending_minor,
        "posted_minor": w.posted_minor,
        "available": decimal_string(w.available_minor, cur),
        "pending": decimal_string(w.pending_minor, cur),
        "posted": decimal_string(w.posted_minor, cur),
    }


def account_view(w: Wallet) -> Account:
    return Account(id=w.account_id, type=w.account_type, **_figures(w))


def debt_view(w: Wallet) -> Account | None:
    """The wallet's debt account, if its owner ever owed: a debt is posted only (nothing
    pending), so its figures are the wallet's ``debt_minor``, negative."""
    if w.debt_account_id is None:
        return None
    owed = -w.debt_minor
    cur = w.currency
    return Account(
        id=w.debt_account_id,
        type="debt",
        currency=cur,
        available_minor=owed,
        pending_minor=0,
        posted_minor=owed,
        available=decimal_string(owed, cur),
        pending=decimal_string(0, cur),
        posted=decimal_string(owed, cur),
    )


def accounts_routes(kit: RouteKit, entry_page: Any) -> None:
    r, gw, principal, once, idem_header = kit.r, kit.gw, kit.principal, kit.once, kit.idem_header
    object_id = kit.object_id

    @r.get("/accounts", tags=["accounts"], responses=problems(*AUTH))
    async def list_accounts(who: Principal = Depends(principal)) -> AccountList:
        """Your ledger accounts: a wallet per currency you hold, each followed by its debt
        account if you ever owed in that currency."""
        wallets = await gw.ledger.wallets(who.user_id)
        views = [(account_view(w), debt_view(w)) for w in wallets.data]
        return AccountList(data=[a for pair in views for a in pair if a is not None])

    @r.post(
        "/accounts",
        status_code=201,
        response_model=Account,
        tags=["accounts"],
        responses=problems(*AUTH, *BODY, *IDEMPOTENT, "validation.unknown_currency"),
    )
    async def open_account(
        request: Request,
        body: AccountOpen,
        who: Principal = Depends(principal),
        key: str | None = idem_header,
    ) -> JSONResponse:
        """Open your wallet in a currency (it also opens by itself on its first credit).
        Opening one you have answers it as it is."""

        async def run(_key: str) -> Account:
            return account_view(await gw.ledger.open_wallet(who.user_id, body.currency))

        return await once(request, who, key, body.model_dump(mode="json"), run, 201)

    @r.get("/accounts/{account_id}", tags=["accounts"], responses=problems(*AUTH, "not_found"))
    async def get_account(account_id: str, who: Principal = Depends(principal)) -> Account:
        aid = object_id(account_id, "account")
        return account_view(await gw.ledger.wallet_at(who.user_id, aid, None))

    @r.get(
        "/accounts/{account_id}/balance",
        tags=["accounts"],
        responses=problems(*AUTH, "not_found", "validation.failed"),
    )
    async def account_balance(
        account_id: str,
        who: Principal = Depends(principal),
        at: AwareDatetime | None = Query(
            None, description="An ISO time with offset: the balance as it was then."
        ),
    ) -> AccountBalance:
        """The balance now, or at any past time (constant time, whatever the history)."""
        aid = object_id(account_id, "account")
        w = await gw.ledger.wallet_at(who.user_id, aid, at)
        when = at.isoformat() if isinstance(at, datetime) else None
        return AccountBalance(account_id=aid, at=when, **_figures(w))

    @r.get(
        "/accounts/{account_id}/transactions",
        tags=["accounts"],
        responses=problems(*AUTH, *LIST, "not_found"),
    )
    async def account_transactions(
        account_id: str, who: Principal = Depends(principal), page: Page = Depends(entry_page)
    ) -> EntryList:
        """The account's entries, newest first (cursors: an entry's seq)."""
        aid = object_id(account_id, "account")
        entries: EntryList = await gw.ledger.account_entries(who.user_id, aid, page)
        return entries
