"""Scale mode, seen by the monitor process: stop the real ledger process, /status goes down
and Slack (a real local HTTP receiver) gets one alert; start it again, /status comes back and
Slack gets one resolution."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e import fleet as fl
from tests.e2e.fleet import Fleet, Proc, until
from tests.operations.receivers import slack_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.nats]

LAYOUT = {"sandbox": 1, "ledger": 1, "payments": 1, "gateway": 1, "monitor": 1}


@pytest.fixture(scope="module")
def slack() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    with slack_server() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, slack: tuple[str, list[dict[str, Any]]]
) -> Iterator[Fleet]:
    env = {
        "POCKETPAY_MONITOR__INTERVAL_SECONDS": "0.5",
        "POCKETPAY_MONITOR__POLL_TIMEOUT_SECONDS": "0.4",
        "POCKETPAY_MONITOR__SLACK_WEBHOOK_URL": slack[0],
        "POCKETPAY_MONITOR__CHANNEL_RETRIES": "1",
    }
    workdir = tmp_path_factory.mktemp("e2e-monitor")
    db_name = f"pocketpay_e2e_mon_{uuid.uuid4().hex[:6]}"
    with fl.running_fleet(workdir, LAYOUT, env, db_name) as running:
        yield running


def _status(monitor: Proc) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{monitor.url}/status", timeout=5).json()
    return body


def _restart(fleet: Fleet, old: Proc) -> Proc:
    with old.log_path.open("ab") as out:
        popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pocketpay.cli",
                "serve",
                old.component,
                "--port",
                str(old.port),
            ],
            env=fleet.env,
            cwd=fleet.workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc = Proc(old.name, old.component, old.port, popen, old.log_path)
    fleet.procs[fleet.procs.index(old)] = proc
    return proc


def test_stopping_the_ledger_alerts_once_and_resolves(
    fleet: Fleet, slack: tuple[str, list[dict[str, Any]]]
) -> None:
    monitor, ledger = fleet.one("monitor"), fleet.one("ledger")
    received = slack[1]
    until(lambda: _status(monitor)["status"] == "ok" or None, what="status ok")
    # The processes started together, so the monitor may have seen some of them down while
    # they started (and said so, then resolved it); only what follows counts here.
    baseline = len(received)

    ledger.popen.send_signal(signal.SIGTERM)
    ledger.popen.wait(timeout=15)
    down = until(
        lambda: (s := _status(monitor))["components"]["ledger"]["status"] == "down" and s,
        what="ledger down",
    )
    assert down["status"] == "down"
    until(lambda: len(received) >= baseline + 1 or None, what="one Slack alert")
    assert "ledger" in received[baseline]["text"]

    _restart(fleet, ledger)
    until(lambda: _status(monitor)["status"] == "ok" or None, timeout=60, what="status ok again")
    until(lambda: len(received) >= baseline + 2 or None, what="a Slack resolution")
    alerts = [m for m in received[baseline:] if "ledger" in m["text"]]
    assert len(alerts) == 2, received  # one alert and one resolution, no storm
    assert "resolved" in alerts[1]["text"].lower()
