"""Where notices go: a Slack incoming webhook and email over SMTP.

Every channel is tried on its own, with a timeout per attempt and retries with exponential
backoff and jitter, concurrently with the others: a channel that is down delays and fails only
itself. Outcomes are counted per channel for ``/status``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Any, Protocol

import aiosmtplib
import httpx
import structlog

from pocketpay.kit.clock import Clock
from pocketpay.monitor.metrics import CHANNEL_DELIVERIES
from pocketpay.monitor.rules import Notice
from pocketpay.settings import MonitorSettings

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]
SendMail = Callable[..., Awaitable[Any]]

_LABELS = {"opened": "ALERT", "resolved": "RESOLVED", "reminder": "REMINDER"}
_FLAP_LABELS = {"opened": "FLAPPING", "resolved": "STABLE", "reminder": "STILL FLAPPING"}
_SLACK_ICONS = {
    "ALERT": ":red_circle:",
    "RESOLVED": ":large_green_circle:",
    "REMINDER": ":repeat:",
    "FLAPPING": ":warning:",
    "STABLE": ":large_green_circle:",
    "STILL FLAPPING": ":warning:",
}


class ChannelError(Exception):
    """A channel answered, but not with success."""


class Channel(Protocol):
    name: str

    async def send(self, notice: Notice) -> None: ...


def label(notice: Notice) -> str:
    return (_FLAP_LABELS if notice.is_flapping else _LABELS)[notice.kind]


def subject(notice: Notice) -> str:
    return f"[PocketPay] {label(notice)} {notice.component}: {notice.rule}"


def plain_text(notice: Notice) -> str:
    return (
        f"{label(notice)}: {notice.message}\n\n"
        f"component: {notice.component}\nrule: {notice.rule}\n"
        f"since: {notice.since.isoformat()}\nat: {notice.at.isoformat()}\n"
    )


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(notice: Notice) -> dict[str, Any]:
    tag = label(notice)
    text = f"{_SLACK_ICONS[tag]} *{tag}* {_slack_escape(notice.message)}"
    context = (
        f"{_slack_escape(notice.component)} · {_slack_escape(notice.rule)} · "
        f"since {notice.since.isoformat()}"
    )
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }


class SlackChannel:
    name = "slack"

    def __init__(
        self, webhook_url: str, http: httpx.AsyncClient, *, timeout_seconds: float
    ) -> None:
        self._url = webhook_url
        self._http = http
        self._timeout = timeout_seconds

    async def send(self, notice: Notice) -> None:
        resp = await self._http.post(self._url, json=slack_payload(notice), timeout=self._timeout)
        if resp.status_code >= 300:
            raise ChannelError(f"Slack answered HTTP {resp.status_code}: {resp.text[:120]}")


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    username: str = ""
    password: str = ""
    starttls: bool = True  # STARTTLS whenever the server offers it; False: never


class EmailChannel:
    name = "email"

    def __init__(
        self, config: SmtpConfig, *, timeout_seconds: float, send_mail: SendMail | None = None
    ) -> None:
        assert config.recipients, "an email channel needs recipients"
        self._config = config
        self._timeout = timeout_seconds
        self._send_mail: SendMail = send_mail or aiosmtplib.send

    def message(self, notice: Notice) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self._config.sender
        msg["To"] = ", ".join(self._config.recipients)
        msg["Subject"] = subject(notice)
        msg.set_content(plain_text(notice))
        return msg

    async def send(self, notice: Notice) -> None:
        cfg = self._config
        await self._send_mail(
            self.message(notice),
            hostname=cfg.host,
            port=cfg.port,
            username=cfg.username or None,
            password=cfg.password or None,
            start_tls=None if cfg.starttls else False,  # None: upgrade when offered
            timeout=self._timeout,
        )


@dataclass(frozen=True)
class Backoff:
    base_seconds: float = 0.5
    max_seconds: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Exponential with "equal jitter": half fixed, half random, so retries spread out."""
        cap = min(self.max_seconds, self.base_seconds * (2.0**attempt))
        return cap / 2 + rng.uniform(0, cap / 2)


@dataclass
class ChannelStats:
    sent: int = 0
    failed: int = 0
    attempts: int = 0
    last_error: str | None = None
    last_failure_at: datetime | None = None
    last_success_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "last_failure_at": self.last_failure_at.isoformat() if self.last_failure_at else None,
            "last_success_at": self.last_success_at.isoformat() if self.last_success_at else None,
        }

    @property
    def failing(self) -> bool:
        """The last delivery failed (and none succeeded since)."""
        if self.last_failure_at is None:
            return False
        return self.last_success_at is None or self.last_failure_at >= self.last_success_at


class Notifier:
    def __init__(
        self,
        channels: Sequence[Channel],
        clock: Clock,
        *,
        retries: int,
        timeout_seconds: float,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        assert retries >= 0 and timeout_seconds > 0
        assert len({c.name for c in channels}) == len(channels), "channel names must be unique"
        self.channels = list(channels)
        self._clock = clock
        self._retries = retries
        self._timeout = timeout_seconds
        self._sleep: Sleep = sleep or clock.sleep
        self._rng = rng or random.Random()
        self._backoff = backoff or Backoff()
        self.stats: dict[str, ChannelStats] = {c.name: ChannelStats() for c in self.channels}

    async def notify(self, notice: Notice) -> dict[str, str | None]:
        """Send to every channel at once; returns channel -> error (None when delivered)."""
        errors = await asyncio.gather(*(self._deliver(c, notice) for c in self.channels))
        return dict(zip((c.name for c in self.channels), errors, strict=True))

    async def _deliver(self, channel: Channel, notice: Notice) -> str | None:
        stats = self.stats[channel.name]
        error: str | None = None
        for attempt in range(self._retries + 1):
            stats.attempts += 1
            error = await self._attempt(channel, notice)
            if error is None:
                stats.sent += 1
                stats.last_success_at = self._clock.now()
                CHANNEL_DELIVERIES.labels(channel.name, "sent").inc()
                return None
            if attempt < self._retries:
                await self._sleep(self._backoff.delay(attempt, self._rng))
        stats.failed += 1
        stats.last_error, stats.last_failure_at = error, self._clock.now()
        CHANNEL_DELIVERIES.labels(channel.name, "failed").inc()
        log.warning(
            "monitor.channel.failed",
            channel=channel.name,
            error=error,
            component=notice.component,
            rule=notice.rule,
            kind=notice.kind,
        )
        return error

    async def _attempt(self, channel: Channel, notice: Notice) -> str | None:
        try:
            async with asyncio.timeout(self._timeout):
                await channel.send(notice)
        except TimeoutError:
            return f"timed out after {self._timeout:g}s"
        except Exception as exc:  # any failure of one channel must not reach the others
            return f"{type(exc).__name__}: {exc}"[:300]
        return None


def channels_from_settings(settings: MonitorSettings, http: httpx.AsyncClient) -> list[Channel]:
    """The channels the settings configure: Slack with a webhook URL, email with a host and
    recipients."""
    out: list[Channel] = []
    if settings.slack_webhook_url:
        out.append(
            SlackChannel(
                settings.slack_webhook_url, http, timeout_seconds=settings.channel_timeout_seconds
            )
        )
    if settings.smtp_host and settings.email_to:
        config = SmtpConfig(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.email_from,
            recipients=tuple(settings.email_to),
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
        )
        out.append(EmailChannel(config, timeout_seconds=settings.channel_timeout_seconds))
    return out
