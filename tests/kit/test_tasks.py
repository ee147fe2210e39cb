"""cancel_and_wait: stops tasks, never swallows the stopper's own cancellation."""

import asyncio

import pytest

from pocketpay.kit.tasks import cancel_and_wait


async def test_a_stopped_task_is_cancelled_and_its_cancellation_not_raised() -> None:
    task = asyncio.create_task(asyncio.Event().wait())
    await cancel_and_wait(task, None)
    assert task.cancelled()


async def test_a_task_that_failed_before_the_stop_is_not_raised() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.wait([task])
    await cancel_and_wait(task)  # no RuntimeError
    assert isinstance(task.exception(), RuntimeError)


async def test_the_stopper_cancelled_meanwhile_still_waits_then_is_cancelled() -> None:
    release = asyncio.Event()
    ended = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()  # a clean-up that takes a while
            ended.set()
            raise

    task = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)  # it is inside its wait
    stopper = asyncio.create_task(cancel_and_wait(task))
    await asyncio.sleep(0)
    stopper.cancel()  # a shutdown cancels the stopper
    await asyncio.sleep(0)
    assert not stopper.done()  # it still waits for the task it stops
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await stopper  # the stopper's own cancellation is not swallowed
    assert ended.is_set() and task.cancelled()
