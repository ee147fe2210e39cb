"""Email over SMTP (aiosmtplib): one multipart/alternative message (text and HTML) per send.

Settings (``POCKETPAY_NOTIFICATIONS__...``): ``SMTP_HOST``, ``SMTP_PORT`` (default
127.0.0.1:1025, where local mail catchers listen), ``SMTP_STARTTLS`` (true: required, the send
fails if the server does not offer it; false: plain, never upgraded), ``SMTP_CA_FILE`` (a
private CA for STARTTLS), ``SMTP_USERNAME``/``SMTP_PASSWORD`` (AUTH when a username is set),
``EMAIL_FROM``, ``SMTP_TIMEOUT_SECONDS``. Every failure is an ``EmailFailed``: the caller
retries unless it is ``permanent`` (the server refused for good, a 5xx answer).
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

import aiosmtplib

from pocketpay.kit.clock import Clock, SystemClock
from pocketpay.settings import NotificationsSettings


class EmailFailed(Exception):
    """The message was not handed to the SMTP server."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class EmailSender:
    def __init__(self, settings: NotificationsSettings, clock: Clock | None = None) -> None:
        self._s = settings
        self._clock = clock or SystemClock()

    def message(self, to: str, subject: str, text: str, html: str) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self._s.email_from
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = format_datetime(self._clock.now())
        domain = parseaddr(self._s.email_from)[1].rpartition("@")[2] or "localhost"
        msg["Message-ID"] = make_msgid(domain=domain)
        msg.set_content(text)
        msg.add_alternative(html, subtype="html")
        return msg

    async def send(self, to: str, subject: str, text: str, html: str) -> None:
        """Hand the message to the server; raises ``EmailFailed``."""
        msg = self.message(to, subject, text, html)
        try:
            async with self._client() as smtp:
                await smtp.send_message(msg)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            [refused] = exc.recipients  # one message, one recipient
            raise EmailFailed(
                f"the SMTP server refused the recipient {to}: {refused.code} {refused.message}",
                permanent=500 <= refused.code < 600,
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise EmailFailed(
                f"the SMTP server refused the message to {to}: {exc.code} {exc.message}",
                permanent=500 <= exc.code < 600,
            ) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise EmailFailed(f"{self._where()}: {type(exc).__name__}: {exc}") from exc

    async def ping(self) -> float:
        """Connect (with STARTTLS and AUTH as configured), NOOP, QUIT: latency in ms, or
        ``EmailFailed``. For ``/readyz``."""
        start = self._clock.monotonic()
        try:
            async with self._client() as smtp:
                await smtp.noop()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise EmailFailed(f"{self._where()}: {type(exc).__name__}: {exc}") from exc
        return (self._clock.monotonic() - start) * 1000

    def _client(self) -> aiosmtplib.SMTP:
        s = self._s
        return aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_username or None,
            password=s.smtp_password or None,
            start_tls=s.smtp_starttls,
            cert_bundle=s.smtp_ca_file or None,
            timeout=s.smtp_timeout_seconds,
        )

    def _where(self) -> str:
        return f"SMTP server {self._s.smtp_host}:{self._s.smtp_port} unreachable or failing"
