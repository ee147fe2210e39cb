"""The ledger component: internal API, event consumer, health checks."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.bus import Bus
from pocketpay.kit.clock import Clock
from pocketpay.kit.component import Component, internal_auth
from pocketpay.kit.failpoints import failpoint
from pocketpay.kit.health import CheckResult, Health, health_router
from pocketpay.kit.httpapp import new_app
from pocketpay.kit.metrics import CONSUMER_LAG, CONSUMER_PENDING
from pocketpay.kit.money import MoneyError, normalize_currency
from pocketpay.kit.outbox import OutboxRelay
from pocketpay.kit.tracing import traced_consumer
from pocketpay.ledger import service, wallet_transfers
from pocketpay.ledger.chart import wallet_account_id
from pocketpay.ledger.consumers import SUBJECTS, LedgerConsumer
from pocketpay.ledger.errors import InvalidTransfer
from pocketpay.ledger.models import outbox
from pocketpay.ledger.schemas import RefundHoldIn, WalletTransferIn
from pocketpay.settings import Settings

DURABLE = "ledger"


def _currency(code: str) -> str:
    try:
        return normalize_currency(code)
    except MoneyError as exc:
        raise InvalidTransfer(str(exc), code="validation.unknown_currency") from exc


def _balance_view(b: service.Balance) -> dict[str, Any]:
    return {
        "account_id": b.account_id,
        "currency": b.currency,
        "available_minor": b.available_minor,
        "pending_minor": b.pending_minor,
        "posted_minor": b.posted_minor,
        "debits_pending": b.debits_pending,
        "debits_posted": b.debits_posted,
        "credits_pending": b.credits_pending,
        "credits_posted": b.credits_posted,
    }


def _router(engine: AsyncEngine, clock: Clock, relay: OutboxRelay, bus: Bus) -> APIRouter:
    r = APIRouter()

    @r.post("/refund-holds")
    async def refund_hold(body: RefundHoldIn) -> dict[str, str]:
        async with engine.begin() as conn:
            await wallet_transfers.refund_hold(
                conn,
                body.refund_id,
                body.payment_id,
                body.owner_id,
                body.amount_minor,
                _currency(body.currency),
                clock.now(),
            )
        return {"status": "held"}

    @r.post("/wallet-transfers", status_code=201)
    async def send(body: WalletTransferIn) -> dict[str, Any]:
        body = body.model_copy(update={"currency": _currency(body.currency)})
        async with engine.begin() as conn:
            result = await wallet_transfers.send(conn, body, clock.now())
        relay.notify()
        await failpoint("ledger.transfer.after_commit")
        return result

    @r.get("/wallet-transfers")
    async def list_transfers(
        owner_id: str, limit: int = Query(20, ge=1, le=100), starting_after: str | None = None
    ) -> dict[str, Any]:
        async with engine.connect() as conn:
            data, more = await wallet_transfers.list_for(conn, owner_id, limit, starting_after)
        return {"data": data, "has_more": more, "next_cursor": data[-1]["id"] if more else None}

    @r.get("/wallet-transfers/{transfer_id}")
    async def get_transfer(transfer_id: str, owner_id: str) -> dict[str, Any]:
        async with engine.connect() as conn:
            return await wallet_transfers.get(conn, owner_id, transfer_id)

    @r.get("/wallets")
    async def wallets(owner_id: str) -> dict[str, Any]:
        async with engine.connect() as conn:
            rows = await service.wallets(conn, owner_id)
        return {"data": [_balance_view(b) for b in rows]}

    @r.get("/wallets/{currency}/entries")
    async def entries(
        currency: str,
        owner_id: str,
        limit: int = Query(20, ge=1, le=100),
        starting_after: int | None = Query(None, ge=0),
    ) -> dict[str, Any]:
        cur = _currency(currency)
        async with engine.connect() as conn:
            rows = await service.entries(conn, owner_id, cur, limit + 1, starting_after)
        acct = wallet_account_id(owner_id, cur)
        data = [_entry_view(service.transfer_dict(r), acct) for r in rows[:limit]]
        more = len(rows) > limit
        return {
            "data": data,
            "has_more": more,
            "next_cursor": str(data[-1]["seq"]) if more else None,
        }

    @r.get("/health/backlog")
    async def backlog() -> dict[str, Any]:
        pending, age = await bus.lag(DURABLE)
        CONSUMER_LAG.labels(DURABLE).set(age)
        CONSUMER_PENDING.labels(DURABLE).set(pending)
        return {"consumer": DURABLE, "pending": pending, "oldest_age_seconds": round(age, 3)}

    return r


def _entry_view(t: dict[str, Any], account_id: str) -> dict[str, Any]:
    credit = t["credit_account_id"] == account_id
    return {
        "id": t["id"],
        "seq": t["seq"],
        "code": t["code"],
        "kind": t["kind"],
        "direction": "credit" if credit else "debit",
        "amount_minor": t["amount_minor"],
        "currency": t["currency"],
        "pending_state": t["pending_state"],
        "created_at": t["created_at"],
        "payment_id": t["user_data"].get("payment_id"),
        "note": t["user_data"].get("note"),
    }


def build(settings: Settings, engine: AsyncEngine, clock: Clock, bus: Bus) -> Component:
    relay = OutboxRelay(
        engine,
        outbox,
        bus,
        clock,
        source="ledger",
        poll_seconds=settings.bus.relay_poll_seconds,
        batch=settings.bus.relay_batch,
        publish_max_failures=settings.bus.publish_max_failures,
    )
    health = Health("ledger")

    async def lag_check() -> CheckResult:
        pending, age = await bus.lag(DURABLE)
        lagging = age > settings.monitor.lag_threshold_seconds
        return CheckResult(
            "degraded" if lagging else "ok",
            {"pending": pending, "oldest_age_seconds": round(age, 3)},
        )

    health.add_db(engine)
    health.add_bus(bus)
    health.add("consumer_lag", lag_check, critical=False, timeout_seconds=1.0)
    app = new_app("ledger", title="PocketPay ledger (internal)")
    app.include_router(health_router(health))
    app.include_router(
        _router(engine, clock, relay, bus),
        dependencies=[internal_auth(settings.resolved_internal_token())],
    )
    bus.subscribe(DURABLE, SUBJECTS, traced_consumer(DURABLE, LedgerConsumer(engine, clock)))
    return Component(
        "ledger", app, health, on_start=[relay.start], on_stop=[relay.stop], state={"relay": relay}
    )
