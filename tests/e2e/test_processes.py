"""Scale mode end to end: gateway, two payments processes, ledger and sandbox, each its own
``pocketpay serve`` process on PostgreSQL + NATS JetStream, driven over HTTP only.

The tests share one fleet (starting it is the expensive part) and run in file order: health
first, then the money flows, then the internal APIs, and last a graceful shutdown followed by
``pocketpay check`` on the database the processes leave behind.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e import fleet as fl
from tests.e2e import nginx as ngx
from tests.e2e.fleet import INTERNAL_TOKEN, Fleet, until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.nats]

PASSWORD = "correct-horse-battery"
LAYOUT = {"sandbox": 1, "ledger": 1, "payments": 2, "gateway": 2}
FAST = {
    "POCKETPAY_SANDBOX__SETTLE_DELAY_SECONDS": "0.5",
    "POCKETPAY_PSP__SETTLE_POLL_SECONDS": "0.2",
    "POCKETPAY_PSP__ATTEMPT_RETRY_SECONDS": "2",
    "POCKETPAY_BUS__RELAY_POLL_SECONDS": "0.1",
    "POCKETPAY_BUS__RETRY_DELAY_MS": "50",
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with fl.running_fleet(tmp_path_factory.mktemp("e2e"), LAYOUT, FAST) as running:
        yield running


@pytest.fixture(scope="module")
def http(fleet: Fleet) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fleet.gateway, timeout=15.0) as client:
        yield client


@pytest.fixture(scope="module")
def internal() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0, headers={"X-Internal-Token": INTERNAL_TOKEN}) as client:
        yield client


# -- a tiny API driver -----------------------------------------------------------------------


class User:
    def __init__(self, http: httpx.Client, body: dict[str, Any]) -> None:
        self.http = http
        self.id: str = body["user"]["id"]
        self.email: str = body["user"]["email"]
        self.headers = {"Authorization": f"Bearer {body['access_token']}"}

    def post(self, path: str, json: Any = None, key: str | None = None) -> httpx.Response:
        headers = self.headers | {"Idempotency-Key": key or uuid.uuid4().hex}
        return self.http.post(f"/api/v1{path}", json=json, headers=headers)

    def get(self, path: str, **params: Any) -> Any:
        r = self.http.get(f"/api/v1{path}", headers=self.headers, params=params)
        assert r.status_code == 200, r.text
        return r.json()

    def pay(self, amount_minor: int, key: str | None = None) -> dict[str, Any]:
        body = {
            "amount_minor": amount_minor,
            "currency": "USD",
            "payment_method": "pm_card_visa",
            "capture_method": "automatic",
        }
        r = self.post("/payments", body, key)
        assert r.status_code == 202, r.text
        payment: dict[str, Any] = r.json()
        return payment

    def payment_in(self, pid: str, *statuses: str, timeout: float = 30.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            p: dict[str, Any] = self.get(f"/payments/{pid}")
            return p if p["status"] in statuses else None

        return until(check, timeout, f"payment {pid} in {statuses}")

    def wallet(self) -> dict[str, Any]:
        for w in self.get("/wallets")["data"]:
            if w["currency"] == "USD":
                return dict(w)
        return {"currency": "USD", "available_minor": 0, "pending_minor": 0, "posted_minor": 0}

    def available(self, amount_minor: int, timeout: float = 30.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            w = self.wallet()
            return w if w["available_minor"] == amount_minor else None

        return until(check, timeout, f"{self.email} available == {amount_minor}")


def signup(http: httpx.Client, name: str) -> User:
    email = f"{name}-{uuid.uuid4().hex[:8]}@example.com"
    r = http.post("/api/v1/auth/signup", json={"email": email, "password": PASSWORD, "name": name})
    assert r.status_code == 201, r.text
    return User(http, r.json())


# -- tests -----------------------------------------------------------------------------------


def test_every_process_is_ready_and_explains_its_dependencies(
    fleet: Fleet, http: httpx.Client
) -> None:
    expected_checks = {
        "gateway": {"db", "payments", "ledger"},
        "payments": {"db", "bus", "dead_letters", "stuck_attempts", "provider"},
        "ledger": {"db", "bus", "dead_letters", "consumer_lag"},
        "sandbox": {"faults"},
    }
    for p in fleet.procs:
        alive = http.get(f"{p.url}/healthz")
        assert alive.status_code == 200, (p.name, alive.text)
        assert alive.json()["status"] == "ok"
        ready = http.get(f"{p.url}/readyz")
        assert ready.status_code == 200, (p.name, ready.text)
        body = ready.json()
        assert body["status"] == "ready", (p.name, body)
        assert set(body["checks"]) == expected_checks[p.component], (p.name, body)
        assert all(v == "ok" for v in body["checks"].values()), (p.name, body)
        deps = http.get(f"{p.url}/health/deps")
        assert deps.status_code == 200, (p.name, deps.text)
        detail = deps.json()
        assert detail["component"] == p.component
        assert detail["uptime"].endswith("s")
        for name, check in detail["checks"].items():
            assert check["status"] == "ok", (p.name, name, check)
            assert check["latency_ms"] >= 0
    # Details that prove each process reaches what it should: PostgreSQL, NATS, the sandbox.
    ledger_deps = http.get(f"{fleet.one('ledger').url}/health/deps").json()["checks"]
    assert ledger_deps["bus"]["latency_ms"] >= 0 and ledger_deps["db"]["latency_ms"] >= 0
    psp = http.get(f"{fleet.one('payments').url}/health/deps").json()["checks"]["provider"]
    assert psp["breaker"] == "closed", psp
    sandbox = http.get(f"{fleet.one('sandbox').url}/health/deps").json()["checks"]["webhooks"]
    assert sandbox["url"] == f"{fleet.gateway}/api/v1/webhooks/stripe"


def test_top_up_transfer_and_refund_across_processes(fleet: Fleet, http: httpx.Client) -> None:
    alice, bob = signup(http, "alice"), signup(http, "bob")
    key = uuid.uuid4().hex
    payment = alice.pay(5000, key)
    assert payment["status"] == "created"

    # Through payments (PSP call to the sandbox process), NATS, the ledger, and the webhook
    # and settlement paths back.
    settled = alice.payment_in(payment["id"], "settled")
    assert settled["amount_captured_minor"] == 5000
    timeline = alice.get(f"/payments/{payment['id']}/events")["data"]
    assert [e["to_status"] for e in timeline] == ["created", "authorized", "captured", "settled"]
    wallet = alice.available(5000)
    assert wallet == {
        "id": f"wal_{alice.id}_USD",
        "object": "wallet",
        "currency": "USD",
        "available_minor": 5000,
        "pending_minor": 0,
        "posted_minor": 5000,
        "debt_minor": 0,
        "debt_account_id": None,
    }
    # The idempotency store is shared (PostgreSQL): a retry replays, it does not pay twice.
    again = alice.post(
        "/payments",
        {
            "amount_minor": 5000,
            "currency": "USD",
            "payment_method": "pm_card_visa",
            "capture_method": "automatic",
        },
        key,
    )
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == payment["id"]

    r = alice.post(
        "/transfers",
        {"recipient": bob.email, "amount_minor": 3000, "currency": "USD", "note": "rent"},
    )
    assert r.status_code == 201, r.text
    transfer = r.json()
    assert transfer["status"] == "posted"
    assert bob.available(3000)["posted_minor"] == 3000
    assert alice.wallet()["available_minor"] == 2000
    assert alice.get(f"/transfers/{transfer['id']}")["id"] == transfer["id"]

    # More than is left: the ledger refuses, the code travels back through payments and gateway.
    r = alice.post(f"/payments/{payment['id']}/refunds", {})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "ledger.insufficient_funds"
    r = alice.post(f"/payments/{payment['id']}/refunds", {"amount_minor": 2000})
    assert r.status_code == 202, r.text
    refund = r.json()
    assert refund["status"] == "succeeded", refund
    alice.available(0)
    assert alice.get(f"/refunds/{refund['id']}")["amount_minor"] == 2000
    after = alice.get(f"/payments/{payment['id']}")
    assert after["amount_refunded_minor"] == 2000
    assert after["status"] == "settled"  # a partial refund does not make it "refunded"
    assert bob.wallet()["available_minor"] == 3000

    codes = {e["code"] for e in alice.get("/wallets/USD/entries")["data"]}
    assert {"wallet_transfer", "refund"} <= codes and any(c.startswith("card_") for c in codes)

    check = fleet.cli("check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "ledger consistent" in check.stdout


def test_payments_processes_share_the_created_events(fleet: Fleet, http: httpx.Client) -> None:
    """Both payments processes consume from the one durable consumer; each event is handled
    once in all (the bus dedupes relays, the inbox dedupes redeliveries)."""
    carol = signup(http, "carol")
    procs = fleet.of("payments")
    assert len(procs) == 2

    def consumed() -> list[float]:
        return [
            fl.metric(
                http.get(f"{p.url}/metrics").text,
                "pocketpay_bus_consumed_total",
                consumer="payments-processor",
            )
            for p in procs
        ]

    before = consumed()
    count = 8
    ids = []
    for _ in range(count):
        ids.append(carol.pay(100)["id"])
        time.sleep(0.05)  # spread over time so both waiting pull requests get a turn
    for pid in ids:
        carol.payment_in(pid, "captured", "settled")
    carol.available(100 * count)
    delta = [a - b for a, b in zip(consumed(), before, strict=True)]
    assert sum(delta) == count, delta
    assert all(d > 0 for d in delta), f"one payments process did all the work: {delta}"


def test_internal_endpoints_answer_with_the_token_only(
    fleet: Fleet, http: httpx.Client, internal: httpx.Client
) -> None:
    dave = signup(http, "dave")
    payment = dave.pay(1234)
    dave.payment_in(payment["id"], "captured", "settled")
    dave.available(1234)
    ledger = fleet.one("ledger").url

    wallets = internal.get(f"{ledger}/wallets", params={"owner_id": dave.id})
    assert wallets.status_code == 200, wallets.text
    wallet = wallets.json()["data"][0]
    assert wallet["credits_posted"] == 1234
    assert wallet["available_minor"] == 1234

    entry = dave.get("/wallets/USD/entries")["data"][0]
    entries = internal.get(f"{ledger}/wallets/USD/entries", params={"owner_id": dave.id})
    assert entries.status_code == 200, entries.text
    assert entries.json()["data"][0]["id"] == entry["id"]
    assert entries.json()["data"][0]["amount_minor"] == 1234
    # The generic ledger endpoints are gone: nothing outside the ledger moves arbitrary money.
    gone = internal.post(f"{ledger}/transfers", json={})
    assert gone.status_code in (404, 405), gone.text

    def drained() -> dict[str, Any] | None:
        body: dict[str, Any] = internal.get(f"{ledger}/health/backlog").json()
        return body if body["pending"] == 0 else None

    backlog = until(drained, 10, "ledger backlog drained")
    assert backlog["consumer"] == "ledger"
    assert backlog["oldest_age_seconds"] == 0

    for p in fleet.of("payments"):
        provider = internal.get(f"{p.url}/health/provider")
        assert provider.status_code == 200, provider.text
        assert provider.json()["status"] == "ok", provider.json()
        assert provider.json()["breaker"] == "closed"

    # Without the shared secret the internal APIs refuse; health endpoints stay open for probes.
    for url in (
        f"{ledger}/wallets?owner_id={dave.id}",
        f"{ledger}/wallet-transfers?owner_id={dave.id}",
        f"{ledger}/health/backlog",
        f"{fleet.one('payments').url}/health/provider",
    ):
        for headers in ({}, {"X-Internal-Token": "wrong"}):
            r = http.get(url, headers=headers)
            assert r.status_code == 401, (url, r.status_code, r.text)
            assert r.json()["code"] == "auth.internal_token"


def test_nginx_terminates_tls_in_front_of_both_gateways(fleet: Fleet) -> None:
    """deploy/nginx/pocketpay.conf in front of the two gateway processes: a whole top-up over
    HTTPS, and both gateways take part (the upstream balances, JWTs work on either)."""
    gateways = fleet.of("gateway")
    assert len(gateways) == 2

    def api_requests() -> list[float]:
        totals = []
        for g in gateways:
            text = httpx.get(f"{g.url}/metrics", timeout=5).text
            totals.append(
                sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith('pocketpay_http_requests_total{component="gateway"')
                    and 'route="/api/v1/' in line
                )
            )
        return totals

    before = api_requests()
    with (
        ngx.running(fleet.workdir / "nginx", [g.port for g in gateways]) as proxy,
        httpx.Client(base_url=proxy.https, verify=False, timeout=15) as tls,
    ):
        erin = signup(tls, "erin")
        payment = erin.pay(2500)
        assert erin.payment_in(payment["id"], "settled")["amount_captured_minor"] == 2500
        assert erin.available(2500)["posted_minor"] == 2500
        assert tls.get("/readyz").json()["status"] == "ready"
        assert tls.get("/health/deps").status_code == 200  # loopback is an operator address
    delta = [a - b for a, b in zip(api_requests(), before, strict=True)]
    assert all(d > 0 for d in delta), f"requests per gateway through nginx: {delta}"


def test_graceful_shutdown_leaves_a_consistent_ledger(fleet: Fleet) -> None:
    codes = fleet.stop()
    # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal (so the exit
    # status says why it stopped): -SIGTERM is a clean stop, None means it had to be killed.
    assert set(codes.values()) <= {0, -signal.SIGTERM}, (codes, fleet.logs())
    for p in fleet.procs:
        assert "Traceback" not in p.log_path.read_text(errors="replace"), p.log_tail(80)
    check = fleet.cli("check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "ledger consistent" in check.stdout
