"""The alert state machine: observations in, notices out. Pure: no I/O, the time is an argument.

Each (component, rule) pair has a tracker fed one observation per poll (``bad`` true, false, or
None for "no data this time", which changes nothing):

* **debounce**: the condition becomes active after ``open_after`` consecutive bad observations
  (``fail_threshold`` for readiness, 1 for lag and PSP error rate, which are windowed already,
  and 1 for dead letters and stuck attempts: any is an alert, at once)
  and inactive after ``recover_threshold`` consecutive good ones;
* **opened / resolved**: one notice when the active condition is first announced, one when it
  ends. A resolution is always sent for an announced alert, flapping or not;
* **flapping**: when the raw state changed ``flap_threshold`` times within ``flap_window``, one
  ``opened`` notice for the ``<rule>.flapping`` alert replaces the storm, and opened/resolved
  notices pause. It ends, with one ``resolved`` notice stating the current state, once at most
  half that many changes remain in the window (hysteresis, as Nagios does) and the debounced
  state is settled; the paused alert is then reconciled (opened or resolved) if it must be;
* **reminders**: an announced alert (flapping included) is repeated at most every
  ``reminder_seconds``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from pocketpay.settings import MonitorSettings

NOT_READY = "not_ready"
LEDGER_LAG = "ledger_lag"
PSP_ERROR_RATE = "psp_error_rate"
DEAD_LETTERS = "dead_letters"  # the component's ``dead_letters`` readiness check is degraded
# payments' ``stuck_attempts`` readiness check is degraded: PSP attempts the reconciler gave up on
STUCK_ATTEMPTS = "stuck_attempts"
FLAPPING_SUFFIX = ".flapping"

NoticeKind = Literal["opened", "resolved", "reminder"]


@dataclass(frozen=True)
class _Words:
    opened: str
    resolved: str
    still: str
    bad: str  # the state, in a word
    good: str


_WORDS: dict[str, _Words] = {
    NOT_READY: _Words("is down", "is up again", "is still down", "down", "up"),
    LEDGER_LAG: _Words(
        "has a ledger consumer lag above the threshold",
        "has its ledger consumer lag back under the threshold",
        "still has a ledger consumer lag above the threshold",
        "lagging",
        "caught up",
    ),
    PSP_ERROR_RATE: _Words(
        "sees a PSP error rate above the threshold",
        "sees the PSP error rate back under the threshold",
        "still sees a PSP error rate above the threshold",
        "failing",
        "fine",
    ),
    DEAD_LETTERS: _Words(
        "has dead-lettered events (see pocketpay dlq list)",
        "has no dead letters left",
        "still has dead-lettered events",
        "dead letters",
        "none",
    ),
    STUCK_ATTEMPTS: _Words(
        "has PSP attempts the reconciler gave up on (see GET /api/v1/admin/stuck)",
        "has no stuck PSP attempts left",
        "still has stuck PSP attempts",
        "stuck attempts",
        "none",
    ),
}


def _words(rule: str) -> _Words:
    return _WORDS.get(rule) or _Words(
        f"breaks rule {rule}",
        f"meets rule {rule} again",
        f"still breaks rule {rule}",
        "bad",
        "good",
    )


@dataclass(frozen=True)
class Thresholds:
    fail_threshold: int = 3
    recover_threshold: int = 2
    flap_window_seconds: float = 600.0
    flap_threshold: int = 4
    reminder_seconds: float = 1800.0

    def __post_init__(self) -> None:
        assert self.fail_threshold >= 1 and self.recover_threshold >= 1
        assert self.flap_threshold >= 2 and self.flap_window_seconds > 0
        assert self.reminder_seconds > 0

    @classmethod
    def from_settings(cls, settings: MonitorSettings) -> Thresholds:
        return cls(
            fail_threshold=settings.fail_threshold,
            recover_threshold=settings.recover_threshold,
            flap_window_seconds=settings.flap_window_seconds,
            flap_threshold=settings.flap_threshold,
            reminder_seconds=settings.reminder_seconds,
        )

    def open_after(self, rule: str) -> int:
        return self.fail_threshold if rule == NOT_READY else 1


@dataclass(frozen=True)
class Observation:
    component: str
    rule: str
    bad: bool | None  # None: no data this poll; the tracker is left as it is
    detail: str = ""


@dataclass(frozen=True)
class Notice:
    kind: NoticeKind
    component: str
    rule: str  # a rule name, or "<rule>.flapping"
    at: datetime
    since: datetime  # when the condition (or the flapping) began
    message: str

    @property
    def key(self) -> tuple[str, str]:
        return self.component, self.rule

    @property
    def is_flapping(self) -> bool:
        return self.rule.endswith(FLAPPING_SUFFIX)


@dataclass
class _Tracker:
    component: str
    rule: str
    changes: deque[datetime]  # raw state changes, newest last, bounded
    raw: bool | None = None
    bad_streak: int = 0
    good_streak: int = 0
    active: bool = False
    active_since: datetime | None = None
    announced: bool = False
    last_notice_at: datetime | None = None
    flapping_since: datetime | None = None
    flap_notice_at: datetime | None = None
    detail: str = field(default="")


def format_duration(seconds: float) -> str:
    s = max(0, int(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m"
    return f"{m}m{sec:02d}s" if m else f"{sec}s"


class AlertRules:
    def __init__(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds
        self._trackers: dict[tuple[str, str], _Tracker] = {}

    def evaluate(self, observations: Iterable[Observation], now: datetime) -> list[Notice]:
        notices: list[Notice] = []
        for obs in observations:
            notices.extend(self._step(self._tracker(obs), obs, now))
        return notices

    def is_open(self, component: str, rule: str) -> bool:
        """Whether the alert is announced: what a person has been told is wrong."""
        base = self._trackers.get((component, rule.removesuffix(FLAPPING_SUFFIX)))
        if base is None:
            return False
        return base.flapping_since is not None if rule.endswith(FLAPPING_SUFFIX) else base.announced

    def restore(self, component: str, rule: str, since: datetime, now: datetime) -> None:
        """Resume an alert announced before a restart: it stays open until the condition has
        been good for ``recover_threshold`` observations, then resolves as usual."""
        t = self._tracker(Observation(component, rule, None))
        t.raw, t.bad_streak, t.good_streak = True, self.thresholds.open_after(rule), 0
        t.active, t.active_since, t.announced, t.last_notice_at = True, since, True, now

    def _tracker(self, obs: Observation) -> _Tracker:
        key = (obs.component, obs.rule)
        if key not in self._trackers:
            bound = max(8, 2 * self.thresholds.flap_threshold)
            self._trackers[key] = _Tracker(obs.component, obs.rule, deque(maxlen=bound))
        return self._trackers[key]

    def _step(self, t: _Tracker, obs: Observation, now: datetime) -> list[Notice]:
        if obs.bad is None:
            return []
        t.detail = obs.detail
        self._record(t, obs.bad, now)
        if t.flapping_since is not None:
            return self._while_flapping(t, now)
        if len(t.changes) >= self.thresholds.flap_threshold:
            t.flapping_since = t.flap_notice_at = now
            return [self._flapping_notice(t, "opened", now)]
        return self._steady(t, now)

    def _record(self, t: _Tracker, bad: bool, now: datetime) -> None:
        if t.raw is not None and t.raw != bad:
            t.changes.append(now)
        t.raw = bad
        horizon = now - timedelta(seconds=self.thresholds.flap_window_seconds)
        while t.changes and t.changes[0] <= horizon:
            t.changes.popleft()
        t.bad_streak = t.bad_streak + 1 if bad else 0
        t.good_streak = 0 if bad else t.good_streak + 1
        if not t.active and t.bad_streak >= self.thresholds.open_after(t.rule):
            t.active, t.active_since = True, now
        elif t.active and t.good_streak >= self.thresholds.recover_threshold:
            t.active = False

    def _steady(self, t: _Tracker, now: datetime) -> list[Notice]:
        if t.active and not t.announced:
            t.announced, t.last_notice_at = True, now
            return [self._notice(t, "opened", now)]
        if not t.active and t.announced:
            t.announced, t.last_notice_at = False, None
            return [self._notice(t, "resolved", now)]
        if t.announced and self._due(t.last_notice_at, now):
            t.last_notice_at = now
            return [self._notice(t, "reminder", now)]
        return []

    def _while_flapping(self, t: _Tracker, now: datetime) -> list[Notice]:
        settled = (
            t.bad_streak >= self.thresholds.open_after(t.rule)
            or t.good_streak >= self.thresholds.recover_threshold
        )
        if settled and len(t.changes) <= self.thresholds.flap_threshold // 2:
            out = [self._flapping_notice(t, "resolved", now)]
            t.flapping_since = t.flap_notice_at = None
            return out + self._steady(t, now)
        if self._due(t.flap_notice_at, now):
            t.flap_notice_at = now
            return [self._flapping_notice(t, "reminder", now)]
        return []

    def _due(self, last: datetime | None, now: datetime) -> bool:
        return last is not None and (now - last).total_seconds() >= self.thresholds.reminder_seconds

    def _notice(self, t: _Tracker, kind: NoticeKind, now: datetime) -> Notice:
        since = t.active_since or now
        words = _words(t.rule)
        took = format_duration((now - since).total_seconds())
        if kind == "opened":
            text = f"{t.component} {words.opened}"
            if t.bad_streak > 1:
                text += f" ({t.bad_streak} consecutive polls)"
        elif kind == "resolved":
            text = f"{t.component} {words.resolved} after {took}"
        else:
            text = f"{t.component} {words.still}, for {took} now"
        return Notice(kind, t.component, t.rule, now, since, _with_detail(text, t.detail))

    def _flapping_notice(self, t: _Tracker, kind: NoticeKind, now: datetime) -> Notice:
        since = t.flapping_since or now
        window = format_duration(self.thresholds.flap_window_seconds)
        words = _words(t.rule)
        state = words.bad if t.raw else words.good
        if kind == "opened":
            text = (
                f"{t.component} is flapping ({t.rule}): {len(t.changes)} state changes within "
                f"{window}; further messages are paused until it is stable. Now {state}"
            )
        elif kind == "resolved":
            took = format_duration((now - since).total_seconds())
            text = f"{t.component} is stable again after flapping for {took}; now {state}"
        else:
            text = f"{t.component} is still flapping ({t.rule}); now {state}"
        rule = t.rule + FLAPPING_SUFFIX
        return Notice(kind, t.component, rule, now, since, _with_detail(text, t.detail))


def _with_detail(text: str, detail: str) -> str:
    return f"{text}: {detail}" if detail else text
