"""Structured logs (structlog): JSON lines with the request id bound by the HTTP middleware.
Secrets never reach a log line: keys that look like credentials are masked.

``REQUEST_STATE`` is the current HTTP request's ``scope["state"]``, set by
``kit.httpapp.RequestContextMiddleware`` for the length of the request. Code that learns who
is calling, deep in a request and without a ``Request`` (the bearer token or API key check),
calls ``bind_principal`` so the request's later log lines and its access log line name them.
"""

from __future__ import annotations

import functools
import logging
import sys
from contextvars import ContextVar
from typing import Any

import structlog

_SECRET_KEYS = (
    "password",
    "token",
    "secret",
    "authorization",
    "stripe-signature",
    "api_key",
    "card",
)

REQUEST_STATE: ContextVar[dict[str, Any] | None] = ContextVar(
    "pocketpay_request_state", default=None
)


def bind_principal(user_id: str, key_id: str | None = None) -> None:
    """Name the caller of the current request (the user, and the API key when one was used)
    in its log lines from here on and in its access log line. Outside a request: log lines
    of the current context only."""
    found = {"user_id": user_id} if key_id is None else {"user_id": user_id, "key_id": key_id}
    state = REQUEST_STATE.get()
    if state is not None:
        state.update(found)
    structlog.contextvars.bind_contextvars(**found)


@functools.lru_cache(maxsize=4096)
def _is_secret(key: str) -> bool:
    """Log keys repeat from line to line: decided once per key name (a hot path: every
    request writes an access log line); bounded, should keys ever come from data."""
    low = key.lower()
    return any(s in low for s in _SECRET_KEYS)


def _mask(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in event:
        if _is_secret(key):
            event[key] = "***"
    return event


def configure(level: str = "INFO", json: bool = True) -> None:
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask,
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
