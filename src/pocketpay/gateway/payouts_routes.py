"""The public payouts API: money from your wallet to a bank account. Thin, like ``routes``:
authenticate, validate, apply idempotency, call ``PaymentsClient`` (``payments/flows/payouts.py``
holds the saga)."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from pocketpay.gateway.problems import AUTH, BODY, IDEMPOTENT, LIST, problems
from pocketpay.gateway.route_kit import RouteKit
from pocketpay.kit.listing import Page
from pocketpay.kit.tokens import Principal
from pocketpay.payments.schemas import Payout, PayoutCreate, PayoutList


class PayoutCancel(BaseModel):
    model_config = ConfigDict(extra="forbid")


_CREATE_ERRORS = (
    "validation.unknown_currency",
    "payouts.invalid_destination",
    "ledger.insufficient_funds",
    "payments.provider_unavailable",
)
_CANCEL_ERRORS = ("not_found", "payouts.not_cancelable", "payments.provider_unavailable")


def payouts_routes(kit: RouteKit) -> None:
    r, gw, principal, once, idem_header = kit.r, kit.gw, kit.principal, kit.once, kit.idem_header
    page_of, object_id = kit.page_of, kit.object_id
    payout_page = page_of("po", "payout")

    @r.post(
        "/payouts",
        status_code=202,
        response_model=Payout,
        tags=["payouts"],
        responses=problems(*AUTH, *BODY, *IDEMPOTENT, *_CREATE_ERRORS),
    )
    async def create_payout(
        request: Request,
        body: PayoutCreate,
        who: Principal = Depends(principal),
        key: str | None = idem_header,
    ) -> JSONResponse:
        """Send money from your wallet to a bank account. The amount is held in your wallet at
        once (`ledger.insufficient_funds` if it is not there) and leaves it when the payout is
        `paid`; a `failed` or `canceled` payout gives it back. Statuses: `pending` →
        `in_transit` → `paid` | `failed`, or `canceled` while pending."""
        data = body.model_dump(mode="json")
        return await once(
            request,
            who,
            key,
            data,
            lambda k: gw.payments.create_payout(who.user_id, k, data),
            202,
        )

    @r.get("/payouts", tags=["payouts"], responses=problems(*AUTH, *LIST))
    async def list_payouts(
        who: Principal = Depends(principal), page: Page = Depends(payout_page)
    ) -> PayoutList:
        """Your payouts, newest first."""
        listed: PayoutList = await gw.payments.list_payouts(who.user_id, page)
        return listed

    @r.get("/payouts/{payout_id}", tags=["payouts"], responses=problems(*AUTH, "not_found"))
    async def get_payout(payout_id: str, who: Principal = Depends(principal)) -> Payout:
        found: Payout = await gw.payments.get_payout(who.user_id, object_id(payout_id, "payout"))
        return found

    @r.post(
        "/payouts/{payout_id}/cancel",
        response_model=Payout,
        tags=["payouts"],
        responses=problems(*AUTH, *BODY, *IDEMPOTENT, *_CANCEL_ERRORS),
    )
    async def cancel_payout(
        request: Request,
        payout_id: str,
        body: PayoutCancel | None = None,
        who: Principal = Depends(principal),
        key: str | None = idem_header,
    ) -> JSONResponse:
        """Cancel a `pending` payout: the money goes back to your wallet."""
        pid = object_id(payout_id, "payout")
        return await once(
            request, who, key, {}, lambda _k: gw.payments.cancel_payout(who.user_id, pid), 200
        )
