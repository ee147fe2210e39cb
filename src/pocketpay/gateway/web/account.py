"""The web app's account pages: subscriptions and invoices (with their PDFs), notification
preferences, and webhook endpoints with their delivery logs. Each calls the same client the
JSON API calls; a deployment without billing or notifications shows a page saying so (503)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse

from pocketpay.billing.client import BillingClient
from pocketpay.gateway.routes import ID_PATTERN, Gateway
from pocketpay.gateway.web.forms import FormError
from pocketpay.gateway.web.money import once
from pocketpay.gateway.web.pages import Pages
from pocketpay.gateway.web.session import CSRF_FIELD
from pocketpay.kit.errors import NotFound, Unavailable
from pocketpay.kit.listing import Page
from pocketpay.kit.tokens import Principal
from pocketpay.notifications.client import NotificationsClient
from pocketpay.notifications.schemas import EndpointCreate, PreferencesIn

PAGE_SIZE = 20
_ID = re.compile(ID_PATTERN)

Form = dict[str, str]
FormOf = Callable[[Request], Awaitable[Form]]
Guarded = Callable[
    [Callable[[], Awaitable[Response]], Callable[[FormError], Awaitable[Response]]],
    Awaitable[Response],
]


def _id(value: str, what: str) -> str:
    if not _ID.fullmatch(value):
        raise NotFound(f"There is no such {what} among yours.")
    return value


def _billing(gw: Gateway) -> BillingClient:
    if gw.billing is None:
        raise Unavailable(
            "Subscriptions and invoices are not available here (no billing component).",
            code="billing.unavailable",
        )
    return gw.billing


def _notifications(gw: Gateway) -> NotificationsClient:
    if gw.notifications is None:
        raise Unavailable(
            "Notifications are not available here (no notifications component).",
            code="notifications.unavailable",
        )
    return gw.notifications


def account_routes(
    r: APIRouter, gw: Gateway, pages: Pages, form_of: FormOf, guarded: Guarded
) -> None:
    _billing_pages(r, gw, pages)
    _preferences(r, gw, pages, form_of, guarded)
    _endpoints(r, gw, pages, form_of, guarded)


def _billing_pages(r: APIRouter, gw: Gateway, pages: Pages) -> None:
    sessions = pages.sessions

    async def parts(who: Principal, after: str | None) -> dict[str, Any]:
        b = _billing(gw)
        subs = (await b.list_subscriptions(who.user_id, Page(limit=PAGE_SIZE))).data
        plans = {s.plan_id: await b.get_plan(s.plan_id) for s in subs}
        page = Page(limit=PAGE_SIZE, starting_after=_id(after, "invoice") if after else None)
        invoices = await b.list_invoices(who.user_id, page, None)
        return {"subscriptions": subs, "plans": plans, "invoices": invoices}

    @r.get("/app/billing")
    async def billing(request: Request, after: str | None = Query(None)) -> Response:
        who = await sessions.require(request)
        context = await parts(who, after)
        return pages.render(request, "billing.html", who, after=after, **context)

    @r.get("/app/live/billing")
    async def billing_live(request: Request) -> Response:
        who = await sessions.require(request)
        return pages.fragment("_billing.html", **(await parts(who, None)))

    @r.get("/app/invoices/{invoice_id}/pdf")
    async def invoice_pdf(request: Request, invoice_id: str) -> Response:
        who = await sessions.require(request)
        user = await gw.auth.get_user(who.user_id)
        pdf = await _billing(gw).invoice_pdf(
            who.user_id, _id(invoice_id, "invoice"), user["email"], user["name"]
        )
        headers = {"Content-Disposition": f'inline; filename="invoice-{invoice_id}.pdf"'}
        return Response(pdf, media_type="application/pdf", headers=headers)


async def _notifications_page(
    gw: Gateway,
    pages: Pages,
    request: Request,
    who: Principal,
    errors: Form,
    status: int = 200,
    **extra: Any,
) -> Response:
    """Preferences, the endpoints, and the form that adds one (``new``: its values)."""
    n = _notifications(gw)
    prefs = await n.get_preferences(who.user_id)
    endpoints = (await n.list_endpoints(who.user_id, Page(limit=PAGE_SIZE))).data
    context: dict[str, Any] = {
        "values": {"email": "1" if prefs.email else "", "slack": prefs.slack_webhook_url or ""},
        "endpoints": endpoints,
        "key": uuid.uuid4().hex,
        "new": {"url": "", "events": "*", "description": ""},
        "created": None,
        "saved": False,
    } | extra
    return pages.render(request, "notifications.html", who, status, errors=errors, **context)


def _preferences(
    r: APIRouter, gw: Gateway, pages: Pages, form_of: FormOf, guarded: Guarded
) -> None:
    sessions = pages.sessions

    @r.get("/app/notifications")
    async def notifications(request: Request, saved: str | None = Query(None)) -> Response:
        who = await sessions.require(request)
        return await _notifications_page(gw, pages, request, who, {}, saved=saved is not None)

    @r.post("/app/notifications/preferences")
    async def save_preferences(request: Request, form: Form = Depends(form_of)) -> Response:
        who = await sessions.require(request)
        sessions.check_post(request, form.get(CSRF_FIELD, ""), who.user_id)
        values = {"email": form.get("email", ""), "slack": form.get("slack", "").strip()}

        async def work() -> Response:
            body = PreferencesIn(
                email=bool(values["email"]), slack_webhook_url=values["slack"] or None
            )
            await _notifications(gw).put_preferences(who.user_id, body.model_dump())
            return RedirectResponse("/app/notifications?saved=1", 303)

        async def again(exc: FormError) -> Response:
            # Every error of this form is about the Slack URL (email is a checkbox).
            errors = {"slack": next(iter(exc.errors.values()))}
            return await _notifications_page(
                gw, pages, request, who, errors, exc.status, values=values
            )

        return await guarded(work, again)


def _endpoints(r: APIRouter, gw: Gateway, pages: Pages, form_of: FormOf, guarded: Guarded) -> None:
    sessions = pages.sessions

    @r.post("/app/webhooks")
    async def create_endpoint(request: Request, form: Form = Depends(form_of)) -> Response:
        """Shows the page with the new endpoint's secret (never a redirect: it is shown once)."""
        who = await sessions.require(request)
        sessions.check_post(request, form.get(CSRF_FIELD, ""), who.user_id)
        new = {k: form.get(k, "").strip() for k in ("url", "events", "description")}

        async def work() -> Response:
            events = [e.strip() for e in re.split(r"[,\s]+", new["events"]) if e.strip()]
            body = EndpointCreate(url=new["url"], events=events, description=new["description"])
            data = body.model_dump()
            n = _notifications(gw)
            made = await once(
                gw, request, who, form, data, lambda k: n.create_endpoint(who.user_id, k, data)
            )
            return await _notifications_page(gw, pages, request, who, {}, 201, created=made)

        async def again(exc: FormError) -> Response:
            errors = {("url" if k == "_form" else k): v for k, v in exc.errors.items()}
            return await _notifications_page(gw, pages, request, who, errors, exc.status, new=new)

        return await guarded(work, again)

    @r.get("/app/webhooks/{endpoint_id}")
    async def endpoint(
        request: Request, endpoint_id: str, after: str | None = Query(None)
    ) -> Response:
        who = await sessions.require(request)
        n = _notifications(gw)
        eid = _id(endpoint_id, "webhook endpoint")
        found = await n.get_endpoint(who.user_id, eid)
        page = Page(limit=PAGE_SIZE, starting_after=_id(after, "delivery") if after else None)
        deliveries = await n.list_deliveries(who.user_id, eid, page)
        return pages.render(
            request, "webhook.html", who, endpoint=found, deliveries=deliveries, after=after
        )

    @r.post("/app/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver")
    async def redeliver(
        request: Request, endpoint_id: str, delivery_id: str, form: Form = Depends(form_of)
    ) -> Response:
        who = await sessions.require(request)
        sessions.check_post(request, form.get(CSRF_FIELD, ""), who.user_id)
        eid = _id(endpoint_id, "webhook endpoint")
        await _notifications(gw).redeliver(who.user_id, eid, _id(delivery_id, "delivery"))
        return RedirectResponse(f"/app/webhooks/{eid}", 303)
