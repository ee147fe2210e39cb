"""``pocketpay ledger replay``: clean after real money movement, and it names a tampered
running balance (exit 1)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import update

from pocketpay.cli import parser
from pocketpay.ledger.models import balance_history
from pocketpay.settings import Settings
from tests.support import Stack


async def test_replay_is_clean_then_finds_a_tampered_row(
    sqlite_stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = sqlite_stack
    alice, bob = await stack.user(), await stack.user()
    await stack.pay(alice, 4_000, until="settled")
    await stack.wait_available(alice, 4_000)
    r = await stack.post(
        alice,
        "/api/v1/transfers",
        {"recipient": bob["user"]["email"], "amount_minor": 1_500, "currency": "USD"},
    )
    assert r.status_code == 201, r.text
    monkeypatch.setenv("POCKETPAY_DATABASE_URL", stack.runtime.settings.resolved_database_url())
    assert await _replay() == 0
    assert "every running balance matches" in capsys.readouterr().out
    async with stack.runtime.engine.begin() as conn:
        h = balance_history.c
        await conn.execute(
            update(balance_history)
            .where(h.account_id.like(f"wal_{bob['user']['id']}_%"))
            .values(credits_posted=h.credits_posted + 1)
        )
    assert await _replay() == 1
    out = capsys.readouterr().out
    # The tampered row does not follow from its transfer, and the balance no longer ends it.
    assert f"DIFFERENCE wal_{bob['user']['id']}_USD: after tr_" in out
    assert "but its history ends at [0, 0, 0, 1501]" in out and "2 difference(s)" in out


async def _replay() -> int:
    """``pocketpay ledger replay`` as the CLI parses and runs it, minus ``main``'s logging and
    tracing set-up (process-wide: it would change how every later test's logs look). The
    command runs its own event loop (asyncio.run): a thread of its own."""
    args = parser().parse_args(["ledger", "replay"])
    return int(await asyncio.to_thread(args.fn, args, Settings()))
