"""Rendering the web app's pages: Jinja2 (autoescaped), a fresh CSP nonce per page, the CSRF
token of the session in every form, and errors as pages with words rather than JSON.

Fragments (``_*.html``) are the parts of a page that change when something happens; the page
includes them, and the live script fetches them again on a stream event and swaps them in,
so a part is rendered in one place only."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape

from pocketpay.gateway.web.forms import money
from pocketpay.gateway.web.session import SESSION_PATH, LoginRequired, WebSessions
from pocketpay.kit.errors import AppError
from pocketpay.kit.tokens import Principal
from pocketpay.kit.web import new_nonce, security_headers

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
STATIC_PATH = "/app/static"

# The stream's event types after which a page fetches its live parts again (EventSource
# needs each name: a named event never reaches onmessage).
LIVE_EVENTS = (
    "payments.payment.created",
    "payments.payment.authorized",
    "payments.payment.captured",
    "payments.payment.settled",
    "payments.payment.failed",
    "payments.payment.canceled",
    "payments.payment.refunded",
    "payments.refund.succeeded",
    "payments.refund.failed",
    "ledger.transfer.posted",
    "ledger.wallet.updated",
    "billing.invoice.paid",
    "payments.dispute.created",
    "payments.dispute.updated",
    "payments.dispute.closed",
)


def when(value: str | datetime | None) -> str:
    """A time as ``2026-12-02 10:15:03 UTC`` (the views' times are UTC; some are ISO text)."""
    if not value:
        return ""
    try:
        at = datetime.fromisoformat(value) if isinstance(value, str) else value
    except ValueError:
        return str(value)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class Pages:
    def __init__(self, sessions: WebSessions) -> None:
        self.sessions = sessions
        self.env = Environment(
            loader=FileSystemLoader(str(TEMPLATES_DIR)),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["money"] = money
        self.env.filters["when"] = when

    def render(
        self,
        request: Request,
        name: str,
        who: Principal | None,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        nonce = new_nonce()
        html = self.env.get_template(name).render(
            context
            | {
                "nonce": nonce,
                "who": who,
                "csrf": self.sessions.csrf_token(request, who.user_id if who else ""),
                "csrf_out": self.sessions.csrf_token(request, ""),
                "static": STATIC_PATH,
                "live_events": LIVE_EVENTS,
            }
        )
        response = HTMLResponse(html, status_code=status, headers=security_headers(nonce))
        self.sessions.keep_seed(response, request)
        return response

    def fragment(self, name: str, **context: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(context)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def web_route(pages: Pages) -> type[APIRoute]:
    """A route class whose errors are pages: no session -> the refresh route (then the login
    page), any other ``AppError`` -> a page with its words and status."""

    class WebRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def page(request: Request) -> Response:
                try:
                    return await handler(request)
                except LoginRequired:
                    target = quote(str(request.url.path), safe="/")
                    return RedirectResponse(f"{SESSION_PATH}/refresh?next={target}", 303)
                except AppError as exc:
                    try:
                        who = await pages.sessions.principal(request)
                    except AppError:  # rate limited: the page shows that error alone
                        who = None
                    return pages.render(request, "error.html", who, status=exc.status, error=exc)

            return page

    return WebRoute
