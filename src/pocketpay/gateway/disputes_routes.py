"""The public disputes API: chargebacks opened on your payments, and your evidence. Thin, like
``routes``: authenticate, validate, apply idempotency, call ``PaymentsClient``
(``payments/flows/disputes.py`` holds the flow)."""

from __future__ import annotations

from enum import Enum

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from pocketpay.gateway.problems import AUTH, BODY, IDEMPOTENT, LIST, problems
from pocketpay.gateway.route_kit import RouteKit
from pocketpay.kit.listing import Page
from pocketpay.kit.tokens import Principal
from pocketpay.payments.schemas import Dispute, DisputeEvidence, DisputeList

TAGS: list[str | Enum] = ["disputes"]


class DisputeClose(BaseModel):
    model_config = ConfigDict(extra="forbid")


_EVIDENCE_ERRORS = ("not_found", "disputes.not_open", "payments.provider_unavailable")


def disputes_routes(kit: RouteKit) -> None:
    r, gw, principal, once, idem_header = kit.r, kit.gw, kit.principal, kit.once, kit.idem_header
    page_of, object_id = kit.page_of, kit.object_id
    dispute_page = page_of("dp", "dispute")

    @r.get("/disputes", tags=TAGS, responses=problems(*AUTH, *LIST))
    async def list_disputes(
        who: Principal = Depends(principal), page: Page = Depends(dispute_page)
    ) -> DisputeList:
        """Disputes (chargebacks) opened on your payments, newest first. While one is open its
        amount is held from your wallet (what you had already spent becomes a debt, repaid by
        your next credits); won, it comes back; lost, it is gone."""
        listed: DisputeList = await gw.payments.list_disputes(who.user_id, None, page)
        return listed

    @r.get(
        "/payments/{payment_id}/disputes",
        tags=["payments", "disputes"],
        responses=problems(*AUTH, *LIST, "not_found"),
    )
    async def list_payment_disputes(
        payment_id: str, who: Principal = Depends(principal), page: Page = Depends(dispute_page)
    ) -> DisputeList:
        """The payment's disputes, newest first."""
        pid = object_id(payment_id, "payment")
        listed: DisputeList = await gw.payments.list_disputes(who.user_id, pid, page)
        return listed

    @r.get("/disputes/{dispute_id}", tags=TAGS, responses=problems(*AUTH, "not_found"))
    async def get_dispute(dispute_id: str, who: Principal = Depends(principal)) -> Dispute:
        found: Dispute = await gw.payments.get_dispute(
            who.user_id, object_id(dispute_id, "dispute")
        )
        return found

    @r.post(
        "/disputes/{dispute_id}/evidence",
        response_model=Dispute,
        tags=TAGS,
        responses=problems(*AUTH, *BODY, *IDEMPOTENT, *_EVIDENCE_ERRORS),
    )
    async def submit_evidence(
        request: Request,
        dispute_id: str,
        body: DisputeEvidence,
        who: Principal = Depends(principal),
        key: str | None = idem_header,
    ) -> JSONResponse:
        """Answer a dispute that `needs_response`: the text goes to the bank through the PSP
        and is submitted at once (`under_review`); the bank then decides `won` or `lost`
        (in the sandbox: evidence containing `winning_evidence` wins)."""
        did = object_id(dispute_id, "dispute")
        data = body.model_dump(mode="json")
        return await once(
            request,
            who,
            key,
            data | {"dispute_id": did},
            lambda k: gw.payments.submit_dispute_evidence(who.user_id, did, k, data),
            200,
        )

    @r.post(
        "/disputes/{dispute_id}/close",
        response_model=Dispute,
        tags=TAGS,
        responses=problems(*AUTH, *BODY, *IDEMPOTENT, *_EVIDENCE_ERRORS),
    )
    async def accept_dispute(
        request: Request,
        dispute_id: str,
        body: DisputeClose | None = None,
        who: Principal = Depends(principal),
        key: str | None = idem_header,
    ) -> JSONResponse:
        """Accept the dispute instead of answering it: it is `lost` at once and the held
        amount goes back to the cardholder."""
        did = object_id(dispute_id, "dispute")
        return await once(
            request, who, key, {}, lambda _k: gw.payments.accept_dispute(who.user_id, did), 200
        )
