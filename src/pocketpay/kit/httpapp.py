"""What every component's FastAPI app shares: problem+json errors, request ids, an access log,
metrics, a request body limit, and for the public API its offline docs and CORS. Errors are
translated to HTTP here, once, whatever the component raised."""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections.abc import Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pocketpay.kit.errors import AppError
from pocketpay.kit.logging import REQUEST_STATE
from pocketpay.kit.metrics import HTTP_LATENCY, HTTP_REQUESTS
from pocketpay.kit.tracing import server_span

log = structlog.get_logger(__name__)
access_log = structlog.get_logger("pocketpay.access")

PROBLEM = "application/problem+json"


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    request: Request | None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://pocketpay.dev/errors/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": getattr(request.state, "request_id", None) if request else None,
    }
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _clean_validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        out.append(
            {
                "field": ".".join(loc) or "body",
                "message": err.get("msg", "invalid"),
                "type": err.get("type", "invalid"),
            }
        )
    return out[:50]


_FASTAPI_BODY_ERROR = "There was an error parsing the body"


def _title(exc: AppError) -> str:
    """An AppError raised with a code but no title of its own would be titled "Internal
    error"; for a client error use the HTTP status phrase instead."""
    if exc.status < 500 and exc.title == AppError.title:
        try:
            return HTTPStatus(exc.status).phrase
        except ValueError:
            return "Request rejected"
    return exc.title


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return problem(
            exc.status, exc.code, _title(exc), exc.detail, request, exc.errors, exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _clean_validation_errors(exc)
        if any(e["type"] == "json_invalid" for e in errors):
            return problem(
                400,
                "request.malformed_json",
                "Malformed JSON",
                "The request body is not valid JSON.",
                request,
                errors,
            )
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        return problem(
            422,
            "validation.failed",
            "Validation failed",
            f"{first['field']}: {first['message']}",
            request,
            errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {
            404: "not_found",
            405: "method_not_allowed",
            401: "auth.unauthorized",
            403: "auth.forbidden",
            413: "request.too_large",
            415: "request.unsupported_media",
        }
        code = codes.get(exc.status_code, f"http.{exc.status_code}")
        detail = exc.detail if isinstance(exc.detail, str) else "request rejected"
        if exc.status_code == 400 and detail == _FASTAPI_BODY_ERROR:
            # FastAPI's answer to a body it cannot decode (e.g. invalid UTF-8): the same code
            # as any other body that is not JSON.
            return problem(
                400,
                "request.malformed_json",
                "Malformed JSON",
                "The request body is not valid JSON (UTF-8).",
                request,
            )
        return problem(
            exc.status_code, code, detail, detail, request, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("http.unhandled", path=request.url.path)
        return problem(
            500,
            "internal.error",
            "Internal error",
            "Something went wrong on our side; the request id helps us find it.",
            request,
        )


class RequestContextMiddleware:
    """Request id, body size limit, metrics by route, one access log line per request.

    The request id is the client's ``Request-Id`` (or ``X-Request-Id``) when it is sane (at
    most 64 letters, digits and ``._:-``), else a new ``req_...``. It is answered in
    ``Request-Id`` and ``X-Request-Id`` on every response and bound into every log line of the
    request. The access log line (``http.access``) carries the method, the route template
    (never the raw path, which holds ids, nor the query, headers or body, which may hold
    secrets), the status, the latency, the request id and the caller when known
    (``kit.logging.bind_principal``).

    Apps mounted inside another app of the same process (the monitor, the sandbox, the
    components' health routes in embedded mode) have this middleware too: the outermost one
    owns the request and the inner ones step aside, so a request is counted and logged once.
    """

    def __init__(self, app: ASGIApp, component: str, max_body_bytes: int = 64 * 1024) -> None:
        self.app = app
        self.component = component
        self.max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        if "request_id" in state:  # an outer app of this process owns the request
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = _request_id(headers)
        state["request_id"] = rid
        declared = headers.get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body:
            await _too_large(scope, receive, send, rid, self.max_body)
            _access_log(self.component, scope, 413, 0.0, rid, state)
            return
        seen = 0
        status_holder = {"status": 500}
        rid_header = rid.encode()
        # A body without Content-Length (chunked) is counted as it arrives. The app may catch
        # the exception raised here (FastAPI turns any error while reading a body into a 400),
        # so remember it and send the 413 in place of whatever the app answers.
        too_large = False
        started = False

        async def limited_receive() -> Message:
            nonlocal seen, too_large
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_body:
                    too_large = True
                    raise _BodyTooLarge
            return msg

        async def send_wrapper(msg: Message) -> None:
            nonlocal started
            if too_large and not started:
                return  # replaced by the 413 below
            if msg["type"] == "http.response.start":
                started = True
                status_holder["status"] = msg["status"]
                out = msg.setdefault("headers", [])
                out.append((b"request-id", rid_header))
                out.append((b"x-request-id", rid_header))
            await send(msg)

        start = time.perf_counter()
        structlog.contextvars.bind_contextvars(request_id=rid)
        state_token = REQUEST_STATE.set(state)
        method = scope.get("method", "GET")
        trace_headers = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in headers.items()
            if k in (b"traceparent", b"tracestate")
        }
        with server_span(
            f"{self.component} {method}",
            trace_headers,
            **{
                "http.request.method": method,
                "url.path": scope.get("path", ""),
                "pocketpay.request_id": rid,
            },
        ) as span:
            try:
                with contextlib.suppress(_BodyTooLarge):
                    await self.app(scope, limited_receive, send_wrapper)
                if too_large and not started:
                    await _too_large(scope, receive, send, rid, self.max_body)
                    status_holder["status"] = 413
            finally:
                elapsed = time.perf_counter() - start
                status = status_holder["status"]
                template = _access_log(self.component, scope, status, elapsed, rid, state)
                REQUEST_STATE.reset(state_token)
                structlog.contextvars.unbind_contextvars("request_id", "user_id", "key_id")
                span.update_name(f"{self.component} {method} {template}")
                span.set_attribute("http.response.status_code", status)
                HTTP_REQUESTS.labels(self.component, method, template, str(status)).inc()
                HTTP_LATENCY.labels(self.component, method, template).observe(elapsed)


# A client's request id is echoed only when it cannot garble a log line or a header.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def _request_id(headers: dict[bytes, bytes]) -> str:
    sent = headers.get(b"request-id") or headers.get(b"x-request-id")
    if sent:
        text = sent.decode("latin-1")
        if _SANE_REQUEST_ID.fullmatch(text):
            return text
    return f"req_{secrets.token_hex(12)}"


def _route_template(scope: Scope) -> str:
    """The template of the route that answered (``/api/v1/payments/{payment_id}``), with the
    prefix of the mounts it is under; ``<mount>/{path}`` when a mounted app answered without
    a route of its own (static files, a sub-app's 404); ``unmatched`` when nothing did.

    The routers leave the innermost route in ``scope["route"]`` and the prefix of the mounts
    the request went through in ``scope["root_path"]`` (``app_root_path`` keeps the server's
    own root path once a mount matched)."""
    route = scope.get("route")
    root = scope.get("root_path", "")
    path = None if isinstance(route, Mount) else getattr(route, "path", None)
    if path:
        return f"{root}{path}"
    return f"{root}/{{path}}" if root != scope.get("app_root_path", root) else "unmatched"


def _access_log(
    component: str, scope: Scope, status: int, elapsed: float, rid: str, state: dict[str, Any]
) -> str:
    """Write the request's access log line; returns its route template."""
    template = _route_template(scope)
    who = {k: state[k] for k in ("user_id", "key_id") if k in state}
    access_log.info(
        "http.access",
        component=component,
        method=scope.get("method", "GET"),
        route=template,
        status=status,
        latency_ms=round(elapsed * 1000, 2),
        request_id=rid,
        **who,
    )
    return template


class _BodyTooLarge(Exception):
    pass


async def _too_large(scope: Scope, receive: Receive, send: Send, rid: str, limit: int) -> None:
    body = {
        "type": "https://pocketpay.dev/errors/request.too_large",
        "title": "Request body too large",
        "status": 413,
        "detail": f"The request body exceeds {limit} bytes.",
        "code": "request.too_large",
        "request_id": rid,
    }
    headers = {"Request-Id": rid, "X-Request-Id": rid}
    resp = JSONResponse(body, status_code=413, media_type=PROBLEM, headers=headers)
    await resp(scope, receive, send)


# Swagger UI and ReDoc as installed with the package (static/docs/README.md says where they
# come from): /docs and /redoc work without internet access.
DOCS_ASSETS = "/docs/assets"
_DOCS_DIR = Path(__file__).parent / "static" / "docs"
# What a browser page on an allowed origin may send and read (CORS).
# The docs pages may load nothing from another origin (ReDoc would fetch its vendor's logo;
# blocked, it hides it). Swagger UI's page starts itself with an inline script.
_DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:"
)
_CORS_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "Request-Id", "X-Request-Id"]
_CORS_EXPOSED = ["Request-Id", "Idempotent-Replayed", "Retry-After", "Location"]


def install_docs(app: FastAPI, openapi_url: str) -> None:
    """``/docs`` (Swagger UI), ``/redoc`` and ``/swagger/index.html`` (a 307 to ``/docs``, a
    path other tools look for), with their scripts served from ``DOCS_ASSETS``. Paths are
    prefixed with the ASGI root path, so the pages also work behind a path-prefixing proxy."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=_DOCS_DIR), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        assets = f"{root}{DOCS_ASSETS}/swagger-ui"
        page = get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon-32x32.png",
            # Swagger UI's default sends the spec to an online validator for a badge.
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers["Content-Security-Policy"] = _DOCS_CSP
        return page

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/swagger-ui/favicon-32x32.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = _DOCS_CSP
        return page

    @app.get("/swagger/index.html", include_in_schema=False)
    async def swagger_index(request: Request) -> RedirectResponse:
        return RedirectResponse(f"{request.scope.get('root_path', '')}/docs", status_code=307)


def new_app(
    component: str,
    *,
    title: str,
    max_body_bytes: int = 64 * 1024,
    docs: bool = False,
    cors_origins: Sequence[str] = (),
) -> FastAPI:
    """A component's app. ``docs``: ``/openapi.json`` and the offline docs pages.
    ``cors_origins``: browser pages on these origins may call the API (CORS); none by default.
    """
    app = FastAPI(
        title=title,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )
    if docs:
        install_docs(app, "/openapi.json")
    install_error_handlers(app)
    if cors_origins:
        # Added before the request middleware, so it runs inside it: a preflight answer has
        # a request id and an access log line too.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=_CORS_HEADERS,
            expose_headers=_CORS_EXPOSED,
            max_age=600,
        )
    app.add_middleware(RequestContextMiddleware, component=component, max_body_bytes=max_body_bytes)
    return app
