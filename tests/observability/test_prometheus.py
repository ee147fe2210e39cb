"""/metrics parses with prometheus_client's parser; deploy/prometheus validates with promtool."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import Stack

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


async def test_metrics_parse_and_count_requests_by_route_template(sqlite_stack: Stack) -> None:
    alice = await sqlite_stack.user()
    await sqlite_stack.pay(alice, 700)
    for path in ("/metrics", "/components/payments/metrics", "/components/ledger/metrics"):
        r = await sqlite_stack.http.get(path)
        assert r.status_code == 200
        families = {f.name: f for f in text_string_to_metric_families(r.text)}
        requests = families["pocketpay_http_requests"]
        routes = {s.labels["route"] for s in requests.samples}
        # Route templates, not raw paths: an id never becomes a label value.
        assert "/api/v1/payments/{payment_id}" in routes
        assert not any("pay_" in route for route in routes)
        assert "pocketpay_psp_calls" in families
        assert "pocketpay_payments" in families


def _promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool not installed (Debian package 'prometheus'; .ci/run installs it)")
    return tool


def test_prometheus_config_is_valid() -> None:
    out = subprocess.run(
        [_promtool(), "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_prometheus_rules_are_valid() -> None:
    out = subprocess.run(
        [_promtool(), "check", "rules", str(DEPLOY / "prometheus" / "pocketpay-rules.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 8 rules found" in out.stdout


def test_grafana_dashboard_queries_known_metrics() -> None:
    dash = json.loads((DEPLOY / "grafana" / "pocketpay-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for metric in (
        "pocketpay_component_ready",
        "pocketpay_consumer_lag_seconds",
        "pocketpay_psp_calls_total",
        "pocketpay_webhooks_total",
        "pocketpay_http_request_duration_seconds_bucket",
    ):
        assert metric in exprs
