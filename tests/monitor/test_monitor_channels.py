"""Slack and email delivery against real receivers on loopback: an aiosmtpd server and an
HTTP server in a thread."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from monitor_support import NoSleep

from pocketpay.kit.clock import ManualClock
from pocketpay.monitor.channels import (
    Backoff,
    Channel,
    EmailChannel,
    Notifier,
    SlackChannel,
    SmtpConfig,
    channels_from_settings,
    slack_payload,
    subject,
)
from pocketpay.monitor.rules import Notice
from pocketpay.settings import MonitorSettings

AT = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
NOTICE = Notice("opened", "payments", "not_ready", AT, AT, "payments is down: db: <fail> & co")


class Sink:
    """aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted"


@pytest.fixture
async def smtp() -> AsyncIterator[tuple[Sink, int]]:
    sink = Sink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(sink), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield sink, port
    server.close()
    await server.wait_closed()


class SlackReceiver:
    def __init__(self, status: int) -> None:
        self.status = status
        self.bodies: list[dict[str, Any]] = []


@pytest.fixture
def slack() -> Iterator[tuple[SlackReceiver, str]]:
    receiver = SlackReceiver(200)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            receiver.bodies.append(json.loads(self.rfile.read(length)))
            self.send_response(receiver.status)
            self.end_headers()
            self.wfile.write(b"ok" if receiver.status == 200 else b"no_service")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield receiver, f"http://127.0.0.1:{server.server_address[1]}/services/T0/B0/x"
    server.shutdown()
    server.server_close()
    thread.join()


def email_channel(port: int, **kw: Any) -> EmailChannel:
    config = SmtpConfig("127.0.0.1", port, "monitor@pocketpay.test", ("ops@pocketpay.test",), **kw)
    return EmailChannel(config, timeout_seconds=5)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_email_reaches_a_real_smtp_server(smtp: tuple[Sink, int]) -> None:
    sink, port = smtp
    await email_channel(port).send(NOTICE)
    [envelope] = sink.envelopes
    assert envelope.rcpt_tos == ["ops@pocketpay.test"]
    assert isinstance(envelope.content, bytes)
    mail = message_from_bytes(envelope.content)
    assert mail["Subject"] == "[PocketPay] ALERT payments: not_ready"
    assert "payments is down" in mail.get_payload(decode=False)


async def test_slack_webhook_receives_the_post(slack: tuple[SlackReceiver, str]) -> None:
    receiver, url = slack
    async with httpx.AsyncClient() as http:
        await SlackChannel(url, http, timeout_seconds=5).send(NOTICE)
    [body] = receiver.bodies
    assert body["text"].startswith(":red_circle: *ALERT* payments is down")
    assert "&lt;fail&gt; &amp; co" in body["text"]  # Slack mrkdwn escaping
    assert body["blocks"][0]["text"]["type"] == "mrkdwn"


async def test_slack_down_email_still_sent(
    smtp: tuple[Sink, int], slack: tuple[SlackReceiver, str]
) -> None:
    sink, port = smtp
    receiver, url = slack
    receiver.status = 503
    sleep = NoSleep()
    async with httpx.AsyncClient() as http:
        channels: list[Channel] = [SlackChannel(url, http, timeout_seconds=5), email_channel(port)]
        notifier = Notifier(
            channels, ManualClock(), retries=2, timeout_seconds=5, sleep=sleep, rng=random.Random(7)
        )
        errors = await notifier.notify(NOTICE)
    assert errors["email"] is None
    assert errors["slack"] is not None and "HTTP 503" in errors["slack"]
    assert len(receiver.bodies) == 3  # one try and two retries
    assert len(sink.envelopes) == 1
    assert len(sleep.delays) == 2 and sleep.delays[0] < sleep.delays[1]
    assert notifier.stats["slack"].failed == 1 and notifier.stats["slack"].failing
    assert notifier.stats["email"].sent == 1 and not notifier.stats["email"].failing


async def test_unreachable_smtp_fails_alone(slack: tuple[SlackReceiver, str]) -> None:
    receiver, url = slack
    async with httpx.AsyncClient() as http:
        channels: list[Channel] = [
            SlackChannel(url, http, timeout_seconds=5),
            email_channel(closed_port()),
        ]
        notifier = Notifier(channels, ManualClock(), retries=1, timeout_seconds=5, sleep=NoSleep())
        errors = await notifier.notify(NOTICE)
    assert errors["slack"] is None and len(receiver.bodies) == 1
    assert errors["email"] is not None
    assert notifier.stats["email"].last_error == errors["email"]


async def test_each_attempt_has_a_timeout() -> None:
    class Hanging:
        name: str = "slack"

        async def send(self, notice: Notice) -> None:
            await asyncio.Event().wait()

    notifier = Notifier(
        [Hanging()], ManualClock(), retries=1, timeout_seconds=0.01, sleep=NoSleep()
    )
    errors = await notifier.notify(NOTICE)
    assert errors == {"slack": "timed out after 0.01s"}
    assert notifier.stats["slack"].attempts == 2


async def test_a_retry_can_succeed() -> None:
    class Flaky:
        name: str = "slack"

        def __init__(self) -> None:
            self.calls = 0

        async def send(self, notice: Notice) -> None:
            self.calls += 1
            if self.calls < 3:
                raise ConnectionError("reset by peer")

    flaky = Flaky()
    notifier = Notifier([flaky], ManualClock(), retries=3, timeout_seconds=1, sleep=NoSleep())
    assert await notifier.notify(NOTICE) == {"slack": None}
    assert flaky.calls == 3 and notifier.stats["slack"].failed == 0


def test_backoff_is_exponential_with_bounded_jitter() -> None:
    backoff, rng = Backoff(base_seconds=0.5, max_seconds=4), random.Random(1)
    for attempt, cap in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (8, 4.0)]:
        for _ in range(50):
            assert cap / 2 <= backoff.delay(attempt, rng) <= cap


async def test_starttls_follows_the_setting() -> None:
    seen: list[dict[str, Any]] = []

    async def fake_send(message: Any, **kwargs: Any) -> None:
        seen.append(kwargs)

    for enabled in (True, False):
        config = SmtpConfig("mail.test", 587, "m@t", ("o@t",), "user", "pw", starttls=enabled)
        await EmailChannel(config, timeout_seconds=3, send_mail=fake_send).send(NOTICE)
    assert seen[0]["start_tls"] is None  # upgrade when the server offers it
    assert seen[1]["start_tls"] is False
    assert seen[0]["username"] == "user" and seen[0]["timeout"] == 3


async def test_channels_from_settings() -> None:
    async with httpx.AsyncClient() as http:
        assert channels_from_settings(MonitorSettings(), http) == []
        settings = MonitorSettings(
            slack_webhook_url="http://hooks.test/x", smtp_host="mail", email_to=["ops@x.test"]
        )
        assert [c.name for c in channels_from_settings(settings, http)] == ["slack", "email"]


def test_message_formats_name_the_kind() -> None:
    resolved = Notice("resolved", "ledger", "ledger_lag", AT, AT, "fine again")
    flapping = Notice("opened", "ledger", "not_ready.flapping", AT, AT, "flapping")
    assert subject(resolved) == "[PocketPay] RESOLVED ledger: ledger_lag"
    assert subject(flapping) == "[PocketPay] FLAPPING ledger: not_ready.flapping"
    assert slack_payload(resolved)["text"].startswith(":large_green_circle: *RESOLVED*")
