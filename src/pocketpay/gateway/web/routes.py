"""The users' web app: server-rendered pages on the gateway, calling the same ``Gateway``
service objects the JSON API calls (in-process, never an HTTP call to itself).

``/`` leads to ``/app`` when signed in, else to ``/login``. Pages: sign up, log in, log out,
wallets and their entries, payments and a payment's timeline, top up by test card, send money,
refund, capture or cancel a held payment (``money.py``). Parts of pages that change are
fetched again by ``static/live.js`` on the live stream's events (``/app/live/...``)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response, params
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from starlette.staticfiles import StaticFiles

from pocketpay.gateway.ratelimit import RateLimits
from pocketpay.gateway.routes import Gateway
from pocketpay.gateway.schemas import LoginIn, SignupIn
from pocketpay.gateway.web.account import account_routes
from pocketpay.gateway.web.forms import FormError
from pocketpay.gateway.web.money import money_routes
from pocketpay.gateway.web.pages import STATIC_DIR, STATIC_PATH, Pages, web_route
from pocketpay.gateway.web.session import (
    CSRF_FIELD,
    REFRESH_COOKIE,
    SESSION_PATH,
    CsrfRefused,
    LoginRequired,
    WebSessions,
)
from pocketpay.kit.errors import AppError, NotFound
from pocketpay.kit.listing import Page
from pocketpay.kit.money import normalize_currency
from pocketpay.kit.tokens import Principal
from pocketpay.ledger.schemas import TransferListQuery
from pocketpay.payments.schemas import PaymentListQuery
from pocketpay.settings import Settings

HOME = "/app"
RECENT = 5
PAGE_SIZE = 20
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SEQ = re.compile(r"^[0-9]{1,18}$")

Form = dict[str, str]


async def form_of(request: Request) -> Form:
    """The posted form's text fields (a file field is not text: ignored)."""
    data = await request.form()
    return {k: v for k, v in data.items() if isinstance(v, str)}


def safe_next(target: str | None) -> str:
    """Only a path of the app: never another site (``//evil``) nor a scheme."""
    if target and target.startswith(HOME) and not target.startswith("//") and "\\" not in target:
        return target
    return HOME


async def guarded(
    work: Callable[[], Awaitable[Response]], again: Callable[[FormError], Awaitable[Response]]
) -> Response:
    """Run a form's work; what the user caused comes back as the form with words by fields."""
    try:
        return await work()
    except (LoginRequired, CsrfRefused):
        raise
    except FormError as exc:
        return await again(exc)
    except ValidationError as exc:
        return await again(FormError.invalid(exc))
    except AppError as exc:
        return await again(FormError.of(exc))


def install(app: FastAPI, gw: Gateway, settings: Settings, limits: RateLimits) -> None:
    """Mount the web app on the gateway's app (its pages are not part of the API document)."""
    sessions = WebSessions(
        gw.auth,
        settings.resolved_jwt_secret(),
        settings.public_url,
        settings.auth.refresh_ttl_seconds,
    )
    pages = Pages(sessions)
    r = APIRouter(route_class=web_route(pages), include_in_schema=False)
    per_ip = params.Depends(limits.per_ip(("/login", "/signup", f"{SESSION_PATH}/refresh")))
    _session_routes(r, gw, pages, per_ip)
    _wallet_routes(r, gw, pages)
    money_routes(r, gw, pages, form_of, guarded)
    account_routes(r, gw, pages, form_of, guarded)
    app.include_router(r)
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="web-static")


def _session_routes(r: APIRouter, gw: Gateway, pages: Pages, per_ip: params.Depends) -> None:
    sessions = pages.sessions

    @r.get("/")
    async def landing(request: Request) -> RedirectResponse:
        signed_in = await sessions.principal(request) is not None
        return RedirectResponse(HOME if signed_in else "/login", 303)

    @r.get("/login")
    async def login_page(request: Request, next: str | None = Query(None)) -> Response:
        if await sessions.principal(request) is not None:
            return RedirectResponse(safe_next(next), 303)
        return pages.render(request, "login.html", None, next=safe_next(next), values={}, errors={})

    @r.post("/login", dependencies=[per_ip])
    async def login(request: Request, form: Form = Depends(form_of)) -> Response:
        sessions.check_post(request, form.get(CSRF_FIELD, ""), "")
        target = safe_next(form.get("next"))
        values = {"email": form.get("email", "")}

        async def work() -> Response:
            body = LoginIn.model_validate(
                {"email": values["email"], "password": form.get("password", "")}
            )
            session = await gw.auth.login(str(body.email), body.password)
            response = RedirectResponse(target, 303)
            sessions.start(response, request, session)
            return response

        async def again(exc: FormError) -> Response:
            return pages.render(
                request,
                "login.html",
                None,
                exc.status,
                next=target,
                values=values,
                errors=exc.errors,
            )

        return await guarded(work, again)

    @r.get("/signup")
    async def signup_page(request: Request) -> Response:
        if await sessions.principal(request) is not None:
            return RedirectResponse(HOME, 303)
        return pages.render(request, "signup.html", None, values={}, errors={})

    @r.post("/signup", dependencies=[per_ip])
    async def signup(request: Request, form: Form = Depends(form_of)) -> Response:
        sessions.check_post(request, form.get(CSRF_FIELD, ""), "")
        values = {k: form.get(k, "") for k in ("name", "email")}

        async def work() -> Response:
            body = SignupIn.model_validate(values | {"password": form.get("password", "")})
            session = await gw.auth.signup(str(body.email), body.password, body.name)
            response = RedirectResponse(HOME, 303)
            sessions.start(response, request, session)
            return response

        async def again(exc: FormError) -> Response:
            return pages.render(
                request, "signup.html", None, exc.status, values=values, errors=exc.errors
            )

        return await guarded(work, again)

    _refresh_routes(r, gw, pages, per_ip)


# Two tabs whose session ended renew it at once with the one refresh cookie they share: the
# second within this many seconds of the first renews too (else it would look like a stolen
# token and end the session of both).
REFRESH_RACE_SECONDS = 10.0


def _refresh_routes(r: APIRouter, gw: Gateway, pages: Pages, per_ip: params.Depends) -> None:
    sessions = pages.sessions

    async def rotate(request: Request, response: Response) -> bool:
        """A new session from the refresh cookie, unless the current one is still valid: a
        refresh token is single use, and rotating it needlessly (a page that navigated away
        and never got the new cookie, two tabs) would end the session as a reuse."""
        if await sessions.principal(request) is not None:
            return True
        token = request.cookies.get(REFRESH_COOKIE)
        if not token:
            return False
        try:
            session = await gw.auth.refresh(token, reuse_grace_seconds=REFRESH_RACE_SECONDS)
        except AppError as exc:
            if exc.status != 401:
                raise
            sessions.end(response, request)
            return False
        sessions.start(response, request, session)
        return True

    @r.get(f"{SESSION_PATH}/refresh", dependencies=[per_ip])
    async def refresh_page(request: Request, next: str | None = Query(None)) -> Response:
        """A page found no valid session: rotate it with the refresh cookie and go back,
        or log in."""
        target = safe_next(next)
        response = RedirectResponse(target, 303)
        if not await rotate(request, response):
            response.headers["location"] = f"/login?next={target}"
        return response

    @r.post(f"{SESSION_PATH}/refresh", status_code=204, dependencies=[per_ip])
    async def refresh(request: Request) -> Response:
        """The live script's renewal when the stream says the token expired: 204 with new
        cookies, or 401. Only from our own pages (the Origin a browser sends with a POST)."""
        origin = request.headers.get("origin")
        if origin is None or origin not in sessions.our_origins(request):
            raise CsrfRefused("Renew the session from PocketPay's own pages.")
        response = Response(status_code=204)
        if not await rotate(request, response):
            response.status_code = 401
        return response

    @r.post(f"{SESSION_PATH}/logout")
    async def logout(request: Request, form: Form = Depends(form_of)) -> Response:
        sessions.check_post(request, form.get(CSRF_FIELD, ""), "")
        token = request.cookies.get(REFRESH_COOKIE)
        if token:
            await gw.auth.revoke(token)
        response = RedirectResponse("/login", 303)
        sessions.end(response, request)
        return response


def _after(value: str | None, pattern: re.Pattern[str]) -> str | None:
    if value is None or pattern.fullmatch(value):
        return value
    raise NotFound("This page of the list does not exist.")


def _wallet_routes(r: APIRouter, gw: Gateway, pages: Pages) -> None:
    sessions = pages.sessions

    async def home_parts(who: Principal) -> dict[str, Any]:
        return {
            "wallets": (await gw.ledger.wallets(who.user_id)).data,
            "payments": (await gw.payments.list(who.user_id, PaymentListQuery(limit=RECENT))).data,
            "transfers": (
                await gw.ledger.list_transfers(who.user_id, TransferListQuery(limit=RECENT))
            ).data,
        }

    @r.get(HOME)
    async def home(request: Request, sent: str | None = Query(None)) -> Response:
        who = await sessions.require(request)
        transfer = None
        if sent and _ID.fullmatch(sent):
            try:
                transfer = await gw.ledger.get_transfer(who.user_id, sent)
            except NotFound:
                transfer = None
        parts = await home_parts(who)
        return pages.render(request, "home.html", who, sent=transfer, **parts)

    @r.get("/app/live/home")
    async def home_live(request: Request) -> Response:
        who = await sessions.require(request)
        return pages.fragment("_home.html", who=who, **(await home_parts(who)))

    @r.get("/app/wallets/{currency}")
    async def entries(request: Request, currency: str, after: str | None = Query(None)) -> Response:
        who = await sessions.require(request)
        try:
            code = normalize_currency(currency)
        except ValueError:
            raise NotFound(f"You have no {currency[:8]!r} wallet.") from None
        page = Page(limit=PAGE_SIZE, starting_after=_after(after, _SEQ))
        listed = await gw.ledger.entries(who.user_id, code, page)
        return pages.render(request, "entries.html", who, currency=code, entries=listed)
