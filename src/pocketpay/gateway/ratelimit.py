"""Rate limits: token buckets per API key, per user and per client IP, in memory.

A bucket holds up to ``burst`` tokens and refills at ``rate_per_second``; a request takes one
token or is refused with 429 ``rate_limited``, ``Retry-After`` (whole seconds until a token
is back) and the ``RateLimit-Limit``/``RateLimit-Remaining``/``RateLimit-Reset`` headers.

The buckets live in the process: with N gateway processes a client gets up to N times the
configured rate (the load balancer spreads it). That is the price of no shared store and of a
check that costs a dict lookup and a few float operations, with no I/O. Time comes from the
injected clock's ``monotonic``, so tests move it instead of sleeping.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from fastapi import Request

from pocketpay.kit.clock import Clock
from pocketpay.kit.errors import AppError
from pocketpay.settings import RateLimitSettings

# Buckets kept per limiter. Past this, refilled buckets (idle clients: forgetting them loses
# nothing) are dropped; if every bucket is still draining, the oldest are.
MAX_BUCKETS = 100_000


class RateLimited(AppError):
    code = "rate_limited"
    status = 429
    title = "Too many requests"


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float  # clock.monotonic() of the last refill


class TokenBuckets:
    """One limit (rate and burst) applied to each of many clients, by name."""

    def __init__(
        self,
        what: str,
        rate_per_second: float,
        burst: int,
        clock: Clock,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:
        assert rate_per_second > 0 and burst >= 1 and max_buckets >= 1
        self.what = what  # "API key", "user", "client IP": said in the error
        self.rate = rate_per_second
        self.burst = burst
        self._clock = clock
        self._max = max_buckets
        self._buckets: dict[str, _Bucket] = {}

    def take(self, name: str) -> None:
        """Take a token from ``name``'s bucket, or raise ``RateLimited``."""
        now = self._clock.monotonic()
        bucket = self._buckets.get(name)
        if bucket is None:
            if len(self._buckets) >= self._max:
                self._evict(now)
            bucket = self._buckets[name] = _Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        if bucket.tokens < 1.0:
            raise self._refusal((1.0 - bucket.tokens) / self.rate)
        bucket.tokens -= 1.0

    def _refusal(self, wait_seconds: float) -> RateLimited:
        retry = max(1, math.ceil(wait_seconds))
        return RateLimited(
            f"Too many requests for this {self.what}: the limit is {self.rate:g} per second "
            f"with bursts of {self.burst}. Retry after {retry} s.",
            headers={
                "Retry-After": str(retry),
                "RateLimit-Limit": str(self.burst),
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(retry),
            },
        )

    def _evict(self, now: float) -> None:
        full = [
            name
            for name, b in self._buckets.items()
            if b.tokens + (now - b.at) * self.rate >= self.burst
        ]
        for name in full:
            del self._buckets[name]
        if len(self._buckets) >= self._max:  # all still draining: drop the oldest half
            for name in list(self._buckets)[: max(1, self._max // 2)]:
                del self._buckets[name]


class RateLimits:
    """The gateway's three limits, built from settings (``enabled=False``: none applies)."""

    def __init__(self, settings: RateLimitSettings, clock: Clock) -> None:
        self.enabled = settings.enabled
        self.keys = TokenBuckets("API key", settings.key_per_second, settings.key_burst, clock)
        self.users = TokenBuckets("user", settings.user_per_second, settings.user_burst, clock)
        self.ips = TokenBuckets("client IP", settings.ip_per_second, settings.ip_burst, clock)

    def caller(self, user_id: str, key_id: str | None) -> None:
        """An authenticated request: the key's bucket (if a key sent it), then the user's,
        which every key and session of the user share."""
        if not self.enabled:
            return
        if key_id is not None:
            self.keys.take(key_id)
        self.users.take(user_id)

    def per_ip(self, route_paths: Collection[str]) -> Callable[[Request], Awaitable[None]]:
        """A dependency for a router: requests to one of ``route_paths`` (route templates,
        the unauthenticated endpoints) take a token from the client IP's bucket. Behind a
        proxy the client IP is the proxy's unless uvicorn trusts its X-Forwarded-For
        (``FORWARDED_ALLOW_IPS``, default 127.0.0.1)."""
        paths = frozenset(route_paths)

        async def limit(request: Request) -> None:
            if not self.enabled:
                return
            route = request.scope.get("route")
            if getattr(route, "path", None) in paths:
                client = request.client
                self.ips.take(client.host if client else "unknown")

        return limit
