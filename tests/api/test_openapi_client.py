"""A client generated from /openapi.json drives the main flows: what a developer who knows
Stripe would do without reading our code.

``openapi-python-client`` (a dev dependency; it runs offline) writes a package from the
document once per session; the test imports it and, on each backend, signs up and logs in,
tops up a wallet by card, waits for the payment and the credit, sends money to a second user
and refunds part of the payment. Every answer must parse into its generated model: the client
is built with ``raise_on_unexpected_status``, so an undocumented status fails, and a documented
one without a schema would come back as ``None`` (asserted against).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pocketpay.runtime import EMBEDDED, Runtime
from pocketpay.settings import Settings
from tests.support import PASSWORD, Stack, eventually

PACKAGE = "pocketpay_generated_client"


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The generated client package, imported (the document is the same on both backends)."""
    root = tmp_path_factory.mktemp("client")
    settings = Settings(
        var_dir=root,
        database_url=f"sqlite+aiosqlite:///{root}/unused.db",
        auth={"jwt_secret": "x" * 40},
    )
    spec = root / "openapi.json"
    spec.write_text(json.dumps(Runtime(settings, EMBEDDED).app.openapi()))
    config = root / "config.yaml"
    config.write_text("post_hooks: []\n")  # no formatter run: nothing outside the venv
    generator = Path(sys.executable).parent / "openapi-python-client"
    done = subprocess.run(
        [
            str(generator),
            "generate",
            "--path",
            str(spec),
            "--output-path",
            str(root / PACKAGE),
            "--meta",
            "none",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout, done.stdout
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


class Operations:
    """``ops.payments.create_payment``: the generated module of one operation."""

    def __init__(self, group: str) -> None:
        self.group = group

    def __getattr__(self, name: str) -> Any:
        return importlib.import_module(f"{PACKAGE}.api.{self.group}.{name}")


def parsed(response: Any, model: type) -> Any:
    """The typed answer of a detailed call: the documented model, never a raw dict."""
    assert response.parsed is not None, (response.status_code, response.content[:300])
    assert isinstance(response.parsed, model), (response.status_code, response.content[:300])
    return response.parsed


async def test_a_generated_client_drives_the_main_flows(
    stack: Stack, generated: ModuleType
) -> None:
    auth, payments = Operations("auth"), Operations("payments")
    wallets, transfers = Operations("wallets"), Operations("transfers")
    m = importlib.import_module(f"{PACKAGE}.models")

    anonymous = generated.Client(base_url=stack.base_url, raise_on_unexpected_status=True)

    async def account(name: str) -> tuple[Any, Any]:
        email = f"{name}{uuid.uuid4().hex[:8]}@example.com"
        signup = await auth.signup.asyncio_detailed(
            client=anonymous, body=m.SignupIn(email=email, password=PASSWORD, name=name)
        )
        assert signup.status_code == 201
        parsed(signup, m.Session)
        # Signing up again is a 409 problem, parsed; then log in as a returning user would.
        again = await auth.signup.asyncio_detailed(
            client=anonymous, body=m.SignupIn(email=email, password=PASSWORD, name=name)
        )
        assert parsed(again, m.ProblemDetail).code == "auth.email_taken"
        login = await auth.login.asyncio_detailed(
            client=anonymous, body=m.LoginIn(email=email, password=PASSWORD)
        )
        session = parsed(login, m.Session)
        client = generated.AuthenticatedClient(
            base_url=stack.base_url, token=session.access_token, raise_on_unexpected_status=True
        )
        me = parsed(await auth.me.asyncio_detailed(client=client), m.User)
        assert me.email == email and me.object_ == "user"
        return client, me

    alice, _ = await account("alice")
    bob, bob_user = await account("bob")

    created = await payments.create_payment.asyncio_detailed(
        client=alice,
        body=m.PaymentCreate(
            amount_minor=5000,
            currency="USD",
            payment_method="pm_card_visa",
            metadata=m.PaymentCreateMetadata.from_dict({"order_id": "6735"}),
        ),
        idempotency_key=str(uuid.uuid4()),
    )
    assert created.status_code == 202
    payment = parsed(created, m.Payment)
    assert payment.metadata.to_dict() == {"order_id": "6735"}

    async def settled() -> Any:
        got = await payments.get_payment.asyncio_detailed(payment.id, client=alice)
        body = parsed(got, m.Payment)
        return body if body.status.value in ("captured", "settled") else None

    await eventually(settled)

    async def credited() -> Any:
        got = parsed(await wallets.wallets.asyncio_detailed(client=alice), m.WalletBalances)
        usd = [w for w in got.data if w.currency == "USD"]
        return usd[0] if usd and usd[0].available_minor == 5000 else None

    wallet = await eventually(credited)
    assert isinstance(wallet, m.WalletBalance) and wallet.object_ == "wallet"

    sent = await transfers.send.asyncio_detailed(
        client=alice,
        body=m.TransferCreate(
            recipient=bob_user.email, amount_minor=1500, currency="USD", note="lunch"
        ),
        idempotency_key=str(uuid.uuid4()),
    )
    assert sent.status_code == 201
    transfer = parsed(sent, m.Transfer)
    seen = await transfers.get_transfer.asyncio_detailed(transfer.id, client=bob)
    assert parsed(seen, m.Transfer).amount_minor == 1500
    too_much = await transfers.send.asyncio_detailed(
        client=alice,
        body=m.TransferCreate(recipient=bob_user.email, amount_minor=10_000, currency="USD"),
        idempotency_key=str(uuid.uuid4()),
    )
    assert too_much.status_code == 422
    assert parsed(too_much, m.ProblemDetail).code == "ledger.insufficient_funds"

    asked = await payments.refund.asyncio_detailed(
        payment.id,
        client=alice,
        body=m.RefundCreate(amount_minor=500),
        idempotency_key=str(uuid.uuid4()),
    )
    assert asked.status_code == 202
    refund = parsed(asked, m.Refund)

    async def refunded() -> Any:
        got = parsed(await payments.get_refund.asyncio_detailed(refund.id, client=alice), m.Refund)
        return got if got.status.value == "succeeded" else None

    await eventually(refunded)

    # The lists parse into their models, with the objects just made.
    listed = parsed(await payments.list_payments.asyncio_detailed(client=alice), m.PaymentList)
    assert [p.id for p in listed.data] == [payment.id] and listed.has_more is False
    refunds = await payments.list_refunds.asyncio_detailed(payment.id, client=alice)
    assert [r.id for r in parsed(refunds, m.RefundList).data] == [refund.id]
    events = await payments.payment_events.asyncio_detailed(payment.id, client=alice)
    assert parsed(events, m.Timeline).data
    mine = parsed(await transfers.list_transfers.asyncio_detailed(client=bob), m.TransferList)
    assert [t.id for t in mine.data] == [transfer.id]
    entries = await wallets.entries.asyncio_detailed("USD", client=alice)
    assert parsed(entries, m.EntryList).data
    bad_cursor = await payments.list_payments.asyncio_detailed(
        client=alice, starting_after="pay_nothing"
    )
    assert parsed(bad_cursor, m.ProblemDetail).code == "request.invalid_cursor"

    async def final() -> Any:
        got = parsed(await wallets.wallets.asyncio_detailed(client=alice), m.WalletBalances)
        return got if got.data[0].available_minor == 5000 - 1500 - 500 else None

    await eventually(final)
