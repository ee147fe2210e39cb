"""The failpoint facility itself: each action does what the fault tests rely on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from pocketpay.kit import failpoints
from pocketpay.kit.failpoints import Crash, FailpointError, arm, arm_from_env, failpoint, hits


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    failpoints.disarm()
    yield
    failpoints.disarm()


async def test_unarmed_point_does_nothing() -> None:
    await failpoint("nowhere")
    assert hits("nowhere") == 0


async def test_raise_fires_count_times_then_disarms() -> None:
    arm("p", "raise", count=2)
    for _ in range(2):
        with pytest.raises(FailpointError):
            await failpoint("p")
    await failpoint("p")
    assert hits("p") == 2


async def test_crash_is_not_an_exception_handlers_catch() -> None:
    arm("p", "crash")
    caught = False
    with pytest.raises(Crash):
        try:
            await failpoint("p")
        except Exception:
            caught = True
    assert not caught


async def test_delay_sleeps() -> None:
    arm("p", "delay", seconds=5)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(failpoint("p"), 0.05)


def test_env_spec() -> None:
    arm_from_env("a=raise*; b=delay:1.5; c=crash:hard")
    armed = failpoints._armed
    assert armed["a"].action == "raise" and armed["a"].count is None
    assert armed["b"].action == "delay" and armed["b"].seconds == 1.5
    assert armed["c"].action == "crash" and armed["c"].hard
    with pytest.raises(ValueError):
        arm_from_env("d=explode")


async def test_block_waits_for_release() -> None:
    arm("p", "block")
    waiter = asyncio.create_task(failpoint("p"))
    await asyncio.sleep(0)
    assert not waiter.done() and hits("p") == 1
    failpoints.release("p")
    await asyncio.wait_for(waiter, 1)
