"""PSP attempts the reconciler gave up on: operators list them (admin only) through the
gateway, and once the cause is fixed a retry puts the attempt back to pending so the reconciler
completes the payment. Payments' real readiness feeds the monitor's ``stuck_attempts`` alert,
which opens and then resolves. Both backends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client import REGISTRY
from sqlalchemy import select, update

from pocketpay.kit import failpoints
from pocketpay.monitor.poller import PollResult, parse_readiness
from pocketpay.monitor.rules import STUCK_ATTEMPTS, AlertRules, Notice, Thresholds
from pocketpay.monitor.service import stuck_attempts_observation
from pocketpay.payments.flows import recovery
from pocketpay.payments.models import attempts
from tests.support import Stack, eventually, running_stack

pytestmark = pytest.mark.timeout(180)

ADMIN = "root@example.com"
CARD = "pm_card_visa"


@pytest.fixture(autouse=True)
def _disarm() -> Iterator[None]:
    failpoints.disarm()
    yield
    failpoints.disarm()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_stuck_attempt_is_listed_for_admins_and_retried(backend: str, tmp_path: Path) -> None:
    async with running_stack(backend, tmp_path, auth={"admin_emails": [ADMIN]}) as st:
        user = await st.user()
        admin = await st.user(ADMIN)
        rules = AlertRules(Thresholds(fail_threshold=3, recover_threshold=2))
        assert await _alert(st, rules) == []  # nothing stuck: no alert

        pid = await _stuck_payment(st, user)

        # Only operators see them.
        r = await st.get(user, "/api/v1/admin/stuck")
        assert r.status_code == 403 and r.json()["code"] == "auth.forbidden"
        assert (await st.http.get("/api/v1/admin/stuck")).status_code == 401
        r = await st.post(user, f"/api/v1/admin/stuck/{pid}/authorize/retry", key=None)
        assert r.status_code == 403

        r = await st.get(admin, "/api/v1/admin/stuck")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["total"] == 1
        [item] = body["data"]
        max_tries = _ctx(st).max_tries
        assert item["object_id"] == pid and item["operation"] == "authorize"
        assert item["tries"] == max_tries
        assert "error" in item and datetime.fromisoformat(item["since"]).tzinfo is not None

        # Payments' readiness (the real check) degrades, sets the gauge, and the monitor alerts.
        notices = await _alert(st, rules)
        assert [(n.kind, n.component, n.rule) for n in notices] == [
            ("opened", "payments", STUCK_ATTEMPTS)
        ]
        assert "1 stuck PSP attempts" in notices[0].message
        assert REGISTRY.get_sample_value("pocketpay_payments_stuck_attempts") == 1

        # Nothing to retry for an unknown operation or an attempt that is not stuck.
        r = await st.post(admin, f"/api/v1/admin/stuck/{pid}/teleport/retry", key=None)
        assert r.status_code == 422
        r = await st.post(admin, f"/api/v1/admin/stuck/{pid}/capture/retry", key=None)
        assert r.status_code == 404 and r.json()["code"] == "payments.attempt_not_stuck"

        # The operator fixed the cause; the retry is audit-logged and the reconciler finishes.
        failpoints.disarm("payments.authorize.before_psp")
        with structlog.testing.capture_logs() as logs:
            r = await st.post(admin, f"/api/v1/admin/stuck/{pid}/authorize/retry", key=None)
        assert r.status_code == 200, r.text
        assert r.json() == {
            "object_id": pid,
            "operation": "authorize",
            "status": "pending",
            "tries": 0,
        }
        [audit] = [e for e in logs if e["event"] == "admin.stuck_retried"]
        assert audit["admin_email"] == ADMIN and audit["object_id"] == pid
        assert audit["admin_id"] == admin["user"]["id"]

        payment = await st.wait_status(user, pid, "captured")  # resumed by the reconciler
        assert payment["amount_minor"] == 900
        row = await _attempt(st, pid)
        assert row.status == "succeeded"
        assert (await st.get(admin, "/api/v1/admin/stuck")).json() == {"data": [], "total": 0}
        r = await st.post(admin, f"/api/v1/admin/stuck/{pid}/authorize/retry", key=None)
        assert r.status_code == 404  # not stuck any more

        notices = (await _alert(st, rules)) + (await _alert(st, rules))
        assert [(n.kind, n.rule) for n in notices] == [("resolved", STUCK_ATTEMPTS)]
        assert REGISTRY.get_sample_value("pocketpay_payments_stuck_attempts") == 0


async def _stuck_payment(st: Stack, user: dict[str, Any]) -> str:
    """As tests/safety/test_races.py does: the PSP call never happens (a failpoint), and the
    reconciler resumes the open attempt until it gives up."""
    ctx = _ctx(st)
    failpoints.arm("payments.authorize.before_psp", "raise", count=None)
    r = await st.post(
        user, "/api/v1/payments", {"amount_minor": 900, "currency": "USD", "payment_method": CARD}
    )
    assert r.status_code == 202, r.text
    pid: str = r.json()["id"]
    await eventually(lambda: _attempt(st, pid))  # recorded before the PSP call
    for _ in range(ctx.max_tries + 1):
        async with st.runtime.engine.begin() as conn:  # older than the retry horizon
            await conn.execute(
                update(attempts)
                .where(attempts.c.payment_id == pid)
                .values(updated_at=datetime(2000, 1, 1, tzinfo=UTC))
            )
        await recovery.reconcile(ctx)
    row = await _attempt(st, pid)
    assert row.status == "stuck" and row.tries == ctx.max_tries
    return pid


async def _alert(st: Stack, rules: AlertRules) -> list[Notice]:
    """One monitor poll of payments' real readiness, through the monitor's parsing and rule."""
    health = st.runtime.components["payments"].health
    code, body = await health.readiness()
    ready = parse_readiness(code, body)
    result = PollResult(
        "payments", ready.readiness, st.runtime.clock.now(), 1.0, ready.checks, ready.details
    )
    return rules.evaluate([stuck_attempts_observation(result)], st.runtime.clock.now())


def _ctx(st: Stack) -> Any:
    return st.runtime.components["payments"].state["flows"].ctx


async def _attempt(st: Stack, pid: str) -> Any:
    async with st.runtime.engine.connect() as conn:
        return (await conn.execute(select(attempts).where(attempts.c.payment_id == pid))).first()
