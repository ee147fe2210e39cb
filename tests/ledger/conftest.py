"""Ledger fixtures: ``engine`` is a migrated, empty database, on SQLite and on PostgreSQL.

The PostgreSQL run skips when the server is not reachable, and fails instead when
POCKETPAY_REQUIRE_SERVICES=1 (see tests/kit/services.py)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.db import create_engine
from tests.support import prepare_postgres, sqlite_template


async def sqlite_url(tmp_path: Path, name: str = "ledger.db") -> str:
    """A migrated SQLite file of its own (a copy of the session's template)."""
    db = tmp_path / name
    template = await asyncio.to_thread(sqlite_template)
    await asyncio.to_thread(shutil.copyfile, template, db)
    return f"sqlite+aiosqlite:///{db}"


async def database_url(backend: str, tmp_path: Path) -> str:
    if backend == "postgres":
        return await prepare_postgres()
    return await sqlite_url(tmp_path)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(await database_url(request.param, tmp_path))
    try:
        yield eng
    finally:
        await eng.dispose()
