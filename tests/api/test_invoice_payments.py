"""Invoice payments (what billing asks of payments), on both backends: a saved card charged
off-session through the in-process ``PaymentsApi`` with ``purpose`` invoice credits the
platform's revenue account, never the owner's wallet; a declining card leaves revenue as it
was; the public API neither sets a purpose nor refunds such a payment; a lost PSP answer
converges on one intent and one revenue posting; ``pocketpay check`` is clean and finds a
posting moved to the wrong account."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from pocketpay.kit import failpoints
from pocketpay.kit.client import InternalClient
from pocketpay.kit.errors import AppError
from pocketpay.ledger import service as ledger
from pocketpay.ledger.models import transfers
from pocketpay.payments.api import PaymentsApi
from pocketpay.payments.client import HttpPaymentsClient
from pocketpay.payments.models import outbox, payments, refunds
from pocketpay.payments.schemas import Payment
from pocketpay.reconcile import reconcile
from tests.api.helpers import assert_problem, intents_of
from tests.safety.support import psp_intents, psp_refunds, reconciled
from tests.support import Stack, eventually

pytestmark = pytest.mark.timeout(180)

REVENUE = "sys_revenue_USD"


def _api(stack: Stack) -> PaymentsApi:
    api: PaymentsApi = stack.runtime.components["payments"].state["api"]
    return api


async def _saved(stack: Stack, user: dict[str, Any], card: str = "pm_card_visa") -> str:
    r = await stack.post(user, "/api/v1/payment-methods", {"payment_method": card})
    assert r.status_code == 200, r.text
    method_id: str = r.json()["id"]
    return method_id


async def _charge_invoice(
    stack: Stack, user: dict[str, Any], method: str, amount: int, invoice: str, key: str
) -> Payment:
    """What billing does to charge an invoice by card."""
    body = {
        "amount_minor": amount,
        "currency": "USD",
        "payment_method": method,
        "description": f"Invoice {invoice}",
        "purpose": "invoice",
        "reference": invoice,
        "off_session": True,
    }
    return await _api(stack).create(user["user"]["id"], key, body)


async def _balance(stack: Stack, account_id: str) -> ledger.Balance:
    async with stack.runtime.engine.connect() as conn:
        return await ledger.balance(conn, account_id)


async def _posted(stack: Stack, transfer_id: str) -> Any:
    async with stack.runtime.engine.connect() as conn:
        return (await conn.execute(select(transfers).where(transfers.c.id == transfer_id))).first()


def _spy_authorize(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every ``Provider.authorize`` call's arguments (the sandbox checks off_session but does
    not keep it on the intent)."""
    provider = stack.runtime.components["payments"].state["flows"].ctx.provider
    real = provider.authorize
    calls: list[dict[str, Any]] = []

    async def authorize(**kw: Any) -> Any:
        calls.append(kw)
        return await real(**kw)

    monkeypatch.setattr(provider, "authorize", authorize)
    return calls


async def test_an_invoice_charged_off_session_credits_revenue_not_the_wallet(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _spy_authorize(stack, monkeypatch)
    alice = await stack.user()
    method = await _saved(stack, alice)
    before = await _balance(stack, REVENUE)
    created = await _charge_invoice(stack, alice, method, 2900, "in_test_1", key="in_test_1:pay")
    assert (created.purpose, created.reference, created.status) == (
        "invoice",
        "in_test_1",
        "created",
    )

    # The user sees the charge and what it paid.
    paid = await stack.wait_status(alice, created.id, "settled")
    assert (paid["purpose"], paid["reference"], paid["amount_captured_minor"]) == (
        "invoice",
        "in_test_1",
        2900,
    )
    (call,) = [c for c in calls if c["metadata"]["payment_id"] == created.id]
    assert call["off_session"] is True and call["customer"] is not None
    (intent,) = intents_of(stack, created.id)
    assert intent.customer == call["customer"] and intent.status == "succeeded"

    # The ledger posts the capture and the settlement as it consumes the events: wait for
    # the last of them before reading its balances.
    await eventually(lambda: _posted(stack, f"pay_settle:{created.id}"))
    after = await _balance(stack, REVENUE)
    assert after.credits_posted - before.credits_posted == 2900
    assert after.credits_pending == before.credits_pending
    wallet = await stack.wallet(alice)
    assert (wallet["available_minor"], wallet["pending_minor"], wallet["posted_minor"]) == (0, 0, 0)
    cap = await _posted(stack, f"pay_cap:{created.id}")
    assert (cap.credit_account_id, cap.amount_minor) == (REVENUE, 2900)

    # Every event of the payment says what it paid (the ledger reads the purpose from them).
    async with stack.runtime.engine.connect() as conn:
        events = (await conn.execute(select(outbox.c.type, outbox.c.data))).all()
    mine = [(t, d) for t, d in events if d.get("payment_id") == created.id]
    assert {t for t, _ in mine} >= {
        "payments.payment.created",
        "payments.payment.authorized",
        "payments.payment.captured",
        "payments.payment.settled",
    }
    assert all((d["purpose"], d["reference"]) == ("invoice", "in_test_1") for _, d in mine)

    # Billing's retry gets the same payment; the key with other details is refused.
    again = await _charge_invoice(stack, alice, method, 2900, "in_test_1", key="in_test_1:pay")
    assert again.id == created.id
    with pytest.raises(AppError) as reused:
        await _charge_invoice(stack, alice, method, 2900, "in_test_2", key="in_test_1:pay")
    assert reused.value.code == "idempotency.key_reused"

    # Its money is revenue: a refund is the invoice's (billing), never the payment's.
    refused = await stack.post(alice, f"/api/v1/payments/{created.id}/refunds", {})
    assert_problem(refused, 409, "payments.not_refundable")
    async with stack.runtime.engine.connect() as conn:
        held = (await conn.execute(select(refunds).where(refunds.c.payment_id == created.id))).all()
    assert held == [] and await psp_refunds(stack, created.id) == []
    assert (await _balance(stack, REVENUE)).credits_posted == after.credits_posted
    await reconciled(stack)


async def test_a_declining_saved_card_fails_the_invoice_payment_and_revenue_is_untouched(
    stack: Stack,
) -> None:
    alice = await stack.user()
    method = await _saved(stack, alice, "pm_card_chargeCustomerFail")
    before = await _balance(stack, REVENUE)
    created = await _charge_invoice(stack, alice, method, 1500, "in_decl", key="in_decl:pay")
    failed = await stack.wait_status(alice, created.id, "failed")
    assert failed["failure_code"] == "generic_decline" and failed["purpose"] == "invoice"
    await reconciled(stack)  # the failure's void is consumed
    assert await _balance(stack, REVENUE) == before
    wallet = await stack.wallet(alice)
    assert (wallet["available_minor"], wallet["pending_minor"]) == (0, 0)
    assert await _posted(stack, f"pay_cap:{created.id}") is None


async def test_the_public_api_sets_no_purpose_and_off_session_needs_a_saved_card(
    stack: Stack,
) -> None:
    alice = await stack.user()
    base = {"amount_minor": 500, "currency": "USD", "payment_method": "pm_card_visa"}
    for extra in ({"purpose": "invoice"}, {"reference": "in_x"}, {"off_session": True}):
        r = await stack.post(alice, "/api/v1/payments", base | extra)
        assert_problem(r, 422, "validation.failed", str(extra))
    top_up = await stack.pay(alice, 500)
    assert (top_up["purpose"], top_up["reference"]) == ("top_up", None)
    await stack.wait_available(alice, 500)
    with pytest.raises(AppError) as refused:
        await _api(stack).create(
            alice["user"]["id"],
            uuid.uuid4().hex,
            base | {"purpose": "invoice", "off_session": True},
        )
    assert refused.value.code == "payments.invalid_payment_method"


async def test_scale_mode_client_carries_the_purpose_over_the_internal_api(stack: Stack) -> None:
    """``HttpPaymentsClient`` (billing in another process) reaches the internal POST /payments
    with the same fields and gets the same answer."""
    alice = await stack.user()
    method = await _saved(stack, alice)
    http = InternalClient(
        "payments",
        "http://payments.internal",
        token=stack.runtime.settings.resolved_internal_token(),
        transport=httpx.ASGITransport(app=stack.runtime.components["payments"].app),
    )
    try:
        body = {
            "amount_minor": 1100,
            "currency": "USD",
            "payment_method": method,
            "purpose": "invoice",
            "reference": "in_http",
            "off_session": True,
        }
        created = await HttpPaymentsClient(http).create(alice["user"]["id"], "in_http:pay", body)
    finally:
        await http.aclose()
    assert (created.purpose, created.reference) == ("invoice", "in_http")
    async with stack.runtime.engine.connect() as conn:
        row = (await conn.execute(select(payments).where(payments.c.id == created.id))).one()
    assert (row.purpose, row.reference, row.off_session) == ("invoice", "in_http", True)
    await stack.wait_status(alice, created.id, "settled")
    await reconciled(stack)
    cap = await _posted(stack, f"pay_cap:{created.id}")
    assert (cap.credit_account_id, cap.amount_minor) == (REVENUE, 1100)


async def test_invoice_authorization_answer_lost_converges_on_one_intent_and_one_posting(
    stack: Stack,
) -> None:
    alice = await stack.user()
    method = await _saved(stack, alice)
    before = await _balance(stack, REVENUE)
    failpoints.arm("payments.authorize.after_psp", "raise")
    try:
        created = await _charge_invoice(stack, alice, method, 4100, "in_lost", key="in_lost:pay")
        await stack.wait_status(alice, created.id, "settled")
        assert failpoints.hits("payments.authorize.after_psp") == 1
    finally:
        failpoints.disarm()
    assert len(await psp_intents(stack, created.id)) == 1
    await reconciled(stack)
    assert (await _balance(stack, REVENUE)).credits_posted - before.credits_posted == 4100
    assert (await stack.wallet(alice))["posted_minor"] == 0


async def test_check_finds_an_invoice_capture_posted_to_the_wallet(stack: Stack) -> None:
    alice = await stack.user()
    method = await _saved(stack, alice)
    created = await _charge_invoice(stack, alice, method, 700, "in_chk", key="in_chk:pay")
    await stack.wait_status(alice, created.id, "settled")
    await reconciled(stack)
    wallet = f"wal_{alice['user']['id']}_USD"
    async with stack.runtime.engine.begin() as conn:
        await conn.execute(
            update(transfers)
            .where(transfers.c.id == f"pay_cap:{created.id}")
            .values(credit_account_id=wallet)
        )
    report = await reconcile(stack.runtime.engine, None, now=datetime.now(UTC), grace_seconds=0)
    found = {(f.kind, f.ids.get("payment_id", "")) for f in report.findings}
    assert ("ledger.wrong_account", created.id) in found
    assert any(kind == "ledger.invariant" for kind, _ in found)  # balances no longer add up
