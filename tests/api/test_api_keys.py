"""API keys: create (secret shown once), use as a bearer wherever an access token works, scopes,
revoke (refused at once), roll (the old secret stops, with or without an overlap), and keys
never managing keys. On SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from pocketpay.gateway.api_keys import ApiKeyExpired, ApiKeyRoll, ApiKeyService
from pocketpay.kit.clock import ManualClock
from tests.api.helpers import VISA, assert_problem
from tests.support import Stack

KEYS = "/api/v1/api-keys"


async def new_key(stack: Stack, user: dict[str, Any], **body: Any) -> dict[str, Any]:
    r = await stack.http.post(KEYS, json={"name": "script"} | body, headers=user["headers"])
    assert r.status_code == 201, r.text
    key: dict[str, Any] = r.json()
    key["headers"] = {"Authorization": f"Bearer {key['secret']}"}
    return key


async def test_a_key_acts_as_its_user_and_its_secret_is_shown_once(stack: Stack) -> None:
    alice = await stack.user()
    key = await new_key(stack, alice)
    secret = key["secret"]
    assert secret.startswith("pp_sk_") and len(secret) == len("pp_sk_") + 43
    assert key["id"].startswith("key_") and key["object"] == "api_key"
    assert key["scopes"] == ["full"] and key["name"] == "script"
    assert key["hint"] == f"pp_sk_...{secret[-4:]}"
    assert key["last_used_at"] is None and key["revoked_at"] is None

    me = await stack.get(key, "/api/v1/me")
    assert me.status_code == 200 and me.json()["id"] == alice["user"]["id"]
    created = await stack.post(key, "/api/v1/payments", VISA)
    assert created.status_code == 202, created.text
    pid = created.json()["id"]
    got = await stack.get(key, f"/api/v1/payments/{pid}")
    assert got.status_code == 200 and got.json()["id"] == pid
    # The same user: the payment is alice's, seen with her access token.
    assert (await stack.get(alice, f"/api/v1/payments/{pid}")).status_code == 200

    listed = await stack.get(alice, KEYS)
    one = await stack.get(alice, f"{KEYS}/{key['id']}")
    for r in (listed, one):
        assert r.status_code == 200, r.text
        assert secret not in r.text and secret[6:] not in r.text and '"secret"' not in r.text
    assert listed.json()["object"] == "list" and listed.json()["has_more"] is False
    assert [k["id"] for k in listed.json()["data"]] == [key["id"]]
    assert one.json()["last_used_at"] is not None  # the key was used


async def test_revoked_and_unknown_keys_are_refused(stack: Stack) -> None:
    alice = await stack.user()
    key = await new_key(stack, alice)
    assert (await stack.get(key, "/api/v1/payments")).status_code == 200
    r = await stack.http.post(f"{KEYS}/{key['id']}/revoke", headers=alice["headers"])
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    assert_problem(await stack.get(key, "/api/v1/payments"), 401, "auth.api_key_revoked")
    assert_problem(await stack.post(key, "/api/v1/payments", VISA), 401, "auth.api_key_revoked")
    # Revoking again changes nothing.
    again = await stack.http.post(f"{KEYS}/{key['id']}/revoke", headers=alice["headers"])
    assert again.json()["revoked_at"] == r.json()["revoked_at"]

    forged = {"headers": {"Authorization": "Bearer pp_sk_" + "A" * 43}}
    assert_problem(await stack.get(forged, "/api/v1/me"), 401, "auth.invalid_api_key")
    # Another user's key is not found for bob.
    bob = await stack.user()
    other = await stack.get(bob, f"{KEYS}/{key['id']}")
    assert_problem(other, 404, "not_found")
    r = await stack.http.post(f"{KEYS}/{key['id']}/revoke", headers=bob["headers"])
    assert_problem(r, 404, "not_found")


async def test_scopes_refuse_what_they_do_not_allow(stack: Stack) -> None:
    alice = await stack.user()
    reader = await new_key(stack, alice, scopes=["read_only"])
    payer = await new_key(stack, alice, scopes=["payments"])
    both = await new_key(stack, alice, scopes=["payments", "read_only", "payments"])
    assert both["scopes"] == ["payments", "read_only"]

    assert (await stack.get(reader, "/api/v1/wallets")).status_code == 200
    refused = await stack.post(reader, "/api/v1/payments", VISA)
    assert_problem(refused, 403, "auth.insufficient_scope")
    assert (await stack.get(alice, "/api/v1/payments")).json()["data"] == []  # nothing made

    made = await stack.post(payer, "/api/v1/payments", VISA)
    assert made.status_code == 202, made.text
    assert (await stack.get(payer, "/api/v1/payments")).status_code == 200
    assert_problem(await stack.get(payer, "/api/v1/wallets"), 403, "auth.insufficient_scope")
    send = {"recipient": "x@example.com", "amount_minor": 1, "currency": "USD"}
    assert_problem(
        await stack.post(payer, "/api/v1/transfers", send), 403, "auth.insufficient_scope"
    )

    assert (await stack.get(both, f"/api/v1/payments/{made.json()['id']}")).status_code == 200
    assert_problem(await stack.get(both, "/api/v1/me"), 403, "auth.insufficient_scope")
    assert_problem(await stack.post(both, "/api/v1/payments", VISA), 403, "auth.insufficient_scope")

    bad = await stack.http.post(
        KEYS, json={"name": "x", "scopes": ["full", "read_only"]}, headers=alice["headers"]
    )
    assert_problem(bad, 422, "validation.failed")
    bad = await stack.http.post(
        KEYS, json={"name": "x", "scopes": ["admin"]}, headers=alice["headers"]
    )
    assert_problem(bad, 422, "validation.failed")


async def test_keys_cannot_manage_keys(stack: Stack) -> None:
    alice = await stack.user()
    key = await new_key(stack, alice)
    for r in (
        await stack.http.post(KEYS, json={"name": "child"}, headers=key["headers"]),
        await stack.http.get(KEYS, headers=key["headers"]),
        await stack.http.post(f"{KEYS}/{key['id']}/roll", headers=key["headers"]),
        await stack.http.post(f"{KEYS}/{key['id']}/revoke", headers=key["headers"]),
    ):
        assert_problem(r, 403, "auth.session_required")
    assert_problem(await stack.http.get(KEYS), 401, "auth.unauthorized")
    assert (await stack.get(key, "/api/v1/me")).status_code == 200  # still active


async def test_roll_replaces_the_secret(stack: Stack) -> None:
    alice = await stack.user()
    old = await new_key(stack, alice, name="ci", scopes=["read_only"])
    r = await stack.http.post(f"{KEYS}/{old['id']}/roll", headers=alice["headers"])
    assert r.status_code == 201, r.text
    new = r.json() | {"headers": {"Authorization": f"Bearer {r.json()['secret']}"}}
    assert new["id"] != old["id"] and new["secret"] != old["secret"]
    assert (new["name"], new["scopes"]) == ("ci", ["read_only"])
    assert_problem(await stack.get(old, "/api/v1/me"), 401, "auth.api_key_revoked")
    assert (await stack.get(new, "/api/v1/me")).status_code == 200
    # A revoked key cannot be rolled.
    again = await stack.http.post(f"{KEYS}/{old['id']}/roll", headers=alice["headers"])
    assert_problem(again, 409, "api_keys.not_active")

    # With an overlap both secrets work until it ends.
    r = await stack.http.post(
        f"{KEYS}/{new['id']}/roll", json={"expires_in_seconds": 3600}, headers=alice["headers"]
    )
    assert r.status_code == 201, r.text
    newer = {"headers": {"Authorization": f"Bearer {r.json()['secret']}"}}
    assert (await stack.get(new, "/api/v1/me")).status_code == 200
    assert (await stack.get(newer, "/api/v1/me")).status_code == 200
    rolled = (await stack.get(alice, f"{KEYS}/{new['id']}")).json()
    assert rolled["expires_at"] is not None and rolled["revoked_at"] is None
    too_long = await stack.http.post(
        f"{KEYS}/{r.json()['id']}/roll",
        json={"expires_in_seconds": 8 * 24 * 3600},
        headers=alice["headers"],
    )
    assert_problem(too_long, 422, "validation.failed")


async def test_overlap_ends_and_last_used_is_written_once_a_minute(stack: Stack) -> None:
    """The service on the stack's database, with a clock the test moves."""
    alice = await stack.user()
    clock = ManualClock(stack.runtime.clock.now())
    keys = ApiKeyService(stack.runtime.engine, clock)
    key = await new_key(stack, alice)

    async def last_used() -> str | None:
        return (await keys.get(alice["user"]["id"], key["id"])).last_used_at

    caller = await keys.resolve(key["secret"])
    assert caller.principal.user_id == alice["user"]["id"] and caller.key_id == key["id"]
    first = await last_used()
    assert first == clock.now().isoformat()
    clock.advance(59)
    await keys.resolve(key["secret"])
    assert await last_used() == first  # no write within the minute
    clock.advance(1)
    await keys.resolve(key["secret"])
    assert await last_used() == clock.now().isoformat()

    rolled = await keys.roll(alice["user"]["id"], key["id"], ApiKeyRoll(expires_in_seconds=30))
    clock.advance(29)
    await keys.resolve(key["secret"])  # still in its overlap
    clock.advance(1)
    with pytest.raises(ApiKeyExpired):
        await keys.resolve(key["secret"])
    assert (await keys.resolve(rolled.secret)).key_id == rolled.id
