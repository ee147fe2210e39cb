"""deploy/: the nginx site is valid and behaves as documented (TLS termination, balancing over
several gateways, proxy headers, unbuffered event streams, rate limits), checked against a
real nginx in front of two stub gateways; the systemd unit and the compose file are sound.
Each check skips when its tool (nginx, systemd-analyze, docker-compose) is not installed."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e import nginx as ngx

DEPLOY = ngx.ROOT / "deploy"


class _StubGateway(BaseHTTPRequestHandler):
    """Answers every request with what it saw; /api/v1/stream is a slow event stream."""

    server_version = "stub-gateway"

    def log_message(self, *_args: Any) -> None:  # quiet
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith("/api/v1/stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for i in range(2):
                self.wfile.write(f"data: {i}\n\n".encode())
                self.wfile.flush()
                time.sleep(1.0)
            return
        seen = {
            "port": self.connection.getsockname()[1],
            "path": self.path,
            "method": self.command,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode(errors="replace"),
        }
        data = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer


@pytest.fixture(scope="module")
def stubs() -> Iterator[list[int]]:
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _StubGateway) for _ in range(2)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    try:
        yield [s.server_address[1] for s in servers]
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


@pytest.fixture(scope="module")
def proxy(stubs: list[int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ngx.Nginx]:
    with ngx.running(tmp_path_factory.mktemp("nginx"), stubs) as running:
        yield running


def test_nginx_site_passes_nginx_t(tmp_path: Path) -> None:
    binary = ngx.nginx_binary()
    site = ngx.render_site(tmp_path, [8011, 8021], 8443, 8080)
    result = ngx.check_config(binary, ngx.render_main(tmp_path, site))
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_tls_terminates_and_requests_spread_over_the_gateways(
    proxy: ngx.Nginx, stubs: list[int]
) -> None:
    with httpx.Client(base_url=proxy.https, verify=False, timeout=5) as client:
        seen = [client.get("/docs").json() for _ in range(8)]
        r = client.get("/api/v1/me", headers={"X-Request-Id": "req-from-client"})
    assert {s["port"] for s in seen} == set(stubs), seen
    headers = r.json()["headers"]
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-real-ip"] == "127.0.0.1"
    assert headers["x-request-id"] == "req-from-client"
    assert headers["host"] == "127.0.0.1"
    assert r.headers["strict-transport-security"].startswith("max-age=")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "nginx/" not in r.headers.get("server", "")  # server_tokens off
    # Without a caller's id nginx makes one (32 hex digits) that the gateway will log.
    made = seen[0]["headers"]["x-request-id"]
    assert len(made) == 32 and int(made, 16) >= 0


def test_plain_http_redirects_to_https(proxy: ngx.Nginx) -> None:
    r = httpx.get(f"{proxy.http}/api/v1/me?x=1", timeout=5)
    assert r.status_code == 308
    assert r.headers["location"].startswith("https://") and r.headers["location"].endswith(
        "/api/v1/me?x=1"
    )


def test_webhook_bodies_reach_the_gateway_byte_for_byte(proxy: ngx.Nginx) -> None:
    raw = '{"id":"evt_1","type":"payment_intent.succeeded",  "data":{}}'
    r = httpx.post(
        f"{proxy.https}/api/v1/webhooks/stripe",
        content=raw,
        headers={"Stripe-Signature": "t=1,v1=abc", "Content-Type": "application/json"},
        verify=False,
        timeout=5,
    )
    assert r.json()["body"] == raw
    assert r.json()["headers"]["stripe-signature"] == "t=1,v1=abc"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/internal/ledger/wallet-transfers"),
        ("GET", "/internal/ledger/wallets?owner_id=u1"),
        ("POST", "/internal/payments/psp-events"),
        ("GET", "/internal/payments/metrics"),
        ("GET", "/internal"),
        ("GET", "/%69nternal/ledger/wallets"),  # percent-encoded
        ("GET", "//internal/ledger/wallets"),  # doubled slash
        ("GET", "/components/payments/readyz"),
        ("GET", "/components/ledger/health/backlog"),
        ("GET", "/components"),
    ],
)
def test_internal_and_component_paths_are_denied(proxy: ngx.Nginx, method: str, path: str) -> None:
    """404 from nginx itself: the stub gateways answer every request with 200 and JSON."""
    url = httpx.URL(proxy.https).copy_with(raw_path=path.encode())  # sent as written
    with httpx.Client(verify=False, timeout=5) as client:
        r = client.request(method, url, headers={"X-Internal-Token": "guess"})
    assert r.status_code == 404, (path, r.status_code, r.text[:200])
    assert "application/json" not in r.headers.get("content-type", "")
    # The neighbours still reach the gateways.
    with httpx.Client(base_url=proxy.https, verify=False, timeout=5) as client:
        assert client.get("/api/v1/internal-notes").status_code == 200


def test_event_streams_are_not_buffered(proxy: ngx.Nginx) -> None:
    started = time.monotonic()
    with (
        httpx.Client(verify=False, timeout=10) as client,
        client.stream("GET", f"{proxy.https}/api/v1/stream/payments") as r,
    ):
        chunks = r.iter_text()
        first = next(chunks)
        first_after = time.monotonic() - started
        rest = "".join(chunks)
    assert first.startswith("data: 0"), first
    assert "data: 1" in first + rest
    # The stub sends one event, waits a second, sends the next: buffered, both come at once.
    assert first_after < 0.8, f"first event after {first_after:.2f}s: nginx buffered the stream"


def test_login_attempts_are_rate_limited(proxy: ngx.Nginx) -> None:
    with httpx.Client(base_url=proxy.https, verify=False, timeout=5) as client:
        codes = [client.post("/api/v1/auth/login", json={}).status_code for _ in range(30)]
        other = client.get("/api/v1/payments")
    assert codes.count(429) >= 10, codes  # 5 r/s with a burst of 10
    assert codes[:10] == [200] * 10, codes
    assert other.status_code == 200  # a separate zone: the API itself is not throttled


def test_systemd_unit_is_valid(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    for name in ("pocketpay@.service", "pocketpay.target"):
        shutil.copy(DEPLOY / "systemd" / name, tmp_path / name)
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / "pocketpay@gateway-8011.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # Only complaints about this host (no pocketpay user, no /opt/pocketpay) are acceptable.
    problems = [
        line for line in result.stderr.splitlines() if "pocketpay@" in line or "target" in line
    ]
    assert problems == [], result.stderr


def test_systemd_instance_name_splits_into_component_and_port() -> None:
    unit = (DEPLOY / "systemd" / "pocketpay@.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    # Undo systemd's own escapes ($$ -> $, %% -> %), put the instance in, run what sh gets.
    argv = exec_start.removeprefix("ExecStart=").replace("$$", "$").replace("%%", "%")
    script = argv.split("'")[1]
    out = subprocess.run(
        ["/bin/sh", "-c", script.replace('exec "$0"', 'echo "$0"'), "pocketpay", "payments-8023"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert out.stdout.split() == ["pocketpay", "serve", "payments", "--port", "8023"]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return data


def test_compose_describes_the_scale_topology() -> None:
    services = _compose()["services"]
    assert set(services) >= {
        "postgres", "nats", "migrate", "sandbox", "ledger", "payments",
        "gateway-1", "gateway-2", "nginx",
    }  # fmt: skip
    assert services["payments"]["deploy"]["replicas"] == 2
    assert "-js" in services["nats"]["command"]
    urls = json.loads(services["gateway-1"]["environment"]["POCKETPAY_URLS"])
    assert set(urls) == {"gateway", "ledger", "payments", "sandbox"}
    for name in ("sandbox", "ledger", "payments", "gateway-1", "gateway-2"):
        command = services[name]["command"]
        assert command[:2] == ["serve", name.split("-")[0]], command
        port = command[command.index("--port") + 1]
        assert services[name]["healthcheck"]["test"][-1] == port, name
    # The nginx container points the upstream at the gateway containers.
    script = services["nginx"]["command"][-1]
    assert "gateway-1:8011" in script and "gateway-2:8011" in script


def test_compose_file_validates_with_docker_compose() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed")
    env = {"POSTGRES_PASSWORD": "x", "POCKETPAY_INTERNAL_TOKEN": "y", "POCKETPAY_JWT_SECRET": "z"}
    result = subprocess.run(
        [binary, "-f", str(DEPLOY / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    assert result.returncode == 0, result.stderr
