"""What every component's FastAPI app shares: problem+json errors, request ids, metrics, a
request body limit. Errors are translated to HTTP here, once, whatever the component raised."""

from __future__ import annotations

import contextlib
import time
import uuid
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pocketpay.kit.errors import AppError
from pocketpay.kit.metrics import HTTP_LATENCY, HTTP_REQUESTS
from pocketpay.kit.tracing import server_span

log = structlog.get_logger(__name__)

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
    """Request id (taken from ``X-Request-Id`` or made), body size limit, metrics by route."""

    def __init__(self, app: ASGIApp, component: str, max_body_bytes: int = 64 * 1024) -> None:
        self.app = app
        self.component = component
        self.max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        declared = headers.get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body:
            await _too_large(scope, receive, send, rid, self.max_body)
            return
        seen = 0
        status_holder = {"status": 500}
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
                msg.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(msg)

        start = time.perf_counter()
        structlog.contextvars.bind_contextvars(request_id=rid)
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
                structlog.contextvars.unbind_contextvars("request_id")
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                span.update_name(f"{self.component} {method} {template}")
                span.set_attribute("http.response.status_code", status_holder["status"])
                status = str(status_holder["status"])
                HTTP_REQUESTS.labels(self.component, method, template, status).inc()
                HTTP_LATENCY.labels(self.component, method, template).observe(
                    time.perf_counter() - start
                )


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
    resp = JSONResponse(body, status_code=413, media_type=PROBLEM, headers={"X-Request-Id": rid})
    await resp(scope, receive, send)


def new_app(
    component: str, *, title: str, max_body_bytes: int = 64 * 1024, docs: bool = False
) -> FastAPI:
    app = FastAPI(
        title=title,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware, component=component, max_body_bytes=max_body_bytes)
    return app
