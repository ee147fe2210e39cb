"""A small circuit breaker: closed -> open after N consecutive failures -> half-open after a
cool-down -> closed when the trial call succeeds, open again when it fails. Time comes from
the injected clock.

Half-open admits exactly one trial call at a time: ``before_call()`` returns True for it, and
every other caller gets ``BreakerOpen`` until the trial concludes (``record_success``,
``record_failure`` or ``release`` with ``trial=True``). A trial that never concludes (its
task was cancelled, an unexpected error) stops blocking after ``reset_seconds``. Outcomes of
calls admitted before the breaker opened change nothing once it is open: only the trial
decides. Health pings do not use the breaker at all: an idle system's pings must neither
close nor open it.
"""

from __future__ import annotations

from typing import Literal

from pocketpay.kit.clock import Clock
from pocketpay.kit.metrics import BREAKER_STATE

State = Literal["closed", "open", "half_open"]
_GAUGE = {"closed": 0, "half_open": 1, "open": 2}


class BreakerOpen(Exception):
    """The call was not made: the breaker is open (or half-open with its trial running)."""


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
        self._trial_at: float | None = None  # when the running half-open trial was admitted
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

    def before_call(self) -> bool:
        """Admit a call or raise ``BreakerOpen``. True when the call is the half-open trial:
        pass that to ``record_success``/``record_failure``/``release``."""
        state = self.state
        if state == "closed":
            return False
        now = self._clock.monotonic()
        trial_running = self._trial_at is not None and now - self._trial_at < self._reset
        if state == "open" or trial_running:
            raise BreakerOpen(f"circuit {self.name} is {state.replace('_', '-')}")
        self._trial_at = now
        return True

    def record_success(self, trial: bool = False) -> None:
        if trial:
            self._trial_at = None
        elif self._state != "closed":
            return  # admitted before the breaker opened: only the trial decides now
        self._failures = 0
        if self._state != "closed":
            self._set("closed")

    def record_failure(self, trial: bool = False) -> None:
        if trial:
            self._trial_at = None
        elif self._state != "closed":
            return
        self._failures += 1
        if trial or self._failures >= self._threshold:
            self._opened_at = self._clock.monotonic()
            self._set("open")

    def release(self, trial: bool) -> None:
        """The call ended without a verdict (cancelled, an unexpected error): if it was the
        trial, let the next caller try."""
        if trial:
            self._trial_at = None
