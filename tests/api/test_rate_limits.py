"""Rate limits: token buckets per API key, per user and per client IP.

The buckets' arithmetic is tested with a clock the test moves (no sleeping). Through the API,
the stack gets tiny bursts and a refill of one token per 1000 s, so no token comes back while
the test runs: what is refused is decided by counting, not by timing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pocketpay.gateway.ratelimit import RateLimited, TokenBuckets
from pocketpay.kit.clock import ManualClock
from tests.api.helpers import assert_problem
from tests.api.test_api_keys import new_key
from tests.support import PASSWORD, Stack, running_stack

SLOW = 0.001  # tokens per second: one per 1000 s
LIMITS = {
    "key_per_second": SLOW,
    "key_burst": 3,
    "user_per_second": SLOW,
    "user_burst": 5,
    "ip_per_second": SLOW,
    "ip_burst": 6,
}


def test_a_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    clock = ManualClock()
    buckets = TokenBuckets("API key", 2.0, 3, clock)
    for _ in range(3):
        buckets.take("a")
    with pytest.raises(RateLimited) as refused:
        buckets.take("a")
    assert refused.value.status == 429 and refused.value.code == "rate_limited"
    assert refused.value.headers == {
        "Retry-After": "1",  # half a second, rounded up to whole seconds
        "RateLimit-Limit": "3",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "1",
    }
    buckets.take("b")  # another client's bucket is full
    clock.advance(0.25)  # half a token
    with pytest.raises(RateLimited):
        buckets.take("a")
    clock.advance(0.25)
    buckets.take("a")
    clock.advance(3600)  # refilled, but never past the burst
    for _ in range(3):
        buckets.take("a")
    with pytest.raises(RateLimited):
        buckets.take("a")


def test_retry_after_counts_the_seconds_until_a_token() -> None:
    clock = ManualClock()
    buckets = TokenBuckets("user", 0.1, 1, clock)
    buckets.take("u")
    with pytest.raises(RateLimited) as refused:
        buckets.take("u")
    assert refused.value.headers["Retry-After"] == "10"
    clock.advance(7.5)
    with pytest.raises(RateLimited) as refused:
        buckets.take("u")
    assert refused.value.headers["Retry-After"] == "3"
    assert "0.1 per second" in refused.value.detail and "user" in refused.value.detail


def test_buckets_are_bounded() -> None:
    clock = ManualClock()
    buckets = TokenBuckets("client IP", 1.0, 2, clock, max_buckets=4)
    for i in range(4):
        buckets.take(f"ip{i}")
    clock.advance(1)  # every bucket refilled: forgetting them loses nothing
    buckets.take("ip4")
    assert len(buckets._buckets) == 1
    for i in range(5, 12):  # all draining: the oldest go
        buckets.take(f"ip{i}")
    assert len(buckets._buckets) <= 4
    assert "ip11" in buckets._buckets


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def limited(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(request.param, tmp_path, rate_limits=LIMITS) as s:
        yield s


def assert_limited(r: httpx.Response, what: str) -> None:
    body = assert_problem(r, 429, "rate_limited")
    assert f"for this {what}" in body["detail"], body
    retry = int(r.headers["retry-after"])
    assert 990 <= retry <= 1000, retry  # (1 token) / (0.001 per second), less what refilled
    assert r.headers["ratelimit-remaining"] == "0"
    assert r.headers["ratelimit-reset"] == str(retry)


async def test_limits_per_key_per_user_and_per_ip(limited: Stack) -> None:
    stack = limited
    alice = await stack.user()  # signup: the first of the IP's 6
    first, second = await new_key(stack, alice), await new_key(stack, alice)  # alice's 1, 2

    for _ in range(3):  # the first key's burst (and alice's 3, 4, 5)
        assert (await stack.get(first, "/api/v1/payments")).status_code == 200
    assert_limited(await stack.get(first, "/api/v1/payments"), "API key")
    # The second key has its own bucket, but alice has spent her 5.
    assert_limited(await stack.get(second, "/api/v1/payments"), "user")
    assert_limited(await stack.get(alice, "/api/v1/me"), "user")  # her session too

    # Bob is another user: his keys and session have buckets of their own.
    bob = await stack.user()  # the IP's 2nd
    bobs = await new_key(stack, bob)
    assert (await stack.get(bobs, "/api/v1/payments")).status_code == 200
    assert (await stack.get(bob, "/api/v1/me")).status_code == 200

    # Signup, login and refresh share the client IP's bucket (3rd to 6th here).
    login = {"email": bob["user"]["email"], "password": PASSWORD}
    assert (await stack.http.post("/api/v1/auth/login", json=login)).status_code == 200
    wrong = login | {"password": "wrong-password-1"}
    r = await stack.http.post("/api/v1/auth/login", json=wrong)
    assert_problem(r, 401, "auth.invalid_credentials")
    refresh = {"refresh_token": bob["refresh_token"]}
    assert (await stack.http.post("/api/v1/auth/refresh", json=refresh)).status_code == 200
    assert (await stack.http.post("/api/v1/auth/login", json=login)).status_code == 200
    assert_limited(await stack.http.post("/api/v1/auth/login", json=login), "client IP")
    signup = {"email": "new@example.com", "password": PASSWORD, "name": "N"}
    assert_limited(await stack.http.post("/api/v1/auth/signup", json=signup), "client IP")
    # Authenticated endpoints do not count against the IP.
    assert (await stack.get(bob, "/api/v1/wallets")).status_code == 200


async def test_limits_can_be_turned_off(tmp_path: Path) -> None:
    off: dict[str, Any] = LIMITS | {"enabled": False, "key_burst": 1, "user_burst": 1}
    async with running_stack("sqlite", tmp_path, rate_limits=off | {"ip_burst": 1}) as stack:
        alice = await stack.user()
        key = await new_key(stack, alice)
        for who in (key, key, alice, alice):
            assert (await stack.get(who, "/api/v1/payments")).status_code == 200
        login = {"email": alice["user"]["email"], "password": PASSWORD}
        for _ in range(2):
            assert (await stack.http.post("/api/v1/auth/login", json=login)).status_code == 200
