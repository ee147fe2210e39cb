"""A small circuit breaker: closed -> open after N consecutive failures -> half-open after a
cool-down (one trial call) -> closed on success. Time comes from the injected clock."""

from __future__ import annotations

from typing import Literal

from pocketpay.kit.clock import Clock
from pocketpay.kit.metrics import BREAKER_STATE

State = Literal["closed", "open", "half_open"]
_GAUGE = {"closed": 0, "half_open": 1, "open": 2}


class BreakerOpen(Exception):
    """The call was not made: the breaker is open."""


class CircuitBreaker:
    def __init__(
        self, name: str, clock: Clock, *, failure_threshold: int = 5, reset_seconds: float = 30.0
    ) -> None:
        self.name = name
        self._clock = clock
        self._threshold = failure_threshold
        self._reset = reset_seconds
        self._failures = 0
        self._opened_at = 0.0
        self._state: State = "closed"
        BREAKER_STATE.labels(name).set(0)

    @property
    def state(self) -> State:
        if self._state == "open" and self._clock.monotonic() - self._opened_at >= self._reset:
            self._set("half_open")
        return self._state

    def _set(self, state: State) -> None:
        self._state = state
        BREAKER_STATE.labels(self.name).set(_GAUGE[state])

    def before_call(self) -> None:
        if self.state == "open":
            raise BreakerOpen(f"circuit {self.name} is open")

    def record_success(self) -> None:
        self._failures = 0
        if self._state != "closed":
            self._set("closed")

    def record_failure(self) -> None:
        self._failures += 1
        if self._state == "half_open" or self._failures >= self._threshold:
            self._opened_at = self._clock.monotonic()
            self._set("open")
