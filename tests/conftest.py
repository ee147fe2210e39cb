"""Fixtures: ``stack`` runs every test that takes it on SQLite (embedded bus) and on
PostgreSQL + NATS JetStream. The PostgreSQL runs skip with a reason when the services are not
reachable, and fail instead when POCKETPAY_REQUIRE_SERVICES=1 (CI)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pocketpay.kit.logging import configure
from tests.support import Stack, running_stack

# JSON log lines, as in production: the console renderer's rich tracebacks (with locals) take
# seconds per error on a busy machine.
configure("INFO", json=True)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(request.param, tmp_path) as s:
        yield s


@pytest.fixture
async def sqlite_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack("sqlite", tmp_path) as s:
        yield s
