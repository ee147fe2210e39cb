"""Stopping background tasks without losing the stopper's own cancellation.

``task.cancel(); with suppress(CancelledError): await task`` also swallows a cancellation of
the task that runs it: a shutdown that cancels the stopper then finds it still running (the
event loop's final ``_cancel_all_tasks`` waits for it for ever). ``cancel_and_wait`` swallows
only the stopped task's own cancellation.
"""

import asyncio

import structlog

log = structlog.get_logger(__name__)


async def cancel_and_wait(*tasks: asyncio.Task[object] | None) -> None:
    """Cancel ``tasks`` (``None`` skipped) and wait until each has ended. A task's own
    ``CancelledError`` is expected and dropped; if the caller itself is cancelled meanwhile,
    the tasks are still awaited, then the caller's cancellation is raised. A task that had
    failed is logged, not raised: stopping it succeeds."""
    given = [t for t in tasks if t is not None]
    pending = list(given)
    for task in pending:
        task.cancel()
    cancelled = False
    while pending:
        try:
            await asyncio.wait(pending)
        except asyncio.CancelledError:
            # Ours: the tasks were cancelled already (a second cancel would interrupt their
            # clean-up); keep waiting for them, then raise it.
            cancelled = True
        pending = [t for t in pending if not t.done()]
    for done in given:
        if not done.cancelled() and (exc := done.exception()) is not None:
            log.warning("task.ended_with_error", task=done.get_name(), error=repr(exc))
    if cancelled:
        raise asyncio.CancelledError
