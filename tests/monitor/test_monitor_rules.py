"""The alert state machine, driven by scripted observations and a manual clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from pocketpay.kit.clock import ManualClock
from pocketpay.monitor.rules import (
    LEDGER_LAG,
    NOT_READY,
    AlertRules,
    Notice,
    Observation,
    Thresholds,
    format_duration,
)

INTERVAL = 15.0


class Driver:
    """Feeds one component's readiness poll by poll, one interval apart."""

    def __init__(self, thresholds: Thresholds | None = None, rule: str = NOT_READY) -> None:
        self.clock = ManualClock()
        self.rules = AlertRules(thresholds or Thresholds())
        self.rule = rule
        self.notices: list[Notice] = []

    def poll(self, *states: str, step: float = INTERVAL) -> list[Notice]:
        """``"up"``/``"down"``/``"none"`` per poll; returns the notices these polls produced."""
        out: list[Notice] = []
        for state in states:
            self.clock.advance(step)
            bad = None if state == "none" else state == "down"
            obs = Observation("ledger", self.rule, bad, "db: fail" if bad else "")
            out.extend(self.rules.evaluate([obs], self.clock.now()))
        self.notices.extend(out)
        return out


def kinds(notices: list[Notice]) -> list[tuple[str, str]]:
    return [(n.kind, n.rule) for n in notices]


def test_one_failed_poll_sends_nothing() -> None:
    d = Driver()
    assert d.poll("down") == []
    assert d.poll("up", "up", "up") == []


def test_three_failed_polls_open_one_alert() -> None:
    d = Driver()
    assert d.poll("down", "down") == []
    notices = d.poll("down")
    assert kinds(notices) == [("opened", NOT_READY)]
    assert "ledger is down (3 consecutive polls)" in notices[0].message
    assert "db: fail" in notices[0].message
    assert d.poll(*["down"] * 20) == []  # no storm while it stays down
    assert d.rules.is_open("ledger", NOT_READY)


def test_recovery_sends_one_resolution_after_two_good_polls() -> None:
    d = Driver()
    d.poll("down", "down", "down")
    assert d.poll("up") == []
    resolved = d.poll("up")
    assert kinds(resolved) == [("resolved", NOT_READY)]
    assert "is up again after" in resolved[0].message
    assert d.poll("up", "up") == []
    assert not d.rules.is_open("ledger", NOT_READY)


def test_a_blip_during_recovery_keeps_the_alert_open() -> None:
    d = Driver()
    d.poll("down", "down", "down")
    assert d.poll("up", "down", "up") == []
    assert kinds(d.poll("up")) == [("resolved", NOT_READY)]


def test_no_data_changes_nothing() -> None:
    d = Driver()
    assert d.poll("down", "none", "down", "none") == []
    assert kinds(d.poll("down")) == [("opened", NOT_READY)]


def test_alternating_up_and_down_sends_one_flapping_notice() -> None:
    d = Driver()
    d.poll(*["up", "down"] * 15)
    assert kinds(d.notices) == [("opened", "not_ready.flapping")]
    assert d.notices[0].is_flapping
    assert "flapping" in d.notices[0].message


def test_flapping_ends_with_one_stable_notice() -> None:
    d = Driver()
    d.poll(*["up", "down"] * 4)
    d.notices.clear()
    d.poll("up", step=Thresholds().flap_window_seconds)  # the old changes leave the window
    d.poll("up")
    assert kinds(d.notices) == [("resolved", "not_ready.flapping")]
    assert "stable again" in d.notices[0].message
    assert "now up" in d.notices[0].message


def test_an_alert_open_before_flapping_is_resolved_when_it_settles_up() -> None:
    d = Driver()
    d.poll("down", "down", "down")
    d.poll(*["up", "down"] * 3)
    assert kinds(d.notices) == [("opened", NOT_READY), ("opened", "not_ready.flapping")]
    d.notices.clear()
    d.poll("up", step=700)
    d.poll("up")
    assert kinds(d.notices) == [("resolved", "not_ready.flapping"), ("resolved", NOT_READY)]


def test_flapping_that_settles_down_opens_the_alert() -> None:
    d = Driver()
    d.poll(*["up", "down"] * 3)
    d.notices.clear()
    d.poll("down", step=700)
    d.poll("down", "down")
    assert kinds(d.notices) == [("resolved", "not_ready.flapping"), ("opened", NOT_READY)]


def test_reminders_no_more_often_than_reminder_seconds() -> None:
    d = Driver()
    d.poll("down", "down", "down")
    d.notices.clear()
    d.poll("down", step=1799 - 2 * INTERVAL)
    d.poll("down", "down")  # the opening was 1799 s ago
    assert d.notices == []
    d.poll("down", step=1)
    assert kinds(d.notices) == [("reminder", NOT_READY)]
    assert "is still down" in d.notices[0].message
    d.poll(*["down"] * 10)
    assert len(d.notices) == 1
    d.poll("down", step=1800)
    assert kinds(d.notices) == [("reminder", NOT_READY)] * 2


def test_flapping_has_reminders_too() -> None:
    d = Driver()
    d.poll(*["up", "down"] * 3)
    d.notices.clear()
    for _ in range(1800 // 60):  # keep flapping for half an hour, one poll a minute
        d.poll("up", "down", step=30)
    assert kinds(d.notices) == [("reminder", "not_ready.flapping")]


def test_lag_opens_at_once_and_resolves() -> None:
    d = Driver(rule=LEDGER_LAG)
    assert kinds(d.poll("down")) == [("opened", LEDGER_LAG)]
    assert d.poll("up") == []
    assert kinds(d.poll("up")) == [("resolved", LEDGER_LAG)]


def test_restored_alert_resolves_when_the_component_is_up() -> None:
    rules = AlertRules(Thresholds())
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rules.restore("ledger", NOT_READY, start - timedelta(minutes=5), start)
    assert rules.is_open("ledger", NOT_READY)
    up = [Observation("ledger", NOT_READY, False)]
    assert rules.evaluate(up, start + timedelta(seconds=15)) == []
    notices = rules.evaluate(up, start + timedelta(seconds=30))
    assert kinds(notices) == [("resolved", NOT_READY)]
    assert "after 5m30s" in notices[0].message


def test_format_duration() -> None:
    assert format_duration(5) == "5s"
    assert format_duration(65) == "1m05s"
    assert format_duration(3 * 3600 + 120) == "3h02m"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["up", "down", "none"]),
            st.sampled_from([1.0, 15.0, 60.0, 700.0, 1800.0]),
        ),
        max_size=80,
    )
)
def test_notices_always_alternate_open_and_resolve(script: list[tuple[str, float]]) -> None:
    """Whatever happens: per alert, opened and resolved alternate, reminders only while open
    and never closer than reminder_seconds, and a flapping period suppresses the base alert."""
    d = Driver()
    for state, step in script:
        d.poll(state, step=step)
    for rule in (NOT_READY, "not_ready.flapping"):
        is_open, last = False, None
        for n in (n for n in d.notices if n.rule == rule):
            if n.kind == "opened":
                assert not is_open
                is_open, last = True, n.at
            elif n.kind == "resolved":
                assert is_open
                is_open, last = False, None
            else:
                assert is_open and last is not None
                assert (n.at - last).total_seconds() >= Thresholds().reminder_seconds
                last = n.at
    flapping = False
    for n in d.notices:
        if n.is_flapping and n.kind != "reminder":
            flapping = n.kind == "opened"
        elif not n.is_flapping:
            assert not flapping, "base alert notices are paused while flapping"
