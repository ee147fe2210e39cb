"""Stripe's conventions on the public API: list objects and their parameters (cursors both
ways, created ranges, filters), unknown parameters, malformed and foreign cursors, metadata
on payments, refunds and transfers, 415 for non-JSON bodies, 405 with Allow."""

from __future__ import annotations

import time
from typing import Any

from tests.api.helpers import assert_problem, funded, post_raw
from tests.support import Stack, eventually

LISTS = ("/api/v1/payments", "/api/v1/transfers")


async def ids(stack: Stack, user: dict[str, Any], path: str, **params: Any) -> list[str]:
    r = await stack.get(user, path, **params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and isinstance(body["has_more"], bool), body
    return [o["id"] for o in body["data"]]


async def test_payment_lists_page_both_ways_and_filter(stack: Stack) -> None:
    alice, bob = await stack.user(), await stack.user()
    made = [(await stack.pay(alice, 100 + i, until=None))["id"] for i in range(5)]
    euro = await stack.post(
        alice,
        "/api/v1/payments",
        {"amount_minor": 300, "currency": "EUR", "payment_method": "pm_card_visa"},
    )
    assert euro.status_code == 202, euro.text
    await stack.pay(bob, 100, until=None)  # never in alice's lists
    newest_first = [euro.json()["id"], *reversed(made)]
    path = "/api/v1/payments"
    assert await ids(stack, alice, path) == newest_first

    page = (await stack.get(alice, path, limit=2)).json()
    assert [p["id"] for p in page["data"]] == newest_first[:2]
    assert page["has_more"] and page["next_cursor"] == newest_first[1]
    after = await ids(stack, alice, path, limit=2, starting_after=page["next_cursor"])
    assert after == newest_first[2:4]
    tail = (await stack.get(alice, path, limit=10, starting_after=newest_first[3])).json()
    assert [p["id"] for p in tail["data"]] == newest_first[4:]
    assert tail["has_more"] is False and tail["next_cursor"] is None
    # ending_before: the objects just newer than the cursor, still newest first.
    before = (await stack.get(alice, path, limit=2, ending_before=newest_first[4])).json()
    assert [p["id"] for p in before["data"]] == newest_first[2:4]
    assert before["has_more"] and before["next_cursor"] == newest_first[2]
    assert await ids(stack, alice, path, ending_before=newest_first[0]) == []

    assert await ids(stack, alice, path, currency="eur") == newest_first[:1]
    assert await ids(stack, alice, path, currency="USD") == newest_first[1:]

    # Wait until every payment rests (settled): a status filter is checked against statuses
    # that no longer move under it.
    async def resting() -> set[str] | None:
        found = {p["status"] for p in (await stack.get(alice, path)).json()["data"]}
        return found if found <= {"settled", "failed", "canceled"} else None

    statuses = await eventually(resting)
    for status in statuses:
        listed = (await stack.get(alice, path, status=status)).json()["data"]
        assert listed and {p["status"] for p in listed} == {status}

    now = int(time.time())
    assert await ids(stack, alice, path, **{"created[gte]": now - 3600}) == newest_first
    assert await ids(stack, alice, path, **{"created[lt]": now - 3600}) == []
    assert await ids(stack, alice, path, **{"created[gt]": now + 3600}) == []
    assert await ids(stack, alice, path, **{"created[lte]": now + 3600}) == newest_first

    # Cursors: malformed, unknown, another user's, both at once.
    bobs = (await ids(stack, bob, path))[0]
    for params in (
        {"starting_after": "tr_01ABC"},
        {"starting_after": "pay_"},
        {"ending_before": "pay_01JD5Q9V6W0XKQ4Y7M3N2P8R1T"},
        {"starting_after": bobs},
        {"starting_after": made[0], "ending_before": made[1]},
    ):
        assert_problem(await stack.get(alice, path, **params), 400, "request.invalid_cursor")


async def test_unknown_query_parameters_are_refused_by_name(stack: Stack) -> None:
    alice = await stack.user()
    pay = await stack.pay(alice, 500, until=None)
    for path in (
        *LISTS,
        "/api/v1/wallets",
        f"/api/v1/payments/{pay['id']}",
        f"/api/v1/payments/{pay['id']}/refunds",
        "/api/v1/wallets/USD/entries",
        "/api/v1/me",
    ):
        for name in ("expand", "created[gte", "limit_", "owner_id"):
            r = await stack.get(alice, path, **{name: "1"})
            body = assert_problem(r, 400, "request.unknown_parameter", f"{path}?{name}")
            assert repr(name) in body["detail"], body
    r = await stack.http.post(
        "/api/v1/payments?amount=5",
        json={"amount_minor": 5, "currency": "USD", "payment_method": "pm_card_visa"},
        headers=alice["headers"] | {"Idempotency-Key": "k-unknown-param"},
    )
    assert_problem(r, 400, "request.unknown_parameter")
    assert len(await ids(stack, alice, "/api/v1/payments")) == 1  # nothing was created


async def test_form_bodies_are_415_and_wrong_methods_405_with_allow(stack: Stack) -> None:
    alice = await stack.user()
    for path in ("/api/v1/payments", "/api/v1/transfers", "/api/v1/auth/login"):
        form = b"amount_minor=500&currency=USD"
        r = await post_raw(
            stack, alice, path, form, content_type="application/x-www-form-urlencoded"
        )
        assert_problem(r, 415, "request.unsupported_media_type", path)
    for method, path, allow in [
        ("DELETE", "/api/v1/payments", "GET, POST"),
        ("PUT", "/api/v1/payments/pay_x", "GET"),
        ("GET", "/api/v1/payments/pay_x/capture", "POST"),
        ("PATCH", "/api/v1/transfers", "GET, POST"),
        ("GET", "/api/v1/auth/login", "POST"),
        ("DELETE", "/api/v1/admin/stuck", "GET"),
    ]:
        r = await stack.http.request(method, path, headers=alice["headers"])
        assert_problem(r, 405, "request.method_not_allowed", f"{method} {path}")
        assert r.headers["allow"] == allow


async def test_refunds_and_transfers_carry_metadata_and_list(stack: Stack) -> None:
    alice = await funded(stack, 5000)
    bob = await stack.user()
    payment = (await stack.get(alice, "/api/v1/payments")).json()["data"][0]
    refunds = f"/api/v1/payments/{payment['id']}/refunds"
    made = []
    for i in range(3):
        r = await stack.post(alice, refunds, {"amount_minor": 100, "metadata": {"n": str(i)}})
        assert r.status_code == 202, r.text
        assert r.json()["metadata"] == {"n": str(i)}
        made.append(r.json()["id"])
    listed = (await stack.get(alice, refunds)).json()
    assert {r["id"] for r in listed["data"]} == set(made) and listed["has_more"] is False
    assert [r["metadata"]["n"] for r in listed["data"]] == ["2", "1", "0"]
    first = (await stack.get(alice, refunds, limit=1)).json()
    rest = await ids(stack, alice, refunds, starting_after=first["next_cursor"])
    assert [first["data"][0]["id"], *rest] == [r["id"] for r in listed["data"]]
    assert_problem(await stack.get(bob, refunds), 404, "not_found")

    meta = {"order": "6735", "k" * 40: "v" * 500}
    sent = await stack.post(
        alice,
        "/api/v1/transfers",
        {
            "recipient": bob["user"]["email"],
            "amount_minor": 50,
            "currency": "USD",
            "metadata": meta,
        },
    )
    assert sent.status_code == 201, sent.text
    transfer = (await stack.get(bob, f"/api/v1/transfers/{sent.json()['id']}")).json()
    for obj, kind in [(transfer, "transfer"), (listed["data"][0], "refund"), (payment, "payment")]:
        assert obj["object"] == kind and obj["id"] and obj["created_at"], obj
        assert isinstance(obj["metadata"], dict), obj
    assert transfer["metadata"] == meta
    assert await ids(stack, bob, "/api/v1/transfers", currency="EUR") == []
    assert await ids(stack, bob, "/api/v1/transfers", currency="USD") == [transfer["id"]]

    for bad, where in [
        ({f"k{i}": "v" for i in range(51)}, "51 keys"),
        ({"k" * 41: "v"}, "40"),
        ({"k": "v" * 501}, "500"),
        ({"k": 5}, "string"),
    ]:
        to_bob = {"recipient": bob["user"]["email"], "amount_minor": 1, "currency": "USD"}
        for path, body in [("/api/v1/transfers", to_bob), (refunds, {"amount_minor": 1})]:
            r = await stack.post(alice, path, body | {"metadata": bad})
            problem = assert_problem(r, 422, "validation.failed", f"{path} {where}")
            assert problem["errors"][0]["field"].startswith("metadata"), problem
    # Nothing moved: the three refunds and the one transfer only.
    assert len(await ids(stack, alice, refunds)) == 3
    assert len(await ids(stack, alice, "/api/v1/transfers")) == 1


async def test_wallet_entries_page_both_ways_by_seq(stack: Stack) -> None:
    alice = await funded(stack, 5000)
    bob = await stack.user()
    for i in range(4):
        r = await stack.post(
            alice,
            "/api/v1/transfers",
            {"recipient": bob["user"]["email"], "amount_minor": 100 + i, "currency": "USD"},
        )
        assert r.status_code == 201, r.text
    path = "/api/v1/wallets/USD/entries"
    every = (await stack.get(alice, path, limit=100)).json()["data"]
    seqs = [e["seq"] for e in every]
    assert len(seqs) >= 5 and seqs == sorted(seqs, reverse=True)

    page = (await stack.get(alice, path, limit=2)).json()
    assert [e["seq"] for e in page["data"]] == seqs[:2]
    assert page["has_more"] and page["next_cursor"] == str(seqs[1])
    after = (await stack.get(alice, path, limit=2, starting_after=page["next_cursor"])).json()
    assert [e["seq"] for e in after["data"]] == seqs[2:4]
    before = (await stack.get(alice, path, limit=2, ending_before=str(seqs[3]))).json()
    assert [e["seq"] for e in before["data"]] == seqs[1:3]  # just newer, newest first
    assert before["has_more"] and before["next_cursor"] == str(seqs[1])
    newest = (await stack.get(alice, path, ending_before=str(seqs[0]))).json()
    assert newest["data"] == [] and newest["has_more"] is False

    now = int(time.time())
    ranged = (await stack.get(alice, path, limit=100, **{"created[gte]": now - 3600})).json()
    assert [e["seq"] for e in ranged["data"]] == seqs
    assert (await stack.get(alice, path, **{"created[gt]": now + 3600})).json()["data"] == []
    for params in ({"starting_after": "tr_1"}, {"starting_after": "1", "ending_before": "2"}):
        assert_problem(await stack.get(alice, path, **params), 400, "request.invalid_cursor")
