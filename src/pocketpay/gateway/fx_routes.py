"""The public FX API: reference rates, quotes, and conversions between a user's wallets.
Thin, like ``routes``: authenticate, validate, apply idempotency, call ``LedgerClient``
(``ledger/conversions.py`` holds the rules)."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from pocketpay.gateway.problems import AUTH, BODY, IDEMPOTENT, LIST, problems
from pocketpay.gateway.route_kit import RouteKit
from pocketpay.kit.listing import Page
from pocketpay.kit.tokens import Principal
from pocketpay.ledger.schemas import Conversion, ConversionList, FxQuote, FxQuoteIn, FxRates


class ConversionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quote_id: str = Field(min_length=1, max_length=40, description="An open quote of yours.")


_QUOTE_ERRORS = (
    "validation.unknown_currency",
    "fx.unsupported_currency",
    "fx.same_currency",
    "fx.amount_too_small",
    "fx.amount_too_large",
)
_CONVERT_ERRORS = (
    "not_found",
    "fx.quote_expired",
    "fx.quote_already_converted",
    "ledger.insufficient_funds",
)


def fx_routes(kit: RouteKit) -> None:
    r, gw, principal, once, idem_header = kit.r, kit.gw, kit.principal, kit.once, kit.idem_header
    page_of, object_id = kit.page_of, kit.object_id
    conversion_page = page_of("cnv", "conversion")

    @r.get("/fx/rates", tags=["fx"], responses=problems(*AUTH, "fx.rates_unavailable"))
    async def fx_rates(_who: Principal = Depends(principal)) -> FxRates:
        """The reference rates quotes are priced from (units per euro) and where they come
        from."""
        rates: FxRates = await gw.ledger.fx_rates()
        return rates

    @r.post(
        "/fx/quotes",
        status_code=201,
        response_model=FxQuote,
        tags=["fx"],
        responses=problems(*AUTH, *BODY, *IDEMPOTENT, *_QUOTE_ERRORS),
    )
    async def create_fx_quote(
        request: Request,
        body: FxQuoteIn,
        who: Principal = Depends(principal),
        key: str | None = idem_header,
    ) -> JSONResponse:
        """Price a conversion between two of your wallets: send `sell_amount_minor` (what you
        give) or `buy_amount_minor` (what you get). The fee is in the sell currency and holds
        the rounding remainder; you never get more than the rate gives. Valid until
        `expires_at`; convert it with `POST /conversions`."""
        data = body.model_dump(mode="json", exclude_none=True)
        return await once(
            request, who, key, data, lambda _k: gw.ledger.create_fx_quote(who.user_id, data), 201
        )

    @r.get("/fx/quotes/{quote_id}", tags=["fx"], responses=problems(*AUTH, "not_found"))
    async def get_fx_quote(quote_id: str, who: Principal = Depends(principal)) -> FxQuote:
        quote: FxQuote = await gw.ledger.get_fx_quote(who.user_id, object_id(quote_id, "quote"))
        return quote

    @r.post(
        "/conversions",
        status_code=201,
        response_model=Conversion,
        tags=["fx"],
        responses=problems(*AUTH, *BODY, *IDEMPOTENT, *_CONVERT_ERRORS),
    )
    async def create_conversion(
        request: Request,
        body: ConversionCreate,
        who: Principal = Depends(principal),
        key: str | None = idem_header,
    ) -> JSONResponse:
        """Execute a quote: its sell amount leaves one wallet and its buy amount reaches the
        other, in one transaction, at most once per quote."""
        data = body.model_dump(mode="json")
        quote_id = object_id(body.quote_id, "quote")
        return await once(
            request, who, key, data, lambda _k: gw.ledger.convert(who.user_id, quote_id), 201
        )

    @r.get("/conversions", tags=["fx"], responses=problems(*AUTH, *LIST))
    async def list_conversions(
        who: Principal = Depends(principal), page: Page = Depends(conversion_page)
    ) -> ConversionList:
        """Your conversions, newest first."""
        listed: ConversionList = await gw.ledger.list_conversions(who.user_id, page)
        return listed

    @r.get("/conversions/{conversion_id}", tags=["fx"], responses=problems(*AUTH, "not_found"))
    async def get_conversion(conversion_id: str, who: Principal = Depends(principal)) -> Conversion:
        cid = object_id(conversion_id, "conversion")
        conversion: Conversion = await gw.ledger.get_conversion(who.user_id, cid)
        return conversion
