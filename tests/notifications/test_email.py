"""Email: a real aiosmtpd server on loopback (plain and STARTTLS with a self-signed certificate
made by the openssl command), and the templates rendered from payloads built by the very view
functions that write the events."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from pocketpay.billing.service import invoice_event, subscription_view
from pocketpay.kit.clock import ManualClock
from pocketpay.ledger.wallet_transfers import view as transfer_view
from pocketpay.notifications.email import EmailFailed, EmailSender
from pocketpay.notifications.templates import TEMPLATES, render
from pocketpay.payments.flows import disputes, payouts
from pocketpay.payments.service import payment_view, refund_view
from pocketpay.settings import NotificationsSettings, Settings

AT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


@dataclass
class Inbox:
    """aiosmtpd handler keeping each message, whether it came over TLS, and refusing the
    recipients it is told to."""

    mails: list[tuple[Envelope, bool]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.mails.append((envelope, session.ssl is not None))
        return "250 Message accepted"

    def parsed(self, i: int = 0) -> EmailMessage:
        content = self.mails[i][0].content
        assert isinstance(content, bytes)
        mail = message_from_bytes(content, policy=policy.default)
        assert isinstance(mail, EmailMessage)
        return mail


@pytest.fixture
async def smtp_server() -> AsyncIterator[Callable[..., Any]]:
    """Start aiosmtpd servers in this loop on free ports: ``await smtp_server(**smtp_kw)``."""
    servers: list[asyncio.Server] = []

    async def start(**kw: Any) -> tuple[Inbox, int]:
        inbox = Inbox()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(inbox, hostname="mail.test", **kw), "127.0.0.1", 0
        )
        servers.append(server)
        return inbox, server.sockets[0].getsockname()[1]

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (no Python dependency: the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*certificate)
    return ctx


def sender(port: int, **kw: Any) -> EmailSender:
    settings = NotificationsSettings(smtp_port=port, smtp_timeout_seconds=5, **kw)
    return EmailSender(settings, ManualClock(AT))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- sending -----------------------------------------------------------------------------------


async def test_the_message_arrives_with_text_and_html(smtp_server: Any) -> None:
    inbox, port = await smtp_server()
    mail = sender(port, email_from="PocketPay <no-reply@pocketpay.test>")
    await mail.send("ana@example.com", "Payment of 12.34 USD settled", "Text body €\n", "<p>Hi</p>")

    [(envelope, over_tls)] = inbox.mails
    assert envelope.mail_from == "no-reply@pocketpay.test"
    assert envelope.rcpt_tos == ["ana@example.com"] and not over_tls
    msg = inbox.parsed()
    assert msg["From"] == "PocketPay <no-reply@pocketpay.test>"
    assert msg["To"] == "ana@example.com"
    assert msg["Subject"] == "Payment of 12.34 USD settled"
    assert msg["Date"] == "Sun, 01 Mar 2026 09:30:00 +0000"  # the injected clock
    assert msg["Message-ID"].endswith("@pocketpay.test>")
    assert msg.get_content_type() == "multipart/alternative"
    text, html = msg.iter_parts()
    assert text.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
    assert text.get_content().splitlines() == ["Text body €"]  # CRLF on the wire
    assert html.get_content().splitlines() == ["<p>Hi</p>"]


async def test_starttls_with_a_trusted_certificate(
    smtp_server: Any, certificate: tuple[Path, Path]
) -> None:
    inbox, port = await smtp_server(tls_context=server_tls(certificate), require_starttls=True)
    mail = sender(port, smtp_starttls=True, smtp_ca_file=str(certificate[0]))
    await mail.send("ana@example.com", "s", "t", "<p>h</p>")
    [(_, over_tls)] = inbox.mails
    assert over_tls
    assert await mail.ping() >= 0


async def test_starttls_refuses_an_untrusted_certificate(
    smtp_server: Any, certificate: tuple[Path, Path]
) -> None:
    inbox, port = await smtp_server(tls_context=server_tls(certificate), require_starttls=True)
    with pytest.raises(EmailFailed, match="CERTIFICATE_VERIFY_FAILED") as failed:
        await sender(port, smtp_starttls=True).send("ana@example.com", "s", "t", "h")
    assert not failed.value.permanent and inbox.mails == []


async def test_starttls_required_but_not_offered_fails_clearly(smtp_server: Any) -> None:
    inbox, port = await smtp_server()
    with pytest.raises(EmailFailed, match="STARTTLS"):
        await sender(port, smtp_starttls=True).send("ana@example.com", "s", "t", "h")
    assert inbox.mails == []


async def test_a_server_that_requires_starttls_refuses_plain_mail(
    smtp_server: Any, certificate: tuple[Path, Path]
) -> None:
    inbox, port = await smtp_server(tls_context=server_tls(certificate), require_starttls=True)
    with pytest.raises(EmailFailed, match="530"):
        await sender(port).send("ana@example.com", "s", "t", "h")
    assert inbox.mails == []


async def test_a_refused_recipient_is_a_permanent_failure(smtp_server: Any) -> None:
    inbox, port = await smtp_server()
    inbox.refuse.add("gone@example.com")
    with pytest.raises(EmailFailed, match="550") as failed:
        await sender(port).send("gone@example.com", "s", "t", "h")
    assert failed.value.permanent


async def test_an_unreachable_server_is_a_retryable_failure() -> None:
    port = closed_port()
    with pytest.raises(EmailFailed, match=f"127.0.0.1:{port}") as failed:
        await sender(port).send("ana@example.com", "s", "t", "h")
    assert not failed.value.permanent
    with pytest.raises(EmailFailed, match="unreachable"):
        await sender(port).ping()


async def test_ping_answers_with_a_latency(smtp_server: Any) -> None:
    _, port = await smtp_server()
    latency_ms = await sender(port).ping()
    assert latency_ms >= 0


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "SMTP_HOST": "smtp.example.com",
        "SMTP_PORT": "587",
        "SMTP_STARTTLS": "true",
        "EMAIL_FROM": "Pay <pay@example.com>",
        "ALLOW_PRIVATE_TARGETS": "true",
    }.items():
        monkeypatch.setenv(f"POCKETPAY_NOTIFICATIONS__{name}", value)
    n = Settings(_env_file=None).notifications
    assert (n.smtp_host, n.smtp_port, n.smtp_starttls) == ("smtp.example.com", 587, True)
    assert n.email_from == "Pay <pay@example.com>" and n.allow_private_targets
    default = NotificationsSettings()
    assert (default.smtp_host, default.smtp_port) == ("127.0.0.1", 1025)
    assert not default.smtp_starttls
    assert not default.allow_private_targets


# -- templates, from the payloads the components really write ----------------------------------


def payment(status: str, amount: int, currency: str, **kw: Any) -> dict[str, Any]:
    row = SimpleNamespace(
        id="pay_1",
        owner_id="usr_a",
        status=status,
        amount_minor=amount,
        currency=currency,
        amount_captured_minor=amount if status in ("captured", "settled") else 0,
        amount_refunded_minor=0,
        capture_method="automatic",
        payment_method="pm_card_visa",
        description=kw.get("description"),
        metadata={},
        failure_code=kw.get("failure_code"),
        failure_message=kw.get("failure_message"),
        provider="sandbox",
        purpose="top_up",
        reference=None,
        created_at=AT,
        updated_at=AT,
    )
    return payment_view(row) | {"payment_id": row.id, "owner_id": row.owner_id}


def refund(amount: int, currency: str) -> dict[str, Any]:
    row = SimpleNamespace(
        id="re_1",
        payment_id="pay_1",
        owner_id="usr_a",
        amount_minor=amount,
        currency=currency,
        status="succeeded",
        reason="requested_by_customer",
        failure_code=None,
        metadata={},
        created_at=AT,
        updated_at=AT,
    )
    return refund_view(row) | {"refund_id": row.id, "owner_id": row.owner_id, "held": False}


def transfer(amount: int, currency: str, note: str = "") -> dict[str, Any]:
    user_data = {
        "sender_id": "usr_a",
        "recipient_id": "usr_b",
        "sender_email": "ana@example.com",
        "recipient_email": "bo@example.com",
        "note": note,
        "metadata": {},
    }
    row = SimpleNamespace(
        id="tr_1", amount_minor=amount, currency=currency, user_data=user_data, created_at=AT
    )
    return transfer_view(cast(Any, row))


def invoice(total: int, paid: int, currency: str, next_attempt: datetime | None) -> dict[str, Any]:
    row = SimpleNamespace(
        id="in_1",
        owner_id="usr_a",
        subscription_id="sub_1",
        number="PP-0007",
        status="open" if paid < total else "paid",
        currency=currency,
        total_minor=total,
        amount_paid_minor=paid,
        attempts=1,
        last_decline_code="insufficient_funds" if paid < total else None,
        next_attempt_at=next_attempt,
    )
    return invoice_event(row)


def subscription(previous: str, status: str) -> dict[str, Any]:
    row = SimpleNamespace(
        id="sub_1",
        owner_id="usr_a",
        plan_id="plan_1",
        status=status,
        payment_source="card",
        payment_method="pm_card_visa",
        currency="EUR",
        current_period_start=AT,
        current_period_end=AT,
        trial_end=None,
        cancel_at_period_end=False,
        canceled_at=None,
        metadata={},
        created_at=AT,
        updated_at=AT,
    )
    extra = {"subscription_id": row.id, "owner_id": row.owner_id, "previous_status": previous}
    return subscription_view(row, None) | extra | {"cause": "payment_failed"}


def dispute(status: str) -> dict[str, Any]:
    row = SimpleNamespace(
        id="dp_1",
        payment_id="pay_1",
        owner_id="usr_a",
        purpose="top_up",
        amount_minor=5000,
        currency="USD",
        status=status,
        reason="fraudulent",
        evidence_due_by=AT,
        evidence_text=None,
        evidence_submitted_at=None,
        created_at=AT,
        updated_at=AT,
        closed_at=None,
    )
    return disputes.view(row) | {"owner_id": row.owner_id, "purpose": row.purpose}


def payout(status: str, failure: str | None = None) -> dict[str, Any]:
    row = SimpleNamespace(
        id="po_1",
        owner_id="usr_a",
        amount_minor=2500,
        currency="GBP",
        status=status,
        country="GB",
        routing_number="110000000",
        last4="6789",
        description=None,
        metadata={},
        failure_code="no_account" if failure else None,
        failure_message=failure,
        created_at=AT,
        updated_at=AT,
    )
    return payouts.view(row) | {"owner_id": row.owner_id}


RETRY_AT = datetime(2026, 3, 3, 9, 30, tzinfo=UTC)
DECLINED = payment("failed", 1999, "EUR", failure_message="Your card was declined")
DISABLED = {"url": "https://hooks.example.com/pp", "endpoint_id": "we_1"}
# (event type, data, user, subject, a phrase of the text)
CASES = [
    ("payments.payment.captured", payment("captured", 1234, "USD"), "usr_a",
     "Payment of 12.34 USD captured", "pay_1"),
    ("payments.payment.settled", payment("settled", 500, "JPY"), "usr_a",
     "Payment of 500 JPY settled", "available in your wallet"),
    ("payments.payment.failed", DECLINED, "usr_a",
     "Payment of 19.99 EUR failed", "Your card was declined"),
    ("payments.refund.succeeded", refund(1500, "KWD"), "usr_a",
     "Refund of 1.500 KWD succeeded", "pay_1"),
    ("ledger.transfer.posted", transfer(1234, "USD", "rent"), "usr_a",
     "You sent 12.34 USD", "to bo@example.com"),
    ("ledger.transfer.posted", transfer(1234, "USD", "rent"), "usr_b",
     "You received 12.34 USD", "from ana@example.com"),
    ("billing.invoice.paid", invoice(990, 990, "EUR", None), "usr_a",
     "Invoice PP-0007 paid: 9.90 EUR", "is paid"),
    ("billing.invoice.payment_failed", invoice(990, 0, "EUR", RETRY_AT), "usr_a",
     "Payment of invoice PP-0007 failed", "9.90 EUR"),
    ("billing.subscription.updated", subscription("active", "past_due"), "usr_a",
     "Your subscription is past due", "(it was active)"),
    ("notifications.endpoint.disabled", DISABLED, "usr_a",
     "Webhook endpoint disabled", "https://hooks.example.com/pp"),
    ("payments.dispute.created", dispute("needs_response"), "usr_a",
     "Payment of 50.00 USD disputed", "before 2026-03-01 09:30 UTC"),
    ("payments.dispute.created", dispute("warning_needs_response"), "usr_a",
     "The card issuer asks about 50.00 USD", "No money is held"),
    ("payments.dispute.closed", dispute("won"), "usr_a",
     "Dispute won: 50.00 USD is back", "in your favour"),
    ("payments.dispute.closed", dispute("lost"), "usr_a",
     "Dispute lost: 50.00 USD returned to the cardholder", "went back to them"),
    ("payments.dispute.closed", dispute("warning_closed"), "usr_a",
     "Inquiry about 50.00 USD closed", "No money moved"),
    ("payments.payout.paid", payout("paid"), "usr_a",
     "Payout of 25.00 GBP paid", "ending in 6789"),
    ("payments.payout.failed", payout("failed", "The account does not exist."), "usr_a",
     "Payout of 25.00 GBP failed", "failed: The account does not exist."),
]  # fmt: skip


@pytest.mark.parametrize(("event_type", "data", "user_id", "subject", "in_text"), CASES)
def test_each_event_renders_with_amounts_in_the_currency_exponent(
    event_type: str, data: dict[str, Any], user_id: str, subject: str, in_text: str
) -> None:
    rendered = render(event_type, data, user_id=user_id)
    assert rendered is not None
    assert rendered.subject == subject
    assert in_text in rendered.text
    assert f"<title>{subject}</title>" in rendered.html


def test_every_template_is_covered() -> None:
    assert set(TEMPLATES) == {
        "payments.payment.captured",
        "payments.payment.settled",
        "payments.payment.failed",
        "payments.refund.succeeded",
        "billing.invoice.paid",
        "billing.invoice.payment_failed",
        "billing.subscription.updated",
        "notifications.endpoint.disabled",
        "payments.dispute.created",
        "payments.dispute.closed",
        "payments.payout.paid",
        "payments.payout.failed",
    }


def test_a_retry_date_is_shown_in_utc() -> None:
    data = invoice(990, 0, "EUR", RETRY_AT)
    rendered = render("billing.invoice.payment_failed", data, user_id="usr_a")
    assert rendered is not None and "2026-03-03 09:30 UTC" in rendered.text
    assert "insufficient_funds" in rendered.html


def test_user_input_is_escaped_in_html_and_kept_in_text() -> None:
    data = transfer(100, "USD", "<b>hi</b> & co")
    rendered = render("ledger.transfer.posted", data, user_id="usr_b")
    assert rendered is not None
    assert "Note: <b>hi</b> & co" in rendered.text
    assert "&lt;b&gt;hi&lt;/b&gt; &amp; co" in rendered.html and "<b>hi</b>" not in rendered.html


@pytest.mark.parametrize(
    ("event_type", "data", "user_id"),
    [
        ("payments.payment.created", payment("created", 100, "USD"), "usr_a"),
        ("billing.invoice.finalized", invoice(990, 0, "EUR", None), "usr_a"),
        ("ledger.transfer.posted", transfer(100, "USD"), "usr_someone_else"),
        ("billing.subscription.updated", subscription("active", "active"), "usr_a"),
    ],
)
def test_nothing_for_other_events_or_no_status_change(
    event_type: str, data: dict[str, Any], user_id: str
) -> None:
    assert render(event_type, data, user_id=user_id) is None
