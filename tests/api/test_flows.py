"""The main user flows over real HTTP: top-up by card, transfer, refund, cancel, capture."""

from __future__ import annotations

from tests.support import Stack, eventually


async def test_top_up_moves_through_every_state_and_credits_the_wallet(stack: Stack) -> None:
    alice = await stack.user()
    payment = await stack.pay(alice, 5000, until="settled")
    assert payment["amount_captured_minor"] == 5000
    events = (await stack.get(alice, f"/api/v1/payments/{payment['id']}/events")).json()["data"]
    assert [e["to_status"] for e in events] == ["created", "authorized", "captured", "settled"]
    wallet = await stack.wait_available(alice, 5000)
    assert wallet == {
        "id": f"wal_{alice['user']['id']}_USD",
        "object": "wallet",
        "currency": "USD",
        "available_minor": 5000,
        "pending_minor": 0,
        "posted_minor": 5000,
        "debt_minor": 0,
        "debt_account_id": None,
    }
    assert await stack.ledger_problems() == []


async def test_transfer_then_refund_what_is_left(stack: Stack) -> None:
    alice, bob = await stack.user(), await stack.user()
    payment = await stack.pay(alice, 5000)
    await stack.wait_available(alice, 5000)
    r = await stack.post(
        alice,
        "/api/v1/transfers",
        {
            "recipient": bob["user"]["email"],
            "amount_minor": 3000,
            "currency": "USD",
            "note": "dinner",
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "posted"
    assert (await stack.wallet(bob))["available_minor"] == 3000
    # Only 2000 is left in the wallet: a full refund of 5000 is refused, nothing changes.
    r = await stack.post(alice, f"/api/v1/payments/{payment['id']}/refunds", {})
    assert r.status_code == 422
    assert r.json()["code"] == "ledger.insufficient_funds"
    assert (await stack.wallet(alice))["available_minor"] == 2000
    r = await stack.post(alice, f"/api/v1/payments/{payment['id']}/refunds", {"amount_minor": 2000})
    assert r.status_code == 202, r.text
    refund = r.json()
    assert refund["status"] == "succeeded"
    await stack.wait_available(alice, 0)
    got = (await stack.get(alice, f"/api/v1/refunds/{refund['id']}")).json()
    assert got["amount_minor"] == 2000
    assert await stack.ledger_problems() == []


async def test_manual_capture_partial_then_full_refund_marks_refunded(stack: Stack) -> None:
    alice = await stack.user()
    payment = await stack.pay(alice, 8000, capture="manual", until="authorized")

    async def held() -> dict[str, int] | None:
        w = await stack.wallet(alice)
        return w if w["pending_minor"] == 8000 else None

    assert (await eventually(held))["available_minor"] == 0
    r = await stack.post(alice, f"/api/v1/payments/{payment['id']}/capture", {"amount_minor": 6000})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "captured"
    assert r.json()["amount_captured_minor"] == 6000
    await stack.wait_available(alice, 6000)
    assert (await stack.wallet(alice))["pending_minor"] == 0
    r = await stack.post(alice, f"/api/v1/payments/{payment['id']}/refunds", {})
    assert r.status_code == 202
    done = await stack.wait_status(alice, payment["id"], "refunded")
    assert done["amount_refunded_minor"] == 6000
    await stack.wait_available(alice, 0)
    assert await stack.ledger_problems() == []


async def test_cancel_an_authorized_payment_releases_the_hold(stack: Stack) -> None:
    alice = await stack.user()
    payment = await stack.pay(alice, 4000, capture="manual", until="authorized")
    r = await stack.post(alice, f"/api/v1/payments/{payment['id']}/cancel", {})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "canceled"

    async def released() -> dict[str, int] | None:
        w = await stack.wallet(alice)
        return w if w["pending_minor"] == 0 else None

    await eventually(released)
    r = await stack.post(alice, f"/api/v1/payments/{payment['id']}/capture", {})
    assert r.status_code == 409
    assert r.json()["code"] == "payments.invalid_transition"


async def test_declined_card_fails_with_the_decline_code(stack: Stack) -> None:
    alice = await stack.user()
    payment = await stack.pay(
        alice, 1000, pm="pm_card_chargeDeclinedInsufficientFunds", until="failed"
    )
    assert payment["failure_code"] == "insufficient_funds"
    assert (await stack.wallet(alice))["available_minor"] == 0


async def test_wallet_entries_page_newest_first(stack: Stack) -> None:
    alice, bob = await stack.user(), await stack.user()
    await stack.pay(alice, 5000)
    await stack.wait_available(alice, 5000)
    for amount in (100, 200, 300):
        r = await stack.post(
            alice,
            "/api/v1/transfers",
            {"recipient": bob["user"]["email"], "amount_minor": amount, "currency": "USD"},
        )
        assert r.status_code == 201
    seen: list[dict[str, object]] = []
    cursor: str | None = None
    for _ in range(10):
        params = {"limit": 2} | ({"starting_after": cursor} if cursor else {})
        page = (await stack.get(alice, "/api/v1/wallets/USD/entries", **params)).json()
        seen += page["data"]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    amounts = [(e["direction"], e["amount_minor"], e["kind"]) for e in seen]
    assert amounts[:3] == [
        ("debit", 300, "posted"),
        ("debit", 200, "posted"),
        ("debit", 100, "posted"),
    ]
    assert ("credit", 5000, "post_pending") in amounts  # the capture of the card payment
    seqs = [e["seq"] for e in seen]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs)
    bob_entries = (await stack.get(bob, "/api/v1/wallets/USD/entries")).json()["data"]
    assert [e["direction"] for e in bob_entries] == ["credit"] * 3
