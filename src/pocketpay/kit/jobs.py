"""One background-loop lifecycle for every periodic job (settlement, reconciliation, purges).

``PeriodicJob`` runs ``fn`` every ``interval_seconds`` and at once when ``wake()`` is called.
The wake-up flag is cleared *before* a pass starts, so a ``wake()`` that arrives while a pass
runs is not lost: the next pass starts right after. A pass that raises is logged and the loop
goes on (the next pass retries); a pass that returns ``True`` ("there is more") runs again at
once, bounded by ``max_back_to_back`` so one job cannot starve the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from pocketpay.kit.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

Pass = Callable[[], Awaitable[bool | None]]


class PeriodicJob:
    def __init__(
        self, name: str, fn: Pass, interval_seconds: float, *, max_back_to_back: int = 10
    ) -> None:
        self.name = name
        self._fn = fn
        self._interval = interval_seconds
        self._max_back_to_back = max_back_to_back
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"job-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def run_once(self) -> bool:
        """One pass, errors logged (tests and shutdown call this directly)."""
        try:
            return bool(await self._fn())
        except Exception as exc:
            log.warning("job.failed", job=self.name, error=f"{type(exc).__name__}: {exc}")
            return False

    async def _run(self) -> None:
        back_to_back = 0
        while True:
            self._wake.clear()
            more = await self.run_once()
            if more and back_to_back < self._max_back_to_back:
                back_to_back += 1
                await asyncio.sleep(0)  # let others run between passes
                continue
            back_to_back = 0
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
            # arrives as the wake-up does, and stop() would then wait for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()


def task_stacks() -> dict[str, list[str]]:
    """Every other task of this loop and where it waits: what a stuck shutdown logs."""
    return {
        t.get_name(): [
            f"{f.f_code.co_filename}:{f.f_lineno} {f.f_code.co_name}" for f in t.get_stack()
        ]
        for t in asyncio.all_tasks()
        if t is not asyncio.current_task()
    }


async def full_pass(work: Awaitable[int], limit: int) -> bool:
    """For a job whose pass handles at most ``limit`` objects and returns how many it did: a
    full pass has more to do (``PeriodicJob`` runs it again at once)."""
    return await work >= limit
