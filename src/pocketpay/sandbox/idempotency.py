"""Stripe's ``Idempotency-Key``: a replay returns the stored response, a reuse with different
parameters is an ``idempotency_error``. Keys are scoped per API key.

Like Stripe, only requests that ran are stored: successes and card declines. Validation
errors and injected faults are not, so a corrected retry with the same key may go through.
The ``Sandbox`` writes each stored response to its database in the same transaction as the
operation's objects, and ``restore``s them at start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pocketpay.sandbox.errors import idempotency_mismatch


@dataclass(frozen=True)
class StoredResponse:
    fingerprint: str
    status: int
    body: dict[str, Any]
    stored_at: float = 0.0


def should_store(status: int) -> bool:
    return status < 400 or status == 402


class IdempotencyStore:
    """Responses by (API key, idempotency key), forgotten after ``ttl_seconds`` (24 h)."""

    def __init__(self, ttl_seconds: float = 24 * 3600) -> None:
        self.ttl_seconds = ttl_seconds
        self._responses: dict[tuple[str, str], StoredResponse] = {}

    def lookup(self, api_key: str, key: str, fingerprint: str) -> StoredResponse | None:
        """The stored response for a replay; raises on a reuse with other parameters."""
        stored = self._responses.get((api_key, key))
        if stored is not None and stored.fingerprint != fingerprint:
            raise idempotency_mismatch(key)
        return stored

    def save(self, api_key: str, key: str, stored: StoredResponse) -> bool:
        """Keep the response if it is one to keep (True), and forget expired ones."""
        kept = should_store(stored.status)
        if kept:
            self._responses[(api_key, key)] = stored
        self._prune(stored.stored_at - self.ttl_seconds)
        return kept

    def restore(self, entries: list[tuple[str, str, StoredResponse]]) -> None:
        """Replace memory by stored keys, oldest first (the order ``_prune`` relies on)."""
        self._responses = {(api_key, key): stored for api_key, key, stored in entries}

    def _prune(self, cutoff: float) -> None:
        """Drop expired entries; insertion order is age order, so stop at the first young one."""
        while self._responses:
            oldest = next(iter(self._responses))
            if self._responses[oldest].stored_at >= cutoff:
                return
            del self._responses[oldest]

    def __len__(self) -> int:
        return len(self._responses)
