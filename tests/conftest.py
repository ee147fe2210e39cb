"""Fixtures: ``stack`` runs every test that takes it on SQLite (embedded bus) and on
PostgreSQL + NATS JetStream. The PostgreSQL runs skip with a reason when the services are not
reachable, and fail instead when POCKETPAY_REQUIRE_SERVICES=1 (CI)."""

from __future__ import annotations

import asyncio
import asyncio.runners
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pocketpay.kit.logging import configure
from tests.support import Stack, running_stack

# JSON log lines, as in production: the console renderer's rich tracebacks (with locals) take
# seconds per error on a busy machine.
configure("INFO", json=True)


_cancel_all_tasks = asyncio.runners._cancel_all_tasks  # type: ignore[attr-defined]
REPORT_STUCK_AFTER_SECONDS = 20.0


def _cancel_all_tasks_reporting(loop: asyncio.AbstractEventLoop) -> Any:
    """The event loop's last step after each test cancels every task left and waits for
    them. A task that does not end on cancel hangs the run until pytest-timeout (seen rarely,
    never reproduced): after 20 s, print each such task and where it waits, then wait on as
    before, so the test still fails, with its culprit named in the log."""
    left = asyncio.all_tasks(loop)
    if left:
        for task in left:
            task.cancel()
        _, stuck = loop.run_until_complete(asyncio.wait(left, timeout=REPORT_STUCK_AFTER_SECONDS))
        for task in stuck:
            print(f"TASK IGNORES CANCEL at loop close: {task!r}", file=sys.stderr, flush=True)
            task.print_stack(file=sys.stderr)
    return _cancel_all_tasks(loop)


asyncio.runners._cancel_all_tasks = _cancel_all_tasks_reporting  # type: ignore[attr-defined]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(request.param, tmp_path) as s:
        yield s


@pytest.fixture
async def sqlite_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack("sqlite", tmp_path) as s:
        yield s
