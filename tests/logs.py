"""Log lines as production writes them, for tests that read logs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog


@contextmanager
def rendered_logs() -> Iterator[list[str]]:
    """The lines logged while inside, each exactly as rendered by the configured processors
    (tests/conftest.py configures JSON, as in production), instead of being printed.

    ``structlog.testing.capture_logs`` would replace the processors, so the masking and the
    context variables merged into every line would go untested."""
    processors = structlog.get_config()["processors"]
    lines: list[str] = []

    def keep(_logger: Any, _name: str, rendered: Any) -> Any:
        lines.append(rendered)
        raise structlog.DropEvent

    processors.append(keep)  # the list bound loggers hold: cached loggers see it too
    try:
        yield lines
    finally:
        processors.remove(keep)


def parsed(lines: list[str]) -> list[dict[str, Any]]:
    """Every line is one JSON object."""
    return [json.loads(line) for line in lines]


def access_lines(lines: list[str], request_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in parsed(lines)
        if e.get("event") == "http.access" and e.get("request_id") == request_id
    ]
