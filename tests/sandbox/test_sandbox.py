"""The sandbox PSP through the official stripe SDK, against a real uvicorn server."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import pytest
import stripe
from fastapi import FastAPI
from sandbox_support import API_KEY, SECRET, SETTLE_DELAY, Receiver, Running, make_client, serving

from pocketpay.kit.clock import ManualClock
from pocketpay.sandbox import create_app
from pocketpay.sandbox.webhooks import sign
from pocketpay.settings import SandboxSettings


async def pay(
    client: stripe.StripeClient, amount: int = 2000, **extra: Any
) -> stripe.PaymentIntent:
    params: dict[str, Any] = {
        "amount": amount,
        "currency": "EUR",
        "payment_method": "pm_card_visa",
        "confirm": True,
        **extra,
    }
    return await client.v1.payment_intents.create_async(params=params)  # type: ignore[arg-type]


async def wait_until(condition: Any, what: str) -> None:
    """Poll ``condition()`` on the loop until it holds (bounded)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


# -- payment intents ---------------------------------------------------------------------


async def test_automatic_capture_succeeds(client: stripe.StripeClient) -> None:
    pi = await pay(client, description="order 42", metadata={"order": "42"})
    assert pi.id.startswith("pi_")
    assert (pi.status, pi.currency, pi.amount_received) == ("succeeded", "eur", 2000)
    assert pi.metadata["order"] == "42"
    assert isinstance(pi.latest_charge, str)
    charge = await client.v1.charges.retrieve_async(pi.latest_charge)
    assert (charge.amount_captured, charge.amount_refunded, charge.captured) == (2000, 0, True)
    assert charge.balance_transaction is not None
    txn = await client.v1.balance_transactions.retrieve_async(str(charge.balance_transaction))
    assert (txn.status, txn.amount, txn.net) == ("pending", 2000, 2000 - txn.fee)
    again = await client.v1.payment_intents.retrieve_async(pi.id)
    assert again.status == "succeeded"


async def test_confirm_later(client: stripe.StripeClient) -> None:
    pi = await client.v1.payment_intents.create_async(params={"amount": 500, "currency": "usd"})
    assert pi.status == "requires_payment_method"
    pi = await client.v1.payment_intents.confirm_async(
        pi.id, params={"payment_method": "pm_card_mastercard"}
    )
    assert pi.status == "succeeded"


async def test_manual_capture_then_partial_capture(
    client: stripe.StripeClient, running: Running
) -> None:
    pi = await pay(client, capture_method="manual")
    assert (pi.status, pi.amount_capturable, pi.amount_received) == ("requires_capture", 2000, 0)
    charge = await client.v1.charges.retrieve_async(str(pi.latest_charge))
    assert charge.captured is False and charge.balance_transaction is None
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.payment_intents.capture_async(pi.id, params={"amount_to_capture": 2001})
    pi = await client.v1.payment_intents.capture_async(pi.id, params={"amount_to_capture": 1500})
    assert (pi.status, pi.amount_received, pi.amount_capturable) == ("succeeded", 1500, 0)
    charge = await client.v1.charges.retrieve_async(str(pi.latest_charge))
    assert (charge.amount, charge.amount_captured) == (2000, 1500)
    types = [e["type"] for e in running.sandbox.events]
    assert types == ["payment_intent.amount_capturable_updated", "payment_intent.succeeded"]


async def test_cancel_uncaptured_and_not_succeeded(
    client: stripe.StripeClient, running: Running
) -> None:
    held = await pay(client, capture_method="manual")
    canceled = await client.v1.payment_intents.cancel_async(
        held.id, params={"cancellation_reason": "requested_by_customer"}
    )
    assert (canceled.status, canceled.amount_capturable) == ("canceled", 0)
    assert running.sandbox.events_of("payment_intent.canceled")
    done = await pay(client)
    with pytest.raises(stripe.InvalidRequestError) as err:
        await client.v1.payment_intents.cancel_async(done.id)
    assert err.value.code == "payment_intent_unexpected_state"


@pytest.mark.parametrize(
    ("card", "decline_code"),
    [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("pm_card_chargeDeclinedExpiredCard", "expired_card"),
    ],
)
async def test_declined_cards(
    client: stripe.StripeClient, running: Running, card: str, decline_code: str
) -> None:
    with pytest.raises(stripe.CardError) as err:
        await pay(client, payment_method=card)
    assert err.value.http_status == 402
    assert err.value.code == "card_declined"
    assert err.value.error is not None
    assert err.value.error.decline_code == decline_code
    pi_id = err.value.error.payment_intent["id"]  # type: ignore[index]
    pi = await client.v1.payment_intents.retrieve_async(pi_id)
    assert pi.status == "requires_payment_method"
    assert pi.last_payment_error is not None
    assert pi.last_payment_error.decline_code == decline_code
    assert [e["type"] for e in running.sandbox.events] == ["payment_intent.payment_failed"]


async def test_unknown_payment_method_and_object(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as err:
        await pay(client, payment_method="pm_card_nope")
    assert (err.value.http_status, err.value.code) == (400, "resource_missing")
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await client.v1.payment_intents.retrieve_async("pi_doesnotexist")
    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")


async def test_expand_latest_charge(client: stripe.StripeClient) -> None:
    pi = await pay(client)
    expanded = await client.v1.payment_intents.retrieve_async(
        pi.id, params={"expand": ["latest_charge.balance_transaction"]}
    )
    charge: Any = expanded.latest_charge
    assert charge.id.startswith("ch_")
    assert charge.balance_transaction.object == "balance_transaction"


# -- refunds -----------------------------------------------------------------------------


async def test_partial_refund_and_over_refund(
    client: stripe.StripeClient, running: Running
) -> None:
    pi = await pay(client)
    refund = await client.v1.refunds.create_async(
        params={"payment_intent": pi.id, "amount": 500, "reason": "requested_by_customer"}
    )
    assert (refund.status, refund.amount, refund.payment_intent) == ("succeeded", 500, pi.id)
    assert (await client.v1.refunds.retrieve_async(refund.id)).amount == 500
    with pytest.raises(stripe.InvalidRequestError) as err:
        await client.v1.refunds.create_async(params={"payment_intent": pi.id, "amount": 1501})
    assert (err.value.http_status, err.value.code, err.value.param) == (
        400,
        "amount_too_large",
        "amount",
    )
    rest = await client.v1.refunds.create_async(params={"charge": str(pi.latest_charge)})
    assert rest.amount == 1500
    charge = await client.v1.charges.retrieve_async(str(pi.latest_charge))
    assert (charge.amount_refunded, charge.refunded) == (2000, True)
    assert len(running.sandbox.events_of("charge.refunded")) == 2


# -- idempotency and auth ----------------------------------------------------------------


async def test_idempotent_replay_and_key_reuse(
    client: stripe.StripeClient, running: Running
) -> None:
    params: Any = {"amount": 700, "currency": "usd", "payment_method": "pm_card_visa"}
    first = await client.v1.payment_intents.create_async(
        params=params, options={"idempotency_key": "order-7"}
    )
    second = await client.v1.payment_intents.create_async(
        params=params, options={"idempotency_key": "order-7"}
    )
    assert first.id == second.id
    assert second.last_response is not None
    assert second.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(running.sandbox.store.payment_intents) == 1
    with pytest.raises(stripe.IdempotencyError):
        await client.v1.payment_intents.create_async(
            params={**params, "amount": 701}, options={"idempotency_key": "order-7"}
        )


async def test_declines_are_replayed_too(client: stripe.StripeClient) -> None:
    params: Any = {"amount": 700, "currency": "usd", "payment_method": "pm_card_chargeDeclined"}
    ids = []
    for _ in range(2):
        with pytest.raises(stripe.CardError) as err:
            await client.v1.payment_intents.create_async(
                params={**params, "confirm": True}, options={"idempotency_key": "decl"}
            )
        ids.append(err.value.error.payment_intent["id"])  # type: ignore[union-attr,index]
    assert ids[0] == ids[1]


async def test_wrong_key_and_basic_auth(running: Running) -> None:
    http = stripe.HTTPXClient()
    try:
        with pytest.raises(stripe.AuthenticationError) as err:
            await make_client(
                running.url, http, key="sk_test_wrong_key_123"
            ).v1.balance.retrieve_async()
        assert err.value.http_status == 401
    finally:
        await http.close_async()
    async with httpx.AsyncClient(base_url=running.url) as raw:
        ok = await raw.get("/v1/balance", auth=(API_KEY, ""))
        missing = await raw.get("/v1/balance")
    assert ok.status_code == 200 and ok.json()["object"] == "balance"
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "invalid_request_error"


# -- webhooks ----------------------------------------------------------------------------


async def test_webhooks_are_signed_like_stripe(
    client: stripe.StripeClient, running: Running, receiver: Receiver
) -> None:
    pi = await pay(client)
    await client.v1.refunds.create_async(params={"payment_intent": pi.id, "amount": 100})
    await running.sandbox.flush_webhooks()
    events = [
        stripe.Webhook.construct_event(r.body.decode(), r.signature, SECRET)
        for r in receiver.received
    ]
    assert [e.type for e in events] == [
        "payment_intent.succeeded",
        "refund.created",
        "charge.refunded",
        "refund.updated",
    ]
    assert events[0].data.object["id"] == pi.id
    assert events[0].id.startswith("evt_") and events[0].livemode is False
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(
            receiver.received[0].body.decode() + " ", receiver.received[0].signature, SECRET
        )


def test_signature_format() -> None:
    payload = '{"id":"evt_1","object":"event","type":"x","data":{"object":{}}}'
    now = int(time.time())
    header = sign(payload, "whsec_x", now)
    digest = hmac.new(b"whsec_x", f"{now}.{payload}".encode(), hashlib.sha256).hexdigest()
    assert header == f"t={now},v1={digest}"
    assert stripe.Webhook.construct_event(payload, header, "whsec_x").id == "evt_1"


async def test_webhook_retried_after_failure(
    client: stripe.StripeClient, running: Running, receiver: Receiver
) -> None:
    receiver.fail_next = 2
    await pay(client)
    await running.sandbox.flush_webhooks()
    (delivery,) = running.sandbox.webhooks.deliveries.values()
    assert (delivery.status, delivery.attempts) == ("delivered", 3)
    assert len(receiver.received) == 1


async def test_webhook_gives_up_after_retries(
    client: stripe.StripeClient, running: Running, receiver: Receiver
) -> None:
    receiver.fail_next = 100
    await pay(client)
    await running.sandbox.flush_webhooks()
    (delivery,) = running.sandbox.webhooks.deliveries.values()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("failed", 4, 500)


async def test_no_webhook_url_only_records(settings: SandboxSettings, clock: ManualClock) -> None:
    app = create_app(settings, clock, webhook_url="")
    sandbox = app.state.sandbox
    async with serving(app) as url:
        http = stripe.HTTPXClient()
        await pay(make_client(url, http))
        await http.close_async()
    await sandbox.flush_webhooks()
    assert [e["type"] for e in sandbox.events] == ["payment_intent.succeeded"]
    assert sandbox.webhooks.deliveries == {}


# -- settlement --------------------------------------------------------------------------


async def test_settlement_follows_the_clock(
    client: stripe.StripeClient, running: Running, clock: ManualClock, receiver: Receiver
) -> None:
    pi = await pay(client)
    charge = await client.v1.charges.retrieve_async(str(pi.latest_charge))
    txn_id = str(charge.balance_transaction)
    assert await running.sandbox.tick() == []
    balance = await client.v1.balance.retrieve_async()
    assert balance.available[0].amount == 0 and balance.pending[0].amount > 0
    clock.advance(SETTLE_DELAY)
    assert await running.sandbox.tick() == [txn_id]
    assert await running.sandbox.tick() == []
    txn = await client.v1.balance_transactions.retrieve_async(txn_id)
    assert txn.status == "available"
    balance = await client.v1.balance.retrieve_async()
    assert (balance.available[0].amount, balance.available[0].currency) == (txn.net, "eur")
    await running.sandbox.flush_webhooks()
    types = [json.loads(r.body)["type"] for r in receiver.received]
    assert types == ["payment_intent.succeeded", "balance.available"]


# -- faults ------------------------------------------------------------------------------


async def test_outage_over_http_switch(client: stripe.StripeClient, running: Running) -> None:
    async with httpx.AsyncClient(base_url=running.url) as ops:
        resp = await ops.post("/_sandbox/faults", json={"outage": True})
        assert resp.json()["outage"] is True
        with pytest.raises(stripe.APIError) as err:
            await client.v1.balance.retrieve_async()
        assert err.value.http_status == 503
        assert (await ops.get("/readyz")).json()["status"] == "degraded"
        await ops.delete("/_sandbox/faults")
        assert (await ops.get("/_sandbox/faults")).json()["outage"] is False
    assert (await client.v1.balance.retrieve_async()).object == "balance"


async def test_error_rate_is_not_stored_for_idempotency(
    client: stripe.StripeClient, running: Running
) -> None:
    running.sandbox.faults.error_rate = 1.0
    params: Any = {"amount": 300, "currency": "usd"}
    with pytest.raises(stripe.APIError) as err:
        await client.v1.payment_intents.create_async(
            params=params, options={"idempotency_key": "e"}
        )
    assert err.value.http_status == 500
    running.sandbox.faults.reset()
    pi = await client.v1.payment_intents.create_async(
        params=params, options={"idempotency_key": "e"}
    )
    assert pi.status == "requires_payment_method"


async def test_timeout_fault_hangs_past_client_timeout(running: Running) -> None:
    running.sandbox.faults.timeout = True
    http = stripe.HTTPXClient(timeout=0.2)
    try:
        with pytest.raises(stripe.APIConnectionError):
            await pay(make_client(running.url, http))
    finally:
        await http.close_async()
    await wait_until(lambda: running.sandbox.faults.hanging == 0, "the hang to see the disconnect")
    assert running.sandbox.store.payment_intents == {}


async def test_timeout_released_request_is_processed(
    client: stripe.StripeClient, running: Running
) -> None:
    running.sandbox.faults.timeout = True
    call = asyncio.create_task(pay(client))
    await wait_until(lambda: running.sandbox.faults.hanging == 1, "the request to hang")
    running.sandbox.faults.timeout = False
    assert (await call).status == "succeeded"


# -- embedding ---------------------------------------------------------------------------


async def test_mounted_under_a_prefix(settings: SandboxSettings, clock: ManualClock) -> None:
    sandbox_app = create_app(settings, clock, webhook_url="")
    parent = FastAPI()
    parent.mount("/sandbox", sandbox_app)
    sandbox = sandbox_app.state.sandbox
    async with serving(parent) as url:
        http = stripe.HTTPXClient()
        client = make_client(f"{url}/sandbox", http)
        assert (await pay(client)).status == "succeeded"
        sandbox.faults.outage = True
        with pytest.raises(stripe.APIError):
            await client.v1.balance.retrieve_async()
        async with httpx.AsyncClient(base_url=url) as ops:
            assert (await ops.get("/sandbox/healthz")).status_code == 200
            assert (await ops.delete("/sandbox/_sandbox/faults")).json()["outage"] is False
        assert (await client.v1.balance.retrieve_async()).object == "balance"
        await http.close_async()
    await sandbox.aclose()


async def test_lifespan_runs_settlement_loop(settings: SandboxSettings, clock: ManualClock) -> None:
    app = create_app(settings, clock, webhook_url="")
    sandbox = app.state.sandbox
    sandbox.tick_interval_seconds = 0.01
    async with sandbox.lifespan(app):
        http = stripe.HTTPXClient()
        async with serving(app) as url:
            await pay(make_client(url, http))
        await http.close_async()
        clock.advance(SETTLE_DELAY)
        await wait_until(lambda: sandbox.events_of("balance.available"), "balance.available")


async def test_latency_fault_delays_responses(
    client: stripe.StripeClient, running: Running
) -> None:
    running.sandbox.faults.latency_ms = 60
    started = time.perf_counter()
    await client.v1.balance.retrieve_async()
    assert time.perf_counter() - started >= 0.06


async def test_health_ops_and_events_endpoints(
    client: stripe.StripeClient, running: Running
) -> None:
    pi = await pay(client)
    event_id = running.sandbox.events[0]["id"]
    event = await client.v1.events.retrieve_async(event_id)
    assert (event.type, event.data.object["id"]) == ("payment_intent.succeeded", pi.id)
    async with httpx.AsyncClient(base_url=running.url, auth=(API_KEY, "")) as raw:
        assert (await raw.get("/readyz")).json()["status"] == "ready"
        deps = (await raw.get("/health/deps")).json()
        assert deps["checks"]["webhooks"]["events"] == 1
        assert (await raw.get("/metrics")).status_code == 200
        unknown = await raw.get("/v1/nothing_here")
        assert unknown.status_code == 404
        assert unknown.json()["error"]["type"] == "invalid_request_error"
        tick = await raw.post("/_sandbox/tick")
        assert tick.json() == {"available": []}
        bad = await raw.post(
            "/v1/payment_intents", data={"amount": "5", "currency": "usd", "x": "1"}
        )
        assert bad.json()["error"]["message"] == "Received unknown parameter: x"
