"""The public billing API: plans (admins create and archive them), subscriptions, invoices and
their PDFs, and the sandbox's test clock. Thin, like ``routes``: authenticate, validate, apply
idempotency, call ``BillingClient``."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from pocketpay.billing.client import BillingClient
from pocketpay.billing.schemas import (
    Invoice,
    InvoiceItem,
    InvoiceItemCreate,
    InvoiceList,
    Plan,
    PlanCreate,
    PlanList,
    Subscription,
    SubscriptionCancel,
    SubscriptionCreate,
    SubscriptionList,
    SubscriptionUpdate,
    TestClock,
    TestClockAdvance,
)
from pocketpay.gateway.problems import AUTH, BODY, IDEMPOTENT, LIST, problems
from pocketpay.gateway.route_kit import RouteKit
from pocketpay.kit.errors import Forbidden, Unavailable
from pocketpay.kit.listing import Page
from pocketpay.kit.tokens import Principal

ADMIN_ONLY = (*AUTH, "auth.forbidden")


class _Unavailable:
    """Stands for the billing client where this deployment runs no billing component."""

    def __getattr__(self, name: str) -> Any:
        raise Unavailable(
            "This deployment runs no billing component (POCKETPAY_URLS names none).",
            code="billing.unavailable",
        )


_PDF: dict[int | str, dict[str, Any]] = {200: {"content": {"application/pdf": {}}}}


def billing_routes(kit: RouteKit) -> None:
    r, gw, principal, once, idem_header = kit.r, kit.gw, kit.principal, kit.once, kit.idem_header
    page_of, object_id = kit.page_of, kit.object_id
    # A deployment may run without billing (scale mode, no billing process): its routes
    # then answer 503 billing.unavailable instead of the gateway failing to start.
    b: BillingClient = gw.billing or _Unavailable()
    plan_page = page_of("plan", "plan")
    sub_page = page_of("sub", "subscription")
    invoice_page = page_of("in", "invoice")

    async def admin(who: Principal = Depends(principal)) -> Principal:
        if not who.is_admin:
            raise Forbidden(
                "Plans, one-off lines, voids and the test clock are for operators (role admin)."
            )
        return who

    @r.post(
        "/plans",
        status_code=201,
        response_model=Plan,
        tags=["billing"],
        responses=problems(*ADMIN_ONLY, *BODY, *IDEMPOTENT, "validation.unknown_currency"),
    )
    async def create_plan(
        request: Request,
        body: PlanCreate,
        who: Principal = Depends(admin),
        key: str | None = idem_header,
    ) -> JSONResponse:
        """A plan users can subscribe to (role admin): a price per period."""
        data = body.model_dump(mode="json")
        return await once(request, who, key, data, lambda _k: b.create_plan(data), 201)

    @r.get("/plans", tags=["billing"], responses=problems(*AUTH, *LIST))
    async def list_plans(
        _who: Principal = Depends(principal), page: Page = Depends(plan_page)
    ) -> PlanList:
        """The active plans, newest first."""
        return await b.list_plans(page, True)

    @r.get("/plans/{plan_id}", tags=["billing"], responses=problems(*AUTH, "not_found"))
    async def get_plan(plan_id: str, _who: Principal = Depends(principal)) -> Plan:
        return await b.get_plan(object_id(plan_id, "plan"))

    @r.post(
        "/plans/{plan_id}/archive",
        tags=["billing"],
        responses=problems(*ADMIN_ONLY, "not_found"),
    )
    async def archive_plan(plan_id: str, _who: Principal = Depends(admin)) -> Plan:
        """No new subscriptions to it; the existing ones go on. Plans are never deleted."""
        return await b.archive_plan(object_id(plan_id, "plan"))

    @r.post(
        "/subscriptions",
        status_code=201,
        response_model=Subscription,
        tags=["billing"],
        responses=problems(
            *AUTH,
            *BODY,
            *IDEMPOTENT,
            "not_found",
            "billing.plan_archived",
            "billing.payment_method_required",
            "payments.invalid_payment_method",
        ),
    )
    async def subscribe(
        request: Request,
        body: SubscriptionCreate,
        who: Principal = Depends(principal),
        key: str | None = idem_header,
    ) -> JSONResponse:
        """Subscribe to a plan, paying by a saved card (charged off-session each period) or
        from your wallet. Without a trial the first invoice is charged at once: the
        subscription is `active` once it is paid (`incomplete` until then)."""
        data = body.model_dump(mode="json")
        return await once(request, who, key, data, lambda k: b.subscribe(who.user_id, k, data), 201)

    @r.get("/subscriptions", tags=["billing"], responses=problems(*AUTH, *LIST))
    async def list_subscriptions(
        who: Principal = Depends(principal), page: Page = Depends(sub_page)
    ) -> SubscriptionList:
        return await b.list_subscriptions(who.user_id, page)

    @r.get("/subscriptions/{sub_id}", tags=["billing"], responses=problems(*AUTH, "not_found"))
    async def get_subscription(sub_id: str, who: Principal = Depends(principal)) -> Subscription:
        return await b.get_subscription(who.user_id, object_id(sub_id, "subscription"))

    @r.post(
        "/subscriptions/{sub_id}",
        tags=["billing"],
        responses=problems(
            *AUTH,
            *BODY,
            "not_found",
            "billing.invalid_transition",
            "billing.plan_archived",
            "billing.currency_mismatch",
            "payments.invalid_payment_method",
        ),
    )
    async def update_subscription(
        sub_id: str, body: SubscriptionUpdate, who: Principal = Depends(principal)
    ) -> Subscription:
        """Change the saved card the subscription is charged with, or its plan (same
        currency) with a `proration_behavior`: `create_prorations` (the unused time credited
        and the rest of the period at the new price, on the next invoice), `always_invoice`
        (those lines invoiced and charged now) or `none`. A plan with another interval starts
        a new billing cycle now, its first period invoiced at once. Sending the current plan
        again changes nothing, so a retried request is safe."""
        data = body.model_dump(exclude_none=True)
        return await b.update(who.user_id, object_id(sub_id, "subscription"), data)

    @r.post(
        "/subscriptions/{sub_id}/cancel",
        tags=["billing"],
        responses=problems(*AUTH, *BODY, "not_found", "billing.invalid_transition"),
    )
    async def cancel_subscription(
        sub_id: str, body: SubscriptionCancel | None = None, who: Principal = Depends(principal)
    ) -> Subscription:
        """Cancel now (no more charges), or at the end of the current period."""
        data = (body or SubscriptionCancel()).model_dump()
        return await b.cancel(who.user_id, object_id(sub_id, "subscription"), data)

    @r.post(
        "/subscriptions/{sub_id}/pause",
        tags=["billing"],
        responses=problems(*AUTH, "not_found", "billing.invalid_transition"),
    )
    async def pause_subscription(sub_id: str, who: Principal = Depends(principal)) -> Subscription:
        """Pause a trialing or active subscription: nothing renews and nothing is charged
        until it is resumed."""
        return await b.pause(who.user_id, object_id(sub_id, "subscription"))

    @r.post(
        "/subscriptions/{sub_id}/resume",
        tags=["billing"],
        responses=problems(*AUTH, "not_found", "billing.invalid_transition"),
    )
    async def resume_subscription(sub_id: str, who: Principal = Depends(principal)) -> Subscription:
        """Resume a paused subscription: a new billing cycle starts now and its first
        invoice is charged at once (`past_due` if that charge fails)."""
        return await b.resume(who.user_id, object_id(sub_id, "subscription"))

    @r.post(
        "/subscriptions/{sub_id}/lines",
        status_code=201,
        response_model=InvoiceItem,
        tags=["billing"],
        responses=problems(
            *ADMIN_ONLY, *BODY, *IDEMPOTENT, "not_found", "billing.invalid_transition"
        ),
    )
    async def add_invoice_item(
        request: Request,
        sub_id: str,
        body: InvoiceItemCreate,
        who: Principal = Depends(admin),
        key: str | None = idem_header,
    ) -> JSONResponse:
        """Add a one-off line (role admin) to a user's subscription, in its currency: it goes
        on the subscription's next invoice (a renewal, or an invoice made now by a plan change
        or a resume). A negative amount is a credit."""
        data = body.model_dump(mode="json")
        sub = object_id(sub_id, "subscription")
        return await once(
            request, who, key, data, lambda k: b.add_invoice_item(who.user_id, k, sub, data), 201
        )

    @r.get("/invoices", tags=["billing"], responses=problems(*AUTH, *LIST))
    async def list_invoices(
        who: Principal = Depends(principal),
        page: Page = Depends(invoice_page),
        subscription: str | None = Query(None, description="Only this subscription's."),
    ) -> InvoiceList:
        return await b.list_invoices(who.user_id, page, subscription)

    @r.get("/invoices/{invoice_id}", tags=["billing"], responses=problems(*AUTH, "not_found"))
    async def get_invoice(invoice_id: str, who: Principal = Depends(principal)) -> Invoice:
        return await b.get_invoice(who.user_id, object_id(invoice_id, "invoice"))

    @r.get(
        "/invoices/{invoice_id}/pdf",
        tags=["billing"],
        response_class=Response,
        responses=_PDF | problems(*AUTH, "not_found", "billing.invalid_transition"),
    )
    async def invoice_pdf(invoice_id: str, who: Principal = Depends(principal)) -> Response:
        """The invoice as a PDF document."""
        user = await gw.auth.get_user(who.user_id)
        pdf = await b.invoice_pdf(
            who.user_id, object_id(invoice_id, "invoice"), user["email"], user["name"]
        )
        filename = f"invoice-{invoice_id}.pdf"
        headers = {"Content-Disposition": f'inline; filename="{filename}"'}
        return Response(pdf, media_type="application/pdf", headers=headers)

    @r.post(
        "/invoices/{invoice_id}/pay",
        tags=["billing"],
        responses=problems(*AUTH, "not_found", "billing.invalid_transition"),
    )
    async def pay_invoice(invoice_id: str, who: Principal = Depends(principal)) -> Invoice:
        """Charge an open invoice now (a card's outcome follows in a moment)."""
        return await b.pay_invoice(who.user_id, object_id(invoice_id, "invoice"))

    @r.post(
        "/invoices/{invoice_id}/void",
        tags=["billing"],
        responses=problems(*ADMIN_ONLY, "not_found", "billing.invalid_transition"),
    )
    async def void_invoice(invoice_id: str, _who: Principal = Depends(admin)) -> Invoice:
        """Void a user's open (or draft) invoice (role admin): it is never charged again.
        A paid, void or uncollectible invoice, or one with a charge in flight, is 409. The
        subscription keeps its status (a past_due one stays past_due until another invoice
        is paid)."""
        return await b.void_invoice(object_id(invoice_id, "invoice"))

    @r.get("/admin/test-clock", tags=["billing"], responses=problems(*ADMIN_ONLY, "not_found"))
    async def test_clock(_who: Principal = Depends(admin)) -> TestClock:
        """Billing time (sandbox only): the wall clock plus the test clock's offset."""
        return await b.test_clock()

    @r.post(
        "/admin/test-clock/advance",
        tags=["billing"],
        responses=problems(*ADMIN_ONLY, *BODY, "not_found", "billing.test_clock_backwards"),
    )
    async def advance_test_clock(
        body: TestClockAdvance, _who: Principal = Depends(admin)
    ) -> TestClock:
        """Move billing time forward (sandbox only); every renewal, trial end and dunning
        retry that falls due runs before the answer."""
        return await b.advance_clock(body.model_dump(mode="json", exclude_none=True))
