"""Structured logs (structlog): JSON lines with the request id bound by the HTTP middleware.
Secrets never reach a log line: keys that look like credentials are masked."""

from __future__ import annotations

import logging
import sys
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


def _mask(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in list(event):
        if any(s in key.lower() for s in _SECRET_KEYS):
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
