"""OpenTelemetry helpers: trace context travels in HTTP headers and in event envelopes."""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject

tracer = trace.get_tracer("pocketpay")


def current_trace_context() -> dict[str, str]:
    """W3C trace context of the current span, for an event envelope or an outgoing call."""
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier


def attach_trace_context(carrier: dict[str, str]) -> object:
    """Make ``carrier``'s trace the parent of spans started next; returns a detach token."""
    return otel_context.attach(extract(carrier))


def detach(token: object) -> None:
    otel_context.detach(token)  # type: ignore[arg-type]
