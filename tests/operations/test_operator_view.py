"""What an operator sees: a real component failure turns /status and the dashboard red,
sends one alert to each channel (a real SMTP server, a real HTTP receiver for Slack), and one
resolution when it recovers. The dashboard is rendered by Debian's chromium (headless) and
the screenshots are kept in test-artifacts/."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from pocketpay.kit.db import create_engine
from tests.operations.receivers import slack_server, smtp_server
from tests.support import PASSWORD, Stack, free_port, pg_url, running_stack

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ADMIN = "ops@example.com"
OPS_DB = "pocketpay_ops"  # its own database: this test takes it offline


def _monitor(stack: Stack) -> Any:
    return stack.runtime.components["monitor"].app.state.monitor


def _settings(slack_url: str, smtp_port: int) -> dict[str, Any]:
    return {
        "auth": {"admin_emails": [ADMIN]},
        "monitor": {
            "interval_seconds": 3600.0,  # the test drives the polls itself
            "slack_webhook_url": slack_url,
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp_port,
            "email_to": ["oncall@example.com"],
            "channel_retries": 1,
        },
        # The notifications component's SMTP server too: without one it reports degraded
        # (its emails would wait), and the platform with it.
        "notifications": {"smtp_host": "127.0.0.1", "smtp_port": smtp_port},
    }


async def _admin_token(stack: Stack) -> str:
    await stack.user(ADMIN)
    r = await stack.http.post("/api/v1/auth/login", json={"email": ADMIN, "password": PASSWORD})
    assert r.status_code == 200
    assert r.json()["user"]["role"] == "admin"
    return str(r.json()["access_token"])


async def _poll(stack: Stack, times: int) -> dict[str, Any]:
    for _ in range(times):
        await _monitor(stack).poll_once()
    status: dict[str, Any] = (await stack.http.get("/status")).json()
    return status


async def _screenshot(base_url: str, token: str, name: str) -> dict[str, str]:
    """Render /admin/health in headless chromium; returns {component: data-status}."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=args)
        try:
            context = await browser.new_context(viewport={"width": 900, "height": 1000})
            await context.add_cookies([{"name": "pp_admin", "value": token, "url": base_url}])
            page = await context.new_page()
            await page.goto(f"{base_url}/admin/health")
            await page.wait_for_selector("[data-component]")
            await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            cards = await page.query_selector_all("[data-component]")
            return {
                str(await c.get_attribute("data-component")): str(
                    await c.get_attribute("data-status")
                )
                for c in cards
            }
        finally:
            await browser.close()


async def _set_connections(allowed: bool) -> None:
    admin = create_engine(pg_url("postgres"))
    try:
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            flag = "true" if allowed else "false"
            await conn.execute(text(f"ALTER DATABASE {OPS_DB} ALLOW_CONNECTIONS {flag}"))
            if not allowed:
                await conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        f"WHERE datname = '{OPS_DB}' AND pid <> pg_backend_pid()"
                    )
                )
    finally:
        await admin.dispose()


@pytest.mark.postgres
@pytest.mark.browser
async def test_database_outage_turns_red_alerts_once_and_resolves(tmp_path: Path) -> None:
    smtp_port = free_port()
    with slack_server() as (slack_url, slack), smtp_server(smtp_port) as inbox:
        async with running_stack(
            "postgres", tmp_path, pg_database=OPS_DB, **_settings(slack_url, smtp_port)
        ) as st:
            token = await _admin_token(st)
            status = await _poll(st, 1)
            assert status["status"] == "ok", status
            assert set(await _screenshot(st.base_url, token, "dashboard-green")) >= {
                "gateway",
                "payments",
                "ledger",
                "sandbox",
            }
            try:
                await _set_connections(False)
                await _poll(st, 2)
                assert not slack and not inbox.messages  # two failed polls: no alert yet
                status = await _poll(st, 1)
                assert status["status"] == "down"
                assert status["components"]["ledger"]["status"] == "down"
                cards = await _screenshot(st.base_url, token, "dashboard-red")
                assert cards["ledger"] == "down"
                assert len(slack) == len(inbox.messages) >= 1
                opened = len(slack)
                await _poll(st, 2)
                assert len(slack) == opened  # no storm while it stays down
            finally:
                await _set_connections(True)
            status = await _poll(st, 2)
            assert status["status"] == "ok", status
            assert len(slack) == len(inbox.messages) == 2 * opened  # one resolution each
            assert "resolved" in (slack[-1]["text"] + inbox.messages[-1]["subject"]).lower()
            assert (await _screenshot(st.base_url, token, "dashboard-green-again"))[
                "ledger"
            ] == "ok"


async def test_psp_outage_degrades_without_alerting_as_down(tmp_path: Path) -> None:
    smtp_port = free_port()
    with smtp_server(smtp_port):
        await _psp_outage(tmp_path, smtp_port)


async def _psp_outage(tmp_path: Path, smtp_port: int) -> None:
    async with running_stack(
        "sqlite",
        tmp_path,
        monitor={"interval_seconds": 3600.0},
        psp={"breaker_reset_seconds": 0.0},  # the next call after the outage is the trial
        notifications={"smtp_host": "127.0.0.1", "smtp_port": smtp_port},
    ) as st:
        assert (await _poll(st, 1))["status"] == "ok"
        st.sandbox.faults.outage = True
        status = await _poll(st, 3)
        assert status["status"] == "degraded"
        assert status["components"]["payments"]["status"] == "degraded"
        st.sandbox.faults.reset()
        status = await _poll(st, 2)  # recover_threshold good polls
        for _ in range(4):  # a poll that timed out on a loaded machine needs one more round
            if {c["status"] for c in status["components"].values()} == {"ok"}:
                break
            status = await _poll(st, 1)
        states = {name: c["status"] for name, c in status["components"].items()}
        assert set(states.values()) == {"ok"}, status["components"]
        # The PSP failed 2 calls in 3 over the last 5 minutes: the platform stays degraded
        # (not down) until that window has passed, as the alert rule says.
        assert status["psp"]["status"] == "high"
        assert status["status"] == "degraded"
