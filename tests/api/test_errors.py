"""Bad input over every money-moving POST and the auth endpoints: each gets a 4xx
problem+json with a stable code, and changes nothing a user can see."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from pocketpay.kit.tokens import Principal
from tests.api.helpers import (
    VISA,
    assert_problem,
    funded,
    intents_of,
    post_chunked,
    post_raw,
    quiet_snapshot,
    snapshot,
)
from tests.support import PASSWORD, Stack, eventually

V = "validation.failed"
HUGE = 10**12 + 1

# Values no amount_minor may take: negative, zero, fractional, strings, too large, booleans,
# null and containers.
BAD_AMOUNTS: list[Any] = [-1, 0, 1.5, 1.0, "500", "1e3", HUGE, 10**30, True, False, None, [5], {}]
BAD_CURRENCIES: list[Any] = ["XXX", "usd1", "US", "", "u$d", 840, None, ["USD"]]


def payment_cases() -> list[tuple[str, Any]]:
    cases: list[tuple[str, Any]] = []
    cases += [(f"amount {a!r}", VISA | {"amount_minor": a}) for a in BAD_AMOUNTS]
    cases += [(f"currency {c!r}", VISA | {"currency": c}) for c in BAD_CURRENCIES]
    cases += [(f"missing {f}", {k: v for k, v in VISA.items() if k != f}) for f in VISA]
    cases += [
        ("unknown field", VISA | {"amount": 500}),
        ("card number instead of a token", VISA | {"payment_method": "4242424242424242"}),
        ("payment_method int", VISA | {"payment_method": 4242}),
        ("capture_method", VISA | {"capture_method": "later"}),
        ("metadata not strings", VISA | {"metadata": {"k": 1}}),
        ("metadata a list", VISA | {"metadata": ["k"]}),
        ("metadata too many keys", VISA | {"metadata": {f"k{i}": "v" for i in range(51)}}),
        ("metadata long key", VISA | {"metadata": {"k" * 41: "v"}}),
        ("description too long", VISA | {"description": "d" * 501}),
        ("description int", VISA | {"description": 5}),
        ("empty object", {}),
        ("a list", [VISA]),
        ("a string", "pay me"),
        ("a number", 500),
        ("null", None),
    ]
    return cases


async def test_bad_payment_bodies_get_4xx_and_change_nothing(sqlite_stack: Stack) -> None:
    # Request validation runs before any database work: one backend is enough.
    stack = sqlite_stack
    alice = await stack.user()
    await stack.pay(alice, 1000, until="settled")
    await stack.wait_available(alice, 1000)
    before = await quiet_snapshot(stack, alice)
    intents = len(stack.sandbox.store.payment_intents)
    path = "/api/v1/payments"

    for label, body in payment_cases():
        assert_problem(await stack.post(alice, path, body), 422, V, label)
    for label, raw, ctype in [
        ("malformed JSON", b'{"amount_minor": 5', "application/json"),
        ("trailing garbage", json.dumps(VISA).encode() + b"}", "application/json"),
        ("invalid UTF-8", b'{"description": "\xff\xfe"}', "application/json"),
        ("empty body", b"", "application/json"),
    ]:
        code = V if label == "empty body" else "request.malformed_json"
        status = 422 if label == "empty body" else 400
        assert_problem(await post_raw(stack, alice, path, raw, content_type=ctype), status, code)
    text = await post_raw(stack, alice, path, json.dumps(VISA).encode(), content_type="text/plain")
    assert_problem(text, 415, "request.unsupported_media_type", "text/plain body")
    big = VISA | {"description": "x" * (70 * 1024)}
    assert_problem(await stack.post(alice, path, big), 413, "request.too_large", "Content-Length")
    chunked = await post_chunked(stack, alice, path, 80, b" " * 1024)
    assert_problem(chunked, 413, "request.too_large", "chunked")

    assert await snapshot(stack, alice) == before
    assert len(stack.sandbox.store.payment_intents) == intents


async def test_nul_in_payment_text_is_rejected(stack: Stack) -> None:
    alice = await stack.user()
    r = await stack.post(alice, "/api/v1/payments", VISA | {"description": "a\x00b"})
    assert_problem(r, 422, V)
    r = await stack.post(alice, "/api/v1/payments", VISA | {"metadata": {"k": "a\x00b"}})
    assert_problem(r, 422, V)


async def test_bad_capture_cancel_and_refund_inputs_change_nothing(stack: Stack) -> None:
    alice = await stack.user()
    held = await stack.pay(alice, 4000, capture="manual", until="authorized")
    done = await stack.pay(alice, 3000, until="settled")

    async def settled_wallet() -> dict[str, int] | None:
        w = await stack.wallet(alice)
        return w if (w["pending_minor"], w["available_minor"]) == (4000, 3000) else None

    await eventually(settled_wallet)
    before = await quiet_snapshot(stack, alice)
    capture = f"/api/v1/payments/{held['id']}/capture"
    cancel = f"/api/v1/payments/{held['id']}/cancel"
    refund = f"/api/v1/payments/{done['id']}/refunds"

    for a in [x for x in BAD_AMOUNTS if x is not None]:
        assert_problem(await stack.post(alice, capture, {"amount_minor": a}), 422, V, f"cap {a!r}")
        assert_problem(await stack.post(alice, refund, {"amount_minor": a}), 422, V, f"ref {a!r}")
    for path in (capture, cancel, refund):
        assert_problem(await stack.post(alice, path, {"surprise": 1}), 422, V, "unknown field")
        assert_problem(await stack.post(alice, path, [1]), 422, V, "a list")
        assert_problem(await post_raw(stack, alice, path, b"{"), 400, "request.malformed_json")
    for reason in ["because", 1, ""]:
        assert_problem(await stack.post(alice, refund, {"reason": reason}), 422, V, "reason")

    # Well-formed but not allowed by the payment's state or amounts.
    too_much = {"amount_minor": 4001}
    assert_problem(
        await stack.post(alice, capture, too_much), 422, "payments.capture_exceeds_authorized"
    )
    assert_problem(
        await stack.post(alice, refund, {"amount_minor": 3001}),
        422,
        "payments.refund_exceeds_captured",
    )
    for path in (f"/api/v1/payments/{done['id']}/capture", f"/api/v1/payments/{done['id']}/cancel"):
        assert_problem(await stack.post(alice, path, {}), 409, "payments.invalid_transition")
    held_refund = f"/api/v1/payments/{held['id']}/refunds"
    assert_problem(await stack.post(alice, held_refund, {}), 409, "payments.invalid_transition")

    assert await snapshot(stack, alice) == before
    assert [pi.status for pi in intents_of(stack, held["id"])] == ["requires_capture"]
    assert [pi.amount_received for pi in intents_of(stack, done["id"])] == [3000]
    assert await stack.ledger_problems() == []


async def test_bad_transfers_get_4xx_and_move_no_money(stack: Stack) -> None:
    alice, bob = await funded(stack, 5000), await stack.user()
    before = await quiet_snapshot(stack, alice, bob)
    path = "/api/v1/transfers"
    ok = {"recipient": bob["user"]["email"], "amount_minor": 100, "currency": "USD"}

    cases: list[tuple[str, Any]] = []
    cases += [(f"amount {a!r}", ok | {"amount_minor": a}) for a in BAD_AMOUNTS]
    cases += [(f"currency {c!r}", ok | {"currency": c}) for c in BAD_CURRENCIES]
    cases += [(f"missing {f}", {k: v for k, v in ok.items() if k != f}) for f in ok]
    cases += [
        ("recipient not an email", ok | {"recipient": "bob"}),
        ("recipient int", ok | {"recipient": 7}),
        ("recipient a list", ok | {"recipient": [bob["user"]["email"]]}),
        ("unknown field", ok | {"to": bob["user"]["email"]}),
        ("note too long", ok | {"note": "n" * 501}),
        ("note int", ok | {"note": 1}),
        ("note with NUL", ok | {"note": "a\x00b"}),
        ("a list", [ok]),
        ("null", None),
    ]
    for label, body in cases:
        assert_problem(await stack.post(alice, path, body), 422, V, label)
    assert_problem(await post_raw(stack, alice, path, b"[1,"), 400, "request.malformed_json")

    stranger = ok | {"recipient": "nobody-here@example.com"}
    assert_problem(await stack.post(alice, path, stranger), 404, "transfers.recipient_not_found")
    for me in (alice["user"]["email"], alice["user"]["email"].upper()):
        r = await stack.post(alice, path, ok | {"recipient": me})
        assert 400 <= r.status_code < 500, r.text
        assert_problem(r, r.status_code, r.json()["code"], "to yourself")
    for amount, currency in [(5001, "USD"), (10**12, "USD"), (1, "EUR")]:
        r = await stack.post(alice, path, ok | {"amount_minor": amount, "currency": currency})
        assert_problem(r, 422, "ledger.insufficient_funds", f"{amount} {currency}")

    assert await snapshot(stack, alice, bob) == before
    assert await stack.ledger_problems() == []


def protected_calls(pid: str, rid: str, tid: str) -> list[tuple[str, str, Any]]:
    pay = f"/api/v1/payments/{pid}"
    return [
        ("GET", "/api/v1/me", None),
        ("GET", "/api/v1/payments", None),
        ("POST", "/api/v1/payments", VISA),
        ("GET", pay, None),
        ("GET", f"{pay}/events", None),
        ("POST", f"{pay}/capture", {}),
        ("POST", f"{pay}/cancel", {}),
        ("POST", f"{pay}/refunds", {}),
        ("GET", f"/api/v1/refunds/{rid}", None),
        ("GET", "/api/v1/wallets", None),
        ("GET", "/api/v1/wallets/USD/entries", None),
        ("GET", "/api/v1/transfers", None),
        ("POST", "/api/v1/transfers", {"recipient": "x@example.com", "amount_minor": 1}),
        ("GET", f"/api/v1/transfers/{tid}", None),
    ]


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the HS512 case
async def test_missing_invalid_or_expired_tokens_get_401_and_change_nothing(
    sqlite_stack: Stack,
) -> None:
    # Token checks run before any database work: one backend is enough.
    stack = sqlite_stack
    alice, bob = await funded(stack, 2000), await stack.user()
    payment = (await stack.get(alice, "/api/v1/payments")).json()["data"][0]
    r = await stack.post(alice, f"/api/v1/payments/{payment['id']}/refunds", {"amount_minor": 1})
    refund = r.json()
    transfer = (
        await stack.post(
            alice,
            "/api/v1/transfers",
            {"recipient": bob["user"]["email"], "amount_minor": 5, "currency": "USD"},
        )
    ).json()
    await stack.wait_available(alice, 1994)
    before = await quiet_snapshot(stack, alice, bob)

    gateway = stack.runtime.components["gateway"].state
    me = Principal(alice["user"]["id"], "user", alice["user"]["email"])
    now = datetime.now(UTC)
    settings = stack.runtime.settings.auth
    claims = {
        "sub": me.user_id,
        "role": "admin",
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(hours=1)).timestamp()),
        "typ": "access",
    }
    secret = stack.runtime.settings.auth.jwt_secret
    other = "another-secret-" + "y" * 40
    variants: list[tuple[str, dict[str, str], str]] = [
        ("no header", {}, "auth.unauthorized"),
        ("not bearer", {"Authorization": f"Basic {alice['access_token']}"}, "auth.unauthorized"),
        ("empty bearer", {"Authorization": "Bearer"}, "auth.unauthorized"),
        ("garbage", {"Authorization": "Bearer not-a-jwt"}, "auth.invalid_token"),
        (
            "refresh token",
            {"Authorization": f"Bearer {alice['refresh_token']}"},
            "auth.invalid_token",
        ),
        (
            "expired",
            {"Authorization": "Bearer " + gateway["tokens"].issue(me, now - timedelta(days=1))},
            "auth.token_expired",
        ),
        ("wrong secret", _bearer(claims, other), "auth.invalid_token"),
        ("wrong audience", _bearer(claims | {"aud": "someone-else"}, secret), "auth.invalid_token"),
        ("wrong issuer", _bearer(claims | {"iss": "evil"}, secret), "auth.invalid_token"),
        ("not an access token", _bearer(claims | {"typ": "refresh"}, secret), "auth.invalid_token"),
        (
            "no exp",
            _bearer({k: v for k, v in claims.items() if k != "exp"}, secret),
            "auth.invalid_token",
        ),
        ("alg none", {"Authorization": "Bearer " + _unsigned(claims)}, "auth.invalid_token"),
        ("HS512", _bearer(claims, secret, "HS512"), "auth.invalid_token"),
    ]
    # Every variant on a read and on two money-moving POSTs; the common ones everywhere.
    common = {"no header", "garbage", "expired"}
    for method, path, body in protected_calls(payment["id"], refund["id"], transfer["id"]):
        every = path in ("/api/v1/me", "/api/v1/payments", "/api/v1/transfers")
        for label, headers, code in variants:
            if not every and label not in common:
                continue
            r = await stack.http.request(
                method, path, json=body, headers=headers | {"Idempotency-Key": "k-" + label}
            )
            assert_problem(r, 401, code, f"{label} {method} {path}")
            if code == "auth.unauthorized":
                assert r.headers.get("www-authenticate") == "Bearer"

    assert await snapshot(stack, alice, bob) == before
    assert (await stack.get(alice, "/api/v1/me")).json()["id"] == alice["user"]["id"]


def _bearer(claims: dict[str, Any], secret: str, alg: str = "HS256") -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt.encode(claims, secret, algorithm=alg)}


def _unsigned(claims: dict[str, Any]) -> str:
    import base64

    def part(obj: dict[str, Any]) -> str:
        raw = json.dumps(obj, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


async def test_another_users_objects_are_404_not_403(stack: Stack) -> None:
    bob, carol, alice = await funded(stack, 3000), await stack.user(), await stack.user()
    (captured,) = (await stack.get(bob, "/api/v1/payments")).json()["data"]
    held = await stack.pay(bob, 700, capture="manual", until="authorized")
    r = await stack.post(bob, f"/api/v1/payments/{captured['id']}/refunds", {"amount_minor": 10})
    assert r.status_code == 202, r.text
    refund = r.json()
    r = await stack.post(
        bob,
        "/api/v1/transfers",
        {"recipient": carol["user"]["email"], "amount_minor": 20, "currency": "USD"},
    )
    assert r.status_code == 201, r.text
    transfer = r.json()

    async def held_in_wallet() -> dict[str, int] | None:
        w = await stack.wallet(bob)
        return w if (w["available_minor"], w["pending_minor"]) == (2970, 700) else None

    await eventually(held_in_wallet)
    before = await quiet_snapshot(stack, bob, carol, alice)

    for pid in (held["id"], captured["id"]):
        for method, path, body in [
            ("GET", f"/api/v1/payments/{pid}", None),
            ("GET", f"/api/v1/payments/{pid}/events", None),
            ("POST", f"/api/v1/payments/{pid}/capture", {}),
            ("POST", f"/api/v1/payments/{pid}/cancel", {}),
            ("POST", f"/api/v1/payments/{pid}/refunds", {}),
        ]:
            r = await (
                stack.post(alice, path, body) if method == "POST" else stack.get(alice, path)
            )
            assert_problem(r, 404, "not_found", f"alice {method} {path}")
    assert_problem(await stack.get(alice, f"/api/v1/refunds/{refund['id']}"), 404, "not_found")
    assert_problem(await stack.get(alice, f"/api/v1/transfers/{transfer['id']}"), 404, "not_found")
    # Both sides of a transfer see it; the owner sees their refund.
    for party in (bob, carol):
        r = await stack.get(party, f"/api/v1/transfers/{transfer['id']}")
        assert r.status_code == 200, r.text
    assert (await stack.get(bob, f"/api/v1/refunds/{refund['id']}")).status_code == 200
    # Nor do lists leak them.
    assert (await stack.get(alice, "/api/v1/payments")).json()["data"] == []
    assert (await stack.get(alice, "/api/v1/transfers")).json()["data"] == []

    assert await snapshot(stack, bob, carol, alice) == before
    assert [pi.status for pi in intents_of(stack, held["id"])] == ["requires_capture"]


async def test_ids_that_cannot_exist_are_404_and_cursors_are_checked(stack: Stack) -> None:
    """Path ids end up in internal URLs: '#', '?', NUL or '..' must not cut or redirect them."""
    alice = await stack.user()
    await stack.pay(alice, 100, until="settled")
    await stack.wait_available(alice, 100)
    before = await quiet_snapshot(stack, alice)
    for bad in ["%23", "%3F", "x%23", "x%3Fa%3Db", "a%00b", "%2E%2E", "x" * 65, "%25", "%20"]:
        for method, path in [
            ("GET", f"/api/v1/payments/{bad}"),
            ("GET", f"/api/v1/payments/{bad}/events"),
            ("POST", f"/api/v1/payments/{bad}/capture"),
            ("POST", f"/api/v1/payments/{bad}/cancel"),
            ("POST", f"/api/v1/payments/{bad}/refunds"),
            ("GET", f"/api/v1/refunds/{bad}"),
            ("GET", f"/api/v1/transfers/{bad}"),
        ]:
            r = await (stack.post(alice, path, {}) if method == "POST" else stack.get(alice, path))
            assert_problem(r, 404, "not_found", f"{method} {path}")
    for path in ("/api/v1/payments", "/api/v1/transfers", "/api/v1/wallets/USD/entries"):
        for cursor in ["a\x00b", "a#b", "x" * 65, "../x"]:
            r = await stack.get(alice, path, starting_after=cursor)
            assert_problem(r, 400, "request.invalid_cursor", f"{path} cursor {cursor!r}")
        assert_problem(await stack.get(alice, path, limit=0), 422, V)
        assert_problem(await stack.get(alice, path, limit=101), 422, V)
        assert_problem(await stack.get(alice, path, limit="ten"), 422, V)
    assert_problem(await stack.get(alice, "/api/v1/payments", status="paid"), 422, V)
    for currency in ["XXX", "usd1", "%23"]:
        r = await stack.get(alice, f"/api/v1/wallets/{currency}/entries")
        assert_problem(r, 422, "validation.unknown_currency", currency)
    assert await snapshot(stack, alice) == before


async def test_signup_login_refresh_and_me(stack: Stack) -> None:
    signup = "/api/v1/auth/signup"
    alice = await stack.user()
    email = alice["user"]["email"]
    assert alice["token_type"] == "Bearer" and alice["expires_in"] > 0
    assert alice["user"]["role"] == "user"
    me = (await stack.get(alice, "/api/v1/me")).json()
    assert me == alice["user"]

    for same in (email, email.upper()):
        r = await stack.http.post(signup, json={"email": same, "password": PASSWORD, "name": "A"})
        assert_problem(r, 409, "auth.email_taken", same)
    good = {"email": "new-user@example.com", "password": PASSWORD, "name": "New"}
    for label, body in [
        ("short password", good | {"password": "short"}),
        ("bad email", good | {"email": "not-an-email"}),
        ("email with NUL", good | {"email": "a\x00@example.com"}),
        ("empty name", good | {"name": ""}),
        ("name with NUL", good | {"name": "a\x00b"}),
        ("name int", good | {"name": 5}),
        ("missing password", {k: v for k, v in good.items() if k != "password"}),
        ("unknown field", good | {"role": "admin"}),
        ("a list", [good]),
    ]:
        assert_problem(await stack.http.post(signup, json=body), 422, V, label)
    r = await stack.http.post(signup, content=b"{", headers={"Content-Type": "application/json"})
    assert_problem(r, 400, "request.malformed_json")
    # None of those created the account.
    r = await stack.http.post(
        "/api/v1/auth/login", json={"email": good["email"], "password": PASSWORD}
    )
    assert_problem(r, 401, "auth.invalid_credentials")

    login = "/api/v1/auth/login"
    wrong = await stack.http.post(login, json={"email": email, "password": PASSWORD + "x"})
    unknown = await stack.http.post(
        login, json={"email": "ghost@example.com", "password": PASSWORD}
    )
    a = assert_problem(wrong, 401, "auth.invalid_credentials")
    b = assert_problem(unknown, 401, "auth.invalid_credentials")
    assert a["detail"] == b["detail"]  # no hint whether the account exists
    assert_problem(await stack.http.post(login, json={"email": email}), 422, V)
    r = await stack.http.post(login, json={"email": email.upper(), "password": PASSWORD})
    assert r.status_code == 200, r.text
    other_session = r.json()

    refresh = "/api/v1/auth/refresh"
    r1 = await stack.http.post(refresh, json={"refresh_token": alice["refresh_token"]})
    assert r1.status_code == 200, r1.text
    rotated = r1.json()
    assert rotated["refresh_token"] != alice["refresh_token"]
    assert rotated["user"]["id"] == alice["user"]["id"]
    headers = {"Authorization": f"Bearer {rotated['access_token']}"}
    assert (await stack.http.get("/api/v1/me", headers=headers)).json()["email"] == email
    # The used refresh token no longer works, and presenting it revokes its successor too.
    again = await stack.http.post(refresh, json={"refresh_token": alice["refresh_token"]})
    assert_problem(again, 401, "auth.invalid_refresh_token")
    stolen = await stack.http.post(refresh, json={"refresh_token": rotated["refresh_token"]})
    assert_problem(stolen, 401, "auth.invalid_refresh_token")
    # Another session (its own token family) is unaffected.
    r = await stack.http.post(refresh, json={"refresh_token": other_session["refresh_token"]})
    assert r.status_code == 200, r.text
    for bad in ["", "nope", "x" * 201, "a\x00b"]:
        r = await stack.http.post(refresh, json={"refresh_token": bad})
        assert r.status_code in (401, 422), r.text
        assert_problem(r, r.status_code, r.json()["code"], repr(bad))
    assert_problem(await stack.http.post(refresh, json={"token": "x"}), 422, V)
