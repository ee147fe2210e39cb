"""Currency conversions between a user's wallets: quotes, then at most one conversion each.

A quote (``fxq_...``) fixes a price (``fx.price``) for ``quote_ttl_seconds``. Converting it is
one transaction (TigerBeetle's currency-exchange recipe, with the database transaction as the
link between the transfers):

1. claim the quote: ``UPDATE ... SET conversion_id WHERE id AND owner AND conversion_id IS
   NULL AND expires_at > now`` (one row or none: of two concurrent conversions of one quote,
   exactly one claims it; the other finds it taken);
2. ``FX_SELL`` wallet(sell) -> ``sys_fx_liquidity_<sell>`` for the converted amount, guarded
   (``ledger.insufficient_funds`` rolls everything back, the quote stays open);
3. ``FX_FEE`` wallet(sell) -> ``sys_fx_fees_<sell>`` for the fee, if any, guarded;
4. ``FX_BUY`` ``sys_fx_liquidity_<buy>`` -> wallet(buy) for the bought amount;
5. the event ``ledger.conversion.posted`` (and ``ledger.wallet.updated`` for both wallets).

Transfer ids derive from the conversion id, itself derived from the quote id, so nothing can
post twice. There is no crash window: the five steps commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pocketpay.kit.clock import aware
from pocketpay.kit.errors import AppError, ValidationFailed
from pocketpay.kit.ids import new_id
from pocketpay.kit.listing import Page, fetch_page
from pocketpay.kit.outbox import add_event
from pocketpay.ledger import fx, service
from pocketpay.ledger.chart import TransferCode, system_account_id, wallet_account_id
from pocketpay.ledger.models import fx_quotes, outbox
from pocketpay.ledger.schemas import FxQuoteIn


class QuoteNotFound(AppError):
    code = "not_found"
    status = 404
    title = "Quote not found"


class QuoteExpired(AppError):
    code = "fx.quote_expired"
    status = 409
    title = "Quote expired"


class QuoteConverted(AppError):
    code = "fx.quote_already_converted"
    status = 409
    title = "Quote already converted"


class ConversionNotFound(AppError):
    code = "not_found"
    status = 404
    title = "Conversion not found"


def conversion_id_for(quote_id: str) -> str:
    return "cnv_" + quote_id.removeprefix("fxq_")


async def create_quote(
    conn: AsyncConnection,
    owner_id: str,
    body: FxQuoteIn,
    rates: fx.Rates,
    fee_bps: int,
    ttl_seconds: float,
    now: datetime,
) -> dict[str, Any]:
    if (body.sell_amount_minor is None) == (body.buy_amount_minor is None):
        raise ValidationFailed("Send exactly one of sell_amount_minor and buy_amount_minor.")
    sell, buy = body.sell_currency, body.buy_currency
    rate = rates.rate(sell, buy)
    priced = fx.price(
        sell,
        buy,
        rate,
        fee_bps,
        sell_amount_minor=body.sell_amount_minor,
        buy_amount_minor=body.buy_amount_minor,
    )
    values = {
        "id": new_id("fxq"),
        "owner_id": owner_id,
        "sell_currency": sell,
        "buy_currency": buy,
        "sell_amount_minor": priced.sell_amount_minor,
        "buy_amount_minor": priced.buy_amount_minor,
        "converted_minor": priced.converted_minor,
        "fee_minor": priced.fee_minor,
        "rate": str(rate),
        "rate_source": f"{rates.source} ({rates.as_of})"[:200],
        "created_at": now,
        "expires_at": now + timedelta(seconds=ttl_seconds),
        "conversion_id": None,
        "converted_at": None,
    }
    await conn.execute(fx_quotes.insert().values(**values))
    return quote_view(values, now)


def quote_view(q: Mapping[Any, Any], now: datetime) -> dict[str, Any]:
    expires_at = aware(q["expires_at"])
    status = "converted" if q["conversion_id"] else "open" if expires_at > now else "expired"
    return {
        **{k: q[k] for k in _QUOTE_FIELDS},
        "status": status,
        "created_at": aware(q["created_at"]).isoformat(),
        "expires_at": expires_at.isoformat(),
    }


_QUOTE_FIELDS = (
    "id",
    "sell_currency",
    "buy_currency",
    "sell_amount_minor",
    "buy_amount_minor",
    "fee_minor",
    "rate",
    "rate_source",
    "conversion_id",
)


def conversion_view(q: Row[Any]) -> dict[str, Any]:
    return {
        "id": q.conversion_id,
        "quote_id": q.id,
        "sell_currency": q.sell_currency,
        "buy_currency": q.buy_currency,
        "sell_amount_minor": q.sell_amount_minor,
        "buy_amount_minor": q.buy_amount_minor,
        "fee_minor": q.fee_minor,
        "rate": q.rate,
        "created_at": aware(q.converted_at).isoformat(),
    }


async def get_quote(conn: AsyncConnection, owner_id: str, quote_id: str) -> Row[Any]:
    row = (
        await conn.execute(
            select(fx_quotes).where(fx_quotes.c.id == quote_id, fx_quotes.c.owner_id == owner_id)
        )
    ).first()
    if row is None:
        raise QuoteNotFound(f"No quote {quote_id} of yours: create one with POST /fx/quotes.")
    return row


async def convert(
    conn: AsyncConnection, owner_id: str, quote_id: str, now: datetime
) -> dict[str, Any]:
    """Execute the quote (see the module doc); raises if it is unknown, expired or taken."""
    cid = conversion_id_for(quote_id)
    q = fx_quotes.c
    claimed = await conn.execute(
        update(fx_quotes)
        .where(
            q.id == quote_id,
            q.owner_id == owner_id,
            q.conversion_id.is_(None),
            q.expires_at > now,
        )
        .values(conversion_id=cid, converted_at=now)
    )
    row = await get_quote(conn, owner_id, quote_id)
    if claimed.rowcount != 1:
        if row.conversion_id is not None:
            raise QuoteConverted(
                f"Quote {quote_id} was converted already ({row.conversion_id}); create a new "
                "quote to convert again."
            )
        raise QuoteExpired(f"Quote {quote_id} expired at {aware(row.expires_at).isoformat()}.")
    await _post(conn, owner_id, row, cid, now)
    view = conversion_view(row)
    await add_event(conn, outbox, "ledger.conversion.posted", view | {"owner_id": owner_id}, now)
    return view


async def _post(conn: AsyncConnection, owner: str, q: Row[Any], cid: str, now: datetime) -> None:
    sell, buy = q.sell_currency, q.buy_currency
    legs = [
        (TransferCode.FX_SELL, wallet_account_id(owner, sell), "fx_liquidity", q.converted_minor),
        (TransferCode.FX_FEE, wallet_account_id(owner, sell), "fx_fees", q.fee_minor),
    ]
    for code, debit, system, amount in legs:
        if amount > 0:
            await service.create_transfer(
                conn,
                service.TransferRequest(
                    id=f"{cid}_{code.name.lower()}",
                    debit_account_id=debit,
                    credit_account_id=system_account_id(system, sell),
                    amount_minor=amount,
                    currency=sell,
                    code=code,
                    user_data={"conversion_id": cid},
                ),
                now,
            )
    await service.create_transfer(
        conn,
        service.TransferRequest(
            id=f"{cid}_fx_buy",
            debit_account_id=system_account_id("fx_liquidity", buy),
            credit_account_id=wallet_account_id(owner, buy),
            amount_minor=q.buy_amount_minor,
            currency=buy,
            code=TransferCode.FX_BUY,
            user_data={"conversion_id": cid, "rate": q.rate},
        ),
        now,
    )
    assert Decimal(q.buy_amount_minor) <= q.converted_minor * fx.minor_rate(
        Decimal(q.rate), sell, buy
    ), "a conversion never gives more than its rate"


async def get_conversion(conn: AsyncConnection, owner_id: str, conversion_id: str) -> Row[Any]:
    row = (
        await conn.execute(
            select(fx_quotes).where(
                fx_quotes.c.conversion_id == conversion_id, fx_quotes.c.owner_id == owner_id
            )
        )
    ).first()
    if row is None:
        raise ConversionNotFound(f"No conversion {conversion_id} of yours.")
    return row


async def list_conversions(
    conn: AsyncConnection, owner_id: str, page: Page
) -> tuple[list[Row[Any]], bool]:
    q = fx_quotes.c
    scope = select(fx_quotes).where(q.owner_id == owner_id, q.conversion_id.is_not(None))
    return await fetch_page(
        conn,
        scope,
        [],
        [q.converted_at, q.id],
        q.conversion_id,
        q.converted_at,
        page,
        "conversion",
    )
