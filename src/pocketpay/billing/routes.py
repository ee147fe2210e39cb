"""Billing's internal API over HTTP: each route calls ``BillingApi`` (``billing.api``), the
object other components call directly in one process. Behind the internal token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from pocketpay.billing.api import BillingApi
from pocketpay.billing.schemas import (
    Invoice,
    InvoiceItem,
    InvoiceList,
    OwnerPage,
    Plan,
    PlanList,
    PlanListInternal,
    Subscription,
    SubscriptionList,
    TestClock,
)


def build_router(api: BillingApi) -> APIRouter:
    r = APIRouter()

    @r.post("/plans", response_model=Plan)
    async def create_plan(body: dict[str, Any]) -> Plan:
        return await api.create_plan(body)

    @r.get("/plans", response_model=PlanList)
    async def list_plans(
        query: Annotated[PlanListInternal, Query()], active_only: bool = True
    ) -> PlanList:
        return await api.list_plans(query, active_only)

    @r.get("/plans/{plan_id}", response_model=Plan)
    async def get_plan(plan_id: str) -> Plan:
        return await api.get_plan(plan_id)

    @r.post("/plans/{plan_id}/archive", response_model=Plan)
    async def archive_plan(plan_id: str) -> Plan:
        return await api.archive_plan(plan_id)

    @r.post("/subscriptions", response_model=Subscription)
    async def subscribe(owner_id: str, idempotency_key: str, body: dict[str, Any]) -> Subscription:
        return await api.subscribe(owner_id, idempotency_key, body)

    @r.get("/subscriptions", response_model=SubscriptionList)
    async def list_subscriptions(query: Annotated[OwnerPage, Query()]) -> SubscriptionList:
        return await api.list_subscriptions(query.owner_id, query)

    @r.get("/subscriptions/{sub_id}", response_model=Subscription)
    async def get_subscription(sub_id: str, owner_id: str) -> Subscription:
        return await api.get_subscription(owner_id, sub_id)

    @r.post("/subscriptions/{sub_id}", response_model=Subscription)
    async def update(sub_id: str, owner_id: str, body: dict[str, Any]) -> Subscription:
        return await api.update(owner_id, sub_id, body)

    @r.post("/subscriptions/{sub_id}/cancel", response_model=Subscription)
    async def cancel(sub_id: str, owner_id: str, body: dict[str, Any]) -> Subscription:
        return await api.cancel(owner_id, sub_id, body)

    @r.post("/subscriptions/{sub_id}/pause", response_model=Subscription)
    async def pause(sub_id: str, owner_id: str) -> Subscription:
        return await api.pause(owner_id, sub_id)

    @r.post("/subscriptions/{sub_id}/resume", response_model=Subscription)
    async def resume(sub_id: str, owner_id: str) -> Subscription:
        return await api.resume(owner_id, sub_id)

    @r.post("/subscriptions/{sub_id}/lines", response_model=InvoiceItem)
    async def add_invoice_item(
        sub_id: str, admin_id: str, idempotency_key: str, body: dict[str, Any]
    ) -> InvoiceItem:
        return await api.add_invoice_item(admin_id, idempotency_key, sub_id, body)

    @r.post("/invoices/{invoice_id}/void", response_model=Invoice)
    async def void_invoice(invoice_id: str) -> Invoice:
        return await api.void_invoice(invoice_id)

    @r.get("/invoices", response_model=InvoiceList)
    async def list_invoices(
        query: Annotated[OwnerPage, Query()], subscription_id: str | None = None
    ) -> InvoiceList:
        return await api.list_invoices(query.owner_id, query, subscription_id)

    @r.get("/invoices/{invoice_id}", response_model=Invoice)
    async def get_invoice(invoice_id: str, owner_id: str) -> Invoice:
        return await api.get_invoice(owner_id, invoice_id)

    @r.post("/invoices/{invoice_id}/pay", response_model=Invoice)
    async def pay_invoice(invoice_id: str, owner_id: str) -> Invoice:
        return await api.pay_invoice(owner_id, invoice_id)

    @r.get("/invoices/{invoice_id}/pdf")
    async def invoice_pdf(invoice_id: str, owner_id: str, email: str, name: str) -> Response:
        pdf = await api.invoice_pdf(owner_id, invoice_id, email, name)
        return Response(pdf, media_type="application/pdf")

    @r.get("/test-clock", response_model=TestClock)
    async def test_clock() -> TestClock:
        return await api.test_clock()

    @r.post("/test-clock/advance", response_model=TestClock)
    async def advance(body: dict[str, Any]) -> TestClock:
        return await api.advance_clock(body)

    return r
