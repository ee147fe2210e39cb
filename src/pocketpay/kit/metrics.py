"""Prometheus metrics shared by every component (one registry per process)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

HTTP_REQUESTS = Counter(
    "pocketpay_http_requests_total", "HTTP requests", ["component", "method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "pocketpay_http_request_duration_seconds",
    "HTTP request latency",
    ["component", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PAYMENTS = Counter("pocketpay_payments_total", "Payment state changes", ["status", "provider"])
PSP_CALLS = Counter("pocketpay_psp_calls_total", "PSP calls", ["operation", "outcome"])
PSP_LATENCY = Histogram("pocketpay_psp_call_duration_seconds", "PSP call latency", ["operation"])
BREAKER_STATE = Gauge(
    "pocketpay_breaker_state", "Circuit breaker state (0 closed, 1 half-open, 2 open)", ["name"]
)
LEDGER_TRANSFERS = Counter(
    "pocketpay_ledger_transfers_total", "Ledger transfers posted", ["code", "outcome"]
)
CONSUMER_LAG = Gauge(
    "pocketpay_consumer_lag_seconds", "Age of the oldest unconsumed event", ["consumer"]
)
CONSUMER_PENDING = Gauge("pocketpay_consumer_pending", "Events not yet consumed", ["consumer"])
OUTBOX_BACKLOG = Gauge("pocketpay_outbox_backlog", "Unpublished outbox events", ["component"])
OUTBOX_PUBLISHED = Counter("pocketpay_outbox_published_total", "Events relayed", ["component"])
RELAY_LATENCY = Histogram("pocketpay_outbox_relay_seconds", "Relay pass latency", ["component"])
BUS_PUBLISHED = Counter("pocketpay_bus_published_total", "Events published", ["component"])
BUS_CONSUMED = Counter("pocketpay_bus_consumed_total", "Events consumed", ["consumer"])
BUS_DEAD_LETTERED = Counter("pocketpay_bus_dead_lettered_total", "Dead letters", ["consumer"])
BUS_DEAD_LETTERS = Gauge(
    "pocketpay_bus_dead_letters",
    "Dead letters not replayed yet (set by the component's dead_letters readiness check)",
    ["component"],
)
BUS_MAX_DELIVERIES = Counter(
    "pocketpay_bus_max_deliveries_advisories_total",
    "JetStream gave up on a message (max-deliveries advisory; should never happen)",
    ["consumer"],
)
PAYMENTS_STUCK_ATTEMPTS = Gauge(
    "pocketpay_payments_stuck_attempts",
    "PSP attempts the reconciler gave up on (set by payments' stuck_attempts readiness check)",
)
WEBHOOKS = Counter("pocketpay_webhooks_total", "PSP webhooks received", ["outcome"])


def render() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST
