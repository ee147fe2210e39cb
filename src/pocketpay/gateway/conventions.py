"""Request conventions of the public API, enforced on every route (Stripe's behaviour):

* a query parameter the route does not define is a 400 ``request.unknown_parameter`` naming
  it, instead of being ignored (a misspelt filter would otherwise list everything);
* a body that is not JSON on a route that takes JSON is a 415
  ``request.unsupported_media_type`` (a form-encoded ``curl -d`` would otherwise be a
  puzzling validation error);
* a method the path does not serve is a 405 ``request.method_not_allowed`` with ``Allow``.

The checks cost nothing per request beyond a look at the query string and the content type:
the route's query names are computed once, when the route is built.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import Route

from pocketpay.kit.errors import AppError


class UnknownParameter(AppError):
    code = "request.unknown_parameter"
    status = 400
    title = "Unknown query parameter"


class UnsupportedMediaType(AppError):
    code = "request.unsupported_media_type"
    status = 415
    title = "Unsupported media type"


class MethodNotAllowed(AppError):
    code = "request.method_not_allowed"
    status = 405
    title = "Method not allowed"


def _query_names(dependant: Dependant) -> frozenset[str]:
    names: set[str] = set()
    todo = [dependant]
    while todo:
        dep = todo.pop()
        names.update(field.alias for field in dep.query_params)
        todo.extend(dep.dependencies)
    return frozenset(names)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class PublicRoute(APIRoute):
    """An ``APIRoute`` that refuses unknown query parameters and non-JSON bodies."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        allowed = _query_names(self.dependant)
        takes_json = self.body_field is not None

        async def checked(request: Request) -> Response:
            if request.scope["query_string"]:
                unknown = [k for k in request.query_params if k not in allowed]
                if unknown:
                    known = ", ".join(sorted(allowed)) or "none"
                    raise UnknownParameter(
                        f"Unknown query parameter {unknown[0]!r}; this endpoint takes: {known}.",
                        errors=[
                            {"field": k, "message": "unknown parameter", "type": "unknown"}
                            for k in unknown[:50]
                        ],
                    )
            if takes_json:
                ctype = request.headers.get("content-type")
                if ctype and not _is_json(ctype) and _has_body(request):
                    raise UnsupportedMediaType(
                        f"The body is {ctype.split(';')[0]!r}; send JSON with "
                        "'Content-Type: application/json'."
                    )
            return await handler(request)

        return checked


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() != "0"
    return "transfer-encoding" in request.headers


HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


def refuse_other_methods(router: APIRouter) -> None:
    """After every route of ``router`` is declared: each of its paths answers the methods it
    does not serve with 405 and ``Allow`` (not in the OpenAPI document)."""
    methods: dict[str, set[str]] = defaultdict(set)
    for route in router.routes:
        if isinstance(route, APIRoute):
            methods[route.path] |= route.methods or set()
    for path, served in methods.items():
        allow = ", ".join(sorted(served))

        async def refuse(request: Request, allow: str = allow) -> Response:
            raise MethodNotAllowed(
                f"{request.method} is not allowed here; use {allow}.", headers={"Allow": allow}
            )

        others = sorted(HTTP_METHODS - served)
        router.routes.append(Route(path, refuse, methods=others, include_in_schema=False))


def operation_id(route: APIRoute) -> str:
    """A route's OpenAPI operationId: its handler's name, unique within the public API."""
    return route.name
