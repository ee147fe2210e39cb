"""The monitor's Prometheus series (registered in the process-wide default registry, so the
kit's ``/metrics`` route serves them next to everything else)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

COMPONENT_READY = Gauge(
    "pocketpay_component_ready",
    "1 when the component's last readiness poll said ready or degraded, else 0",
    ["component"],
)
ALERTS_OPEN = Gauge("pocketpay_alerts_open", "Alerts announced and not yet resolved")
POLL_DURATION = Histogram(
    "pocketpay_monitor_poll_duration_seconds",
    "Duration of one poll of every target",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CHANNEL_DELIVERIES = Counter(
    "pocketpay_monitor_channel_deliveries_total",
    "Alert deliveries by channel and outcome",
    ["channel", "outcome"],
)
