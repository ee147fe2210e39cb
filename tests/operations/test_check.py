"""``pocketpay check``: the ledger, payments and the PSP reconciled, clean and then broken."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe
from sqlalchemy import func, insert, select

from pocketpay import cli
from pocketpay.payments.models import payments, refunds
from pocketpay.reconcile import Report, reconcile
from tests.support import Stack, eventually


async def check(stack: Stack) -> Report:
    # grace 0: the test waits for the stack to be quiet, so nothing is in flight.
    return await reconcile(
        stack.runtime.engine, stack.runtime.provider(), now=datetime.now(UTC), grace_seconds=0
    )


async def clean(stack: Stack) -> Report:
    """No findings and nothing in flight: every captured payment settled (settlement runs at
    the PSP's available_on, so a payment captured now settles, in payments and then in the
    ledger, a second later: a check with grace 0 in between would see a missing posting)."""

    async def settled() -> Report | None:
        async with stack.runtime.engine.connect() as conn:
            waiting = await conn.scalar(select(func.count()).where(payments.c.status == "captured"))
        if waiting:
            return None
        report = await check(stack)
        return report if not report.findings else None

    return await eventually(settled)


def kinds(report: Report) -> set[tuple[str, str]]:
    return {
        (f.kind, f.ids.get("payment_id") or f.ids.get("refund_id") or "") for f in report.findings
    }


async def some_history(stack: Stack) -> dict[str, Any]:
    user = await stack.user()
    paid = await stack.pay(user, 5000)
    await stack.pay(user, 1200)
    held = await stack.pay(user, 800, capture="manual", until="authorized")
    r = await stack.post(user, f"/api/v1/payments/{held['id']}/cancel")
    assert r.status_code in (200, 202), r.text
    await stack.wait_status(user, held["id"], "canceled")
    r = await stack.post(user, f"/api/v1/payments/{paid['id']}/refunds", {"amount_minor": 1500})
    assert r.status_code in (200, 201, 202), r.text
    return {"user": user, "paid": paid, "refund": r.json()}


async def test_clean_then_each_break_is_reported(stack: Stack) -> None:
    history = await some_history(stack)
    report = await clean(stack)
    assert report.checked["payments"] == 3 and report.checked["PSP intents"] == 3
    assert report.checked["PSP refunds"] == 1

    old = datetime.now(UTC) - timedelta(hours=2)
    user_id = "usr_forged"
    async with stack.runtime.engine.begin() as conn:
        await conn.execute(
            insert(payments).values(
                id="pay_forged",
                owner_id=user_id,
                amount_minor=700,
                currency="USD",
                status="captured",
                capture_method="automatic",
                amount_captured_minor=700,
                amount_refunded_minor=0,
                payment_method="pm_card_visa",
                metadata={},
                provider="sandbox",
                created_at=old,
                updated_at=old,
            )
        )
        await conn.execute(
            insert(refunds).values(
                id="re_forged",
                payment_id=history["paid"]["id"],
                owner_id=user_id,
                amount_minor=100,
                currency="USD",
                status="succeeded",
                created_at=old,
                updated_at=old,
            )
        )
    settings = stack.runtime.settings
    http = stripe.HTTPXClient()
    psp = stripe.StripeClient(
        settings.psp.api_key,
        base_addresses={"api": f"{stack.base_url}/sandbox"},
        http_client=http,
        max_network_retries=0,
    )
    ghost = await psp.v1.payment_intents.create_async(
        params={
            "amount": 300,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "metadata": {"payment_id": "pay_ghost"},
        }
    )
    await http.close_async()

    report = await check(stack)
    assert kinds(report) == {
        ("ledger.capture_missing", "pay_forged"),
        ("psp.intent_missing", "pay_forged"),
        ("psp.intent_unknown", "pay_ghost"),
        ("ledger.refund_post_missing", "re_forged"),
        ("psp.refund_missing", "re_forged"),
    }
    (unknown,) = [f for f in report.findings if f.kind == "psp.intent_unknown"]
    assert unknown.ids["intent"] == ghost.id

    # The CLI: same findings as JSON, exit status 1 (run in a thread: it has its own loop).
    args = argparse.Namespace(json=True, no_psp=False, require_psp=False)
    quick = settings.model_copy(
        update={"check": settings.check.model_copy(update={"grace_seconds": 0})}
    )
    code, out = await asyncio.to_thread(_run_cli, args, quick)
    assert code == 1
    listed = json.loads(out)
    assert {(f["kind"], f.get("payment_id") or f.get("refund_id")) for f in listed} == kinds(report)
    assert all(f["detail"] for f in listed)


def _run_cli(args: argparse.Namespace, settings: Any) -> tuple[int, str]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.cmd_check(args, settings)
    return code, out.getvalue()


@pytest.mark.parametrize("no_psp", [False, True])
async def test_cli_clean_exit_zero(sqlite_stack: Stack, no_psp: bool) -> None:
    await some_history(sqlite_stack)
    await clean(sqlite_stack)
    args = argparse.Namespace(json=False, no_psp=no_psp, require_psp=False)
    code, out = await asyncio.to_thread(_run_cli, args, sqlite_stack.runtime.settings)
    assert code == 0, out
    assert "ledger consistent" in out and "no findings" in out
