"""PostgreSQL: notifications does its whole job as its own login role (``pocketpay_notifications``,
search_path ``notifications, bus``) and cannot read the gateway's users (architecture rule 1);
migration 0012 copied the users who existed before it into its contacts."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy import select, text

from pocketpay.kit.bus import Envelope
from pocketpay.kit.clock import ManualClock
from pocketpay.kit.db import create_engine
from pocketpay.migrate import upgrade
from pocketpay.notifications.api import NotificationsApi
from pocketpay.notifications.consumers import NotificationsConsumer
from pocketpay.notifications.models import contacts, deliveries
from pocketpay.schema import ROLES
from pocketpay.settings import NotificationsSettings
from tests.e2e import fleet as fl
from tests.e2e.test_db_roles import as_role

pytestmark = [pytest.mark.postgres]

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def db() -> Iterator[str]:
    """Migrated to 0011, a user signed up, then migrated to the end (0012 and after)."""
    name = f"pp_notifications_role_{os.getpid()}"
    url = fl.fresh_database(name)
    try:
        upgrade(url, "0011")
        asyncio.run(_old_user(url))
        upgrade(url)
        yield url
    finally:
        fl.drop_database(name)


async def _old_user(url: str) -> None:
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO gateway.gateway_users VALUES "
                "('usr_OLD', 'old@example.com', 'Old', 'h', 'user', now())"
            )
        )
    await engine.dispose()


async def test_the_role_runs_notifications_and_sees_nothing_else(db: str) -> None:
    engine = create_engine(as_role(db, ROLES["notifications"]))
    try:
        async with engine.connect() as conn:
            found = await conn.execute(
                select(contacts.c.email).where(contacts.c.user_id == "usr_OLD")
            )
            assert found.scalar_one() == "old@example.com"  # copied by the migration
        api = NotificationsApi(
            engine,
            ManualClock(NOW),
            NotificationsSettings(allow_private_targets=True),
            lambda: None,
        )
        ep = await api.create_endpoint(
            "usr_OLD", "k", {"url": "http://127.0.0.1:9/h", "events": ["*"]}
        )
        await api.rotate_secret("usr_OLD", ep.id, {})
        await api.put_preferences("usr_OLD", {"email": True})
        data = {"id": "pay_1", "owner_id": "usr_OLD", "currency": "USD"}
        data |= {"amount_minor": 100, "amount_captured_minor": 100}
        env = Envelope("evt_role_1", "payments.payment.captured", NOW, data)
        assert await NotificationsConsumer(engine, ManualClock(NOW))(env)
        async with engine.connect() as conn:
            channels = await conn.execute(select(deliveries.c.channel).order_by(deliveries.c.seq))
            assert sorted(channels.scalars()) == ["email", "webhook"]
    finally:
        await engine.dispose()
    conn = await asyncpg.connect(as_role(db, ROLES["notifications"], "postgresql"), timeout=5)
    try:
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
            await conn.fetch("SELECT email FROM gateway.gateway_users")
        with pytest.raises(asyncpg.exceptions.UndefinedTableError):
            await conn.fetch("SELECT * FROM gateway_users")
    finally:
        await conn.close()
