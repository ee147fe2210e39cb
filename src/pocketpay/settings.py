"""One typed settings tree. Defaults are the embedded mode: one process, SQLite, in-process bus,
the sandbox PSP. Every value can be set from the environment (``POCKETPAY_`` prefix, ``__`` for
nesting, e.g. ``POCKETPAY_PSP__API_KEY``) or from a ``.env`` file; secrets may be given as a
path with the ``_FILE`` variables documented in docs/operations.md.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

COMPONENTS = (
    "gateway",
    "payments",
    "ledger",
    "billing",
    "notifications",
    "monitor",
    "sandbox",
)


class AuthSettings(BaseModel):
    jwt_secret: str = ""  # empty: generated once and kept in <var_dir>/jwt_secret (mode 0600)
    jwt_issuer: str = "pocketpay"
    jwt_audience: str = "pocketpay-api"
    access_ttl_seconds: int = 900
    refresh_ttl_seconds: int = 30 * 24 * 3600
    admin_emails: list[str] = Field(default_factory=list)  # signups with these emails get `admin`


class RateLimitSettings(BaseModel):
    """Token buckets (``gateway/ratelimit.py``): a rate per second and a burst, per API key,
    per user (every key and session of the user together) and per client IP on the
    unauthenticated endpoints (signup, login, refresh). In memory, per process: with N gateway
    processes a client gets up to N times these."""

    enabled: bool = True
    key_per_second: float = Field(default=100.0, gt=0)
    key_burst: int = Field(default=200, ge=1)
    user_per_second: float = Field(default=200.0, gt=0)
    user_burst: int = Field(default=400, ge=1)
    ip_per_second: float = Field(default=20.0, gt=0)
    ip_burst: int = Field(default=200, ge=1)


class PspSettings(BaseModel):
    provider: Literal["sandbox", "stripe"] = "sandbox"
    api_key: str = "sk_test_pocketpay_sandbox"
    webhook_secret: str = "whsec_pocketpay_sandbox"
    # Base URL of the Stripe API. Empty means the built-in sandbox of this process.
    api_base: str = ""
    timeout_seconds: float = 5.0
    ping_timeout_seconds: float = 1.0
    breaker_failure_threshold: int = 5
    breaker_reset_seconds: float = 30.0
    webhook_tolerance_seconds: int = 300
    # How often payments asks the PSP whether captured funds are available (settlement).
    settle_poll_seconds: float = 1.0
    # Lost dispute webhooks: how often the PSP's disputes opened in the last
    # ``dispute_sweep_window_days`` are listed and what we miss is applied.
    dispute_sweep_seconds: float = Field(default=300.0, gt=0)
    dispute_sweep_window_days: float = Field(default=30.0, gt=0)
    # How long a created payment may wait for its PSP attempt before the reconciler asks the
    # PSP again (same idempotency key). Long enough not to race the consumer under a backlog.
    attempt_retry_seconds: float = 30.0
    # Resumptions of one PSP attempt before it is flagged stuck for an operator.
    attempt_max_tries: int = 10
    # Admission control: with this many payments waiting for their PSP answer (status
    # created), new creates get 503 payments.busy + Retry-After instead of starving the
    # pipeline (payments.admission). 0 = no limit.
    max_unauthorized: int = Field(default=256, ge=0)


class SandboxSettings(BaseModel):
    api_key: str = "sk_test_pocketpay_sandbox"
    webhook_secret: str = "whsec_pocketpay_sandbox"
    # Where the sandbox posts its signed webhooks. Empty: the gateway of this process.
    webhook_url: str = ""
    settle_delay_seconds: float = 3.0
    # How long after evidence is submitted the sandbox decides a dispute (on its next tick).
    dispute_decision_seconds: float = 0.0
    # A payout goes in transit, then arrives (paid or failed), this long after it is made.
    payout_transit_seconds: float = 1.0
    payout_arrival_seconds: float = 3.0
    # /_sandbox/faults and /_sandbox/tick (fault injection, settlement on demand) exist only
    # when this is true: tests and benchmarks turn it on, a running PocketPay keeps it off.
    ops_enabled: bool = False
    # The sandbox's own database (it plays the outside world: not PocketPay's database, no
    # migrations). Empty: sqlite+aiosqlite:///<var_dir>/sandbox.db, filled in by Settings.
    database_url: str = ""


class CheckSettings(BaseModel):
    """``pocketpay check`` (the three-way reconciliation, ``pocketpay.reconcile``)."""

    # A hold (pending transfer) still open this long after it was made, while its payment or
    # refund has reached a final state, is a finding.
    hold_deadline_seconds: float = 3600.0
    # Younger than this, a disagreement in flight (an event not consumed yet, a PSP answer
    # not applied yet) is not a finding.
    grace_seconds: float = 300.0


class BusSettings(BaseModel):
    max_deliver: int = 5
    retry_delay_ms: int = 200
    # Redelivery backoff: retry_delay_ms * 2**(attempt-1), capped here. A consumer retries
    # without limit while the dead-letter write fails (database down), so the cap matters.
    retry_cap_ms: int = 30_000
    ack_wait_seconds: float = 30.0
    # NATS: messages of one pulled batch a consumer handles at once, per process (each is
    # acked or nak'ed on its own). 1 handles a batch one message at a time, in stream order.
    # The payments consumer makes a PSP round trip per message, so its throughput per process
    # is about consumer_concurrency / PSP latency. Keep it below the database pool
    # (db_pool_size, plus as much overflow) with room for requests.
    consumer_concurrency: int = Field(default=16, ge=1)
    stream: str = "POCKETPAY"
    # Prepended to every NATS subject, so deployments sharing a NATS server stay apart.
    subject_prefix: str = ""
    relay_poll_seconds: float = 0.5
    relay_batch: int = 200
    # An outbox row whose publish failed this many passes in a row while the bus answers
    # (a poison row) is dead-lettered so the rows behind it go out.
    publish_max_failures: int = 10


class FxSettings(BaseModel):
    """Currency conversions (``ledger/conversions.py``)."""

    # An ECB reference rates file (eurofxref.csv or eurofxref-daily.xml), read again when it
    # changes. Empty: the built-in table (``ledger.fx.STATIC``).
    rates_file: str = ""
    fee_bps: int = Field(default=50, ge=0, le=1000)  # of the amount converted, rounded up
    quote_ttl_seconds: float = Field(default=300.0, gt=0)


class BillingSettings(BaseModel):
    """Billing (``pocketpay.billing``): the scheduler, dunning and the test clock."""

    # How often the scheduler looks for due renewals, retries and expiries (billing time).
    scheduler_interval_seconds: float = Field(default=5.0, gt=0)
    # Dunning: waits in days, each from the previous failed charge (Stripe's custom schedule).
    dunning_schedule_days: list[int] = Field(default_factory=lambda: [2, 5, 7, 7])
    # After the last retry fails: canceled (the invoice is written off) or unpaid.
    dunning_final_state: Literal["canceled", "unpaid"] = "canceled"
    # A subscription whose first invoice is not paid this long after it started expires.
    incomplete_expire_hours: float = Field(default=23.0, gt=0)
    # A charge whose answer was not applied (a crash, a timeout) is asked again, with the
    # same ids, once it has been pending this long (wall time).
    resume_after_seconds: float = Field(default=60.0, ge=0)
    # Renewals and charges one scheduler pass runs at once (PSP and ledger calls in flight).
    max_concurrent_charges: int = Field(default=8, ge=1)
    # POST /api/v1/admin/test-clock/advance: only with the sandbox PSP and this on.
    test_clock: bool = True
    issuer_name: str = "PocketPay"


class StreamSettings(BaseModel):
    """Live updates (``gateway/streams.py``): the per-user event log and its SSE/WS streams."""

    retention_hours: float = Field(default=24.0, gt=0)  # older log rows are purged
    poll_seconds: float = Field(default=1.0, gt=0)  # safety net behind the fan-out wakes
    heartbeat_seconds: float = Field(default=15.0, gt=0)
    # Per user and per gateway process (connections are counted in memory).
    max_connections_per_user: int = Field(default=5, ge=1)
    queue_max: int = Field(default=256, ge=1)  # frames waiting per connection, then disconnect
    fanout_prefix: str = "pocketpay.stream."  # NATS core subjects of the wakes (not JetStream)


class MonitorSettings(BaseModel):
    interval_seconds: float = 15.0
    poll_timeout_seconds: float = 5.0
    # component -> base URL; empty means the /components/<component>/ paths of this process.
    targets: dict[str, str] = Field(default_factory=dict)
    fail_threshold: int = 3
    recover_threshold: int = 2
    lag_threshold_seconds: float = 30.0
    psp_error_rate_threshold: float = 0.20
    psp_error_window_seconds: float = 300.0
    psp_min_calls: int = 5
    flap_window_seconds: float = 600.0
    flap_threshold: int = 4
    reminder_seconds: float = 1800.0
    slack_webhook_url: str = ""
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = True
    email_from: str = "pocketpay-monitor@localhost"
    email_to: list[str] = Field(default_factory=list)
    channel_timeout_seconds: float = 5.0
    channel_retries: int = 3


class NotificationsSettings(BaseModel):
    """Notifications (``pocketpay.notifications``): email over SMTP, Slack, webhooks out."""

    # The default 127.0.0.1:1025 is where local mail catchers listen (Mailpit, MailHog,
    # ``python -m aiosmtpd -n -l 127.0.0.1:1025``), so a newcomer needs no root and no MTA.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    # True: STARTTLS is required (the send fails if the server does not offer it);
    # False: plain SMTP, never upgraded (a catcher's self-signed certificate cannot fail it).
    smtp_starttls: bool = False
    smtp_ca_file: str = ""  # PEM of a private CA to trust for STARTTLS; empty: system CAs
    smtp_username: str = ""  # empty: no AUTH
    smtp_password: str = ""
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    email_from: str = "PocketPay <no-reply@localhost>"
    # Lets webhook and Slack targets on loopback and private ranges through (tests, local
    # development). Link-local and cloud metadata addresses stay refused even then.
    allow_private_targets: bool = False
    # Webhook retries: the wait after the 1st, 2nd, ... failed attempt (the last step repeats),
    # each spread by +-20 % (jitter), until retry_window_seconds after the first attempt.
    webhook_retry_seconds: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0]
    )
    retry_window_seconds: float = Field(default=3 * 24 * 3600.0, gt=0)
    # An endpoint whose every attempt failed for this long is disabled and its owner emailed.
    disable_after_seconds: float = Field(default=3 * 24 * 3600.0, gt=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    # After a secret rotation the old secret signs too for this long (receivers switch over).
    secret_overlap_hours: float = Field(default=24.0, ge=0, le=168)
    max_endpoints_per_user: int = Field(default=20, ge=1)
    # The delivery job: a pass every interval (and at once after the consumer wrote some),
    # up to batch messages sent at once.
    delivery_interval_seconds: float = Field(default=1.0, gt=0)
    delivery_batch: int = Field(default=50, ge=1)


class ObservabilitySettings(BaseModel):
    log_level: str = "INFO"
    log_json: bool = True
    otlp_endpoint: str = ""  # empty: tracing off
    service_name: str = "pocketpay"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="POCKETPAY_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    host: str = "127.0.0.1"
    port: int = 8011
    var_dir: Path = Path("var")
    database_url: str = ""  # empty: sqlite+aiosqlite:///<var_dir>/pocketpay.db
    bus_url: str = "embedded"  # or nats://127.0.0.1:4222
    # Components reached over HTTP: name -> base URL. Absent ones are served in-process.
    urls: dict[str, str] = Field(default_factory=dict)
    # Shared secret every internal call carries (X-Internal-Token). Empty: generated once
    # and kept in <var_dir>/internal_token (mode 0600), so processes sharing var_dir agree.
    internal_token: str = ""
    public_url: str = ""  # how the outside world reaches the gateway; empty: http://host:port
    # Browser origins (https://app.example.com) whose pages may call the public API (CORS).
    # Empty: no CORS headers at all. E.g. POCKETPAY_CORS_ORIGINS='["https://app.example.com"]'
    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = 64 * 1024
    db_pool_size: int = 10

    auth: AuthSettings = Field(default_factory=AuthSettings)
    psp: PspSettings = Field(default_factory=PspSettings)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    bus: BusSettings = Field(default_factory=BusSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    billing: BillingSettings = Field(default_factory=BillingSettings)
    fx: FxSettings = Field(default_factory=FxSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    check: CheckSettings = Field(default_factory=CheckSettings)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    notifications: NotificationsSettings = Field(default_factory=NotificationsSettings)

    @model_validator(mode="after")
    def _sandbox_database(self) -> Settings:
        if not self.sandbox.database_url:
            self.sandbox.database_url = f"sqlite+aiosqlite:///{self.var_dir / 'sandbox.db'}"
        return self

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.var_dir / 'pocketpay.db'}"

    def resolved_public_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    def resolved_jwt_secret(self) -> str:
        """The JWT signing secret: from settings, else generated once into var_dir."""
        if self.auth.jwt_secret:
            return self.auth.jwt_secret
        path = self.var_dir / "jwt_secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()

    def resolved_internal_token(self) -> str:
        """The internal API token: from settings, else generated once into var_dir."""
        if self.internal_token:
            return self.internal_token
        return _generated_secret(self.var_dir / "internal_token")


def _generated_secret(path: Path) -> str:
    """The secret kept in ``path``, created (mode 0600) on first use.

    Processes sharing var_dir may start at once: the secret is written to a private temporary
    file and linked into place, which fails if another process got there first, so every
    process reads the one complete secret and never half a file.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48))
            os.chmod(tmp, 0o600)
            with contextlib.suppress(FileExistsError):  # another process was first: use theirs
                os.link(tmp, path)
        finally:
            tmp.unlink()
    secret = path.read_text().strip()
    if not secret:
        raise RuntimeError(f"{path} is empty: delete it to generate a new secret")
    return secret
