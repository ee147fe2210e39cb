"""Operator endpoints need the admin role; dead letters can be listed and replayed."""

from __future__ import annotations

from pathlib import Path

from pocketpay.kit.bus import Envelope, dead_letter
from tests.support import running_stack


async def test_dead_letters_are_admin_only_and_replayable(tmp_path: Path) -> None:
    admin_email = "root@example.com"
    async with running_stack("sqlite", tmp_path, auth={"admin_emails": [admin_email]}) as st:
        user = await st.user()
        admin = await st.user(admin_email)
        assert admin["user"]["role"] == "admin"
        r = await st.get(user, "/api/v1/admin/dead-letters")
        assert r.status_code == 403 and r.json()["code"] == "auth.forbidden"
        assert (await st.http.get("/api/v1/admin/dead-letters")).status_code == 401
        env = Envelope(
            id="evt_test",
            type="payments.payment.settled",
            occurred_at=st.runtime.clock.now(),
            data={"payment_id": "pay_x"},
        )
        await dead_letter(st.runtime.engine, "ledger", env, "boom", 3, st.runtime.clock.now())
        listed = (await st.get(admin, "/api/v1/admin/dead-letters")).json()["data"]
        assert [d["event_id"] for d in listed] == ["evt_test"]
        r = await st.post(admin, f"/api/v1/admin/dead-letters/{listed[0]['id']}/replay", key=None)
        assert r.status_code == 200, r.text
        assert (await st.get(admin, "/api/v1/admin/dead-letters")).json()["data"] == []
        r = await st.post(admin, f"/api/v1/admin/dead-letters/{listed[0]['id']}/replay", key=None)
        assert r.status_code == 404
