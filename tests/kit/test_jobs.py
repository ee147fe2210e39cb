"""kit.jobs.PeriodicJob: a wake-up during a pass is not lost, a failing pass does not stop the
loop, "more to do" runs again at once but bounded."""

from __future__ import annotations

import asyncio

from pocketpay.kit.jobs import PeriodicJob
from tests.support import eventually

LONG = 3600.0  # an interval no test waits for: every pass below is caused by wake()


async def _true(value: bool) -> bool:
    return value


async def test_wake_during_a_pass_runs_another_pass() -> None:
    started, gate, passes = asyncio.Event(), asyncio.Event(), []

    async def work() -> bool:
        passes.append(1)
        started.set()
        if len(passes) == 1:
            await gate.wait()
        return False

    job = PeriodicJob("t", work, LONG)
    await job.start()
    try:
        await asyncio.wait_for(started.wait(), 1)
        job.wake()  # arrives while the first pass runs
        gate.set()
        await eventually(lambda: _true(len(passes) >= 2))
        assert len(passes) == 2
    finally:
        await job.stop()


async def test_a_failing_pass_does_not_stop_the_loop() -> None:
    passes: list[int] = []

    async def work() -> bool:
        passes.append(1)
        if len(passes) == 1:
            raise RuntimeError("database down")
        return False

    job = PeriodicJob("t", work, LONG)
    await job.start()
    try:
        await eventually(lambda: _true(bool(passes)))
        job.wake()
        await eventually(lambda: _true(len(passes) >= 2))
        assert len(passes) == 2
    finally:
        await job.stop()


async def test_more_work_runs_back_to_back_but_bounded() -> None:
    passes: list[int] = []

    async def work() -> bool:
        passes.append(1)
        return True  # always "more"

    job = PeriodicJob("t", work, LONG, max_back_to_back=5)
    await job.start()
    try:
        for _ in range(200):
            await asyncio.sleep(0)
        assert len(passes) == 6  # the first pass and five more, then it waits the interval
    finally:
        await job.stop()
