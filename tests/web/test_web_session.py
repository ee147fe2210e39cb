"""The web app's sessions: sign up and log in set the two HttpOnly cookies, pages need a
session, an expired access token is renewed from the refresh cookie, log out revokes it; and
CSRF: a form without its token, with a wrong one, another user's, or from another origin is
refused with a page in words and changes nothing."""

from __future__ import annotations

from http.cookiejar import Cookie

from tests.support import PASSWORD, Stack
from tests.web.web import Browser, error_of, hidden


def _cookie(b: Browser, name: str) -> Cookie:
    found = [c for c in b.http.cookies.jar if c.name == name]
    assert len(found) == 1, (name, found)
    return found[0]


async def test_sign_up_sets_cookies_and_log_in_again(stack: Stack) -> None:
    async with Browser(stack) as b:
        assert (await b.get("/")).headers["location"] == "/login"
        signup = await b.signup("Alice")
        assert signup.headers["location"] == "/app"
        for header in signup.headers.get_list("set-cookie"):
            if header.startswith(("pocketpay_session=", "pocketpay_refresh=")):
                assert "HttpOnly" in header and "SameSite=lax" in header, header
        session, refresh = _cookie(b, "pocketpay_session"), _cookie(b, "pocketpay_refresh")
        assert session.path == "/" and refresh.path == "/app/session"
        # The session cookie is the API's access token: the API accepts it as a bearer.
        me = await stack.get(b.api, "/api/v1/me")
        assert me.json()["email"] == b.email
        home = await b.get("/app")
        assert home.status_code == 200 and "Wallets" in home.text and "Log out" in home.text
        assert (await b.get("/")).headers["location"] == "/app"
        # Another browser logs in with the same account.
        async with Browser(stack) as other:
            bad = await other.submit(
                "/login", "/login", {"email": b.email, "password": "wrong-password!"}
            )
            assert bad.status_code == 401
            assert error_of(bad.text, "password") == "Wrong email or password."
            assert "pocketpay_session" not in other.http.cookies
            ok = await other.submit(
                "/login", "/login", {"email": b.email, "password": PASSWORD, "next": "/app/send"}
            )
            assert ok.status_code == 303 and ok.headers["location"] == "/app/send"
            assert (await other.get("/app/send")).status_code == 200


async def test_signed_out_pages_lead_to_login_and_log_out_revokes(stack: Stack) -> None:
    async with Browser(stack) as b:
        r = await b.get("/app/payments")
        assert r.status_code == 303
        assert r.headers["location"] == "/app/session/refresh?next=/app/payments"
        r = await b.get(r.headers["location"])
        assert r.headers["location"] == "/login?next=/app/payments"
        await b.signup()
        refresh_token = b.http.cookies.get("pocketpay_refresh")
        # An expired or missing access token: the refresh cookie renews it, back to the page.
        b.http.cookies.delete("pocketpay_session")
        r = await b.get("/app/payments")
        r = await b.get(r.headers["location"])
        assert r.status_code == 303 and r.headers["location"] == "/app/payments"
        assert (await b.get("/app/payments")).status_code == 200
        assert b.http.cookies.get("pocketpay_refresh") != refresh_token  # rotated
        # Log out: both cookies cleared, the refresh token no longer works anywhere.
        kept = b.http.cookies.get("pocketpay_refresh")
        out = await b.submit("/app", "/app/session/logout", {})
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert "pocketpay_session" not in b.http.cookies
        again = await stack.http.post("/api/v1/auth/refresh", json={"refresh_token": kept})
        assert again.status_code == 401


async def test_csrf_refused(stack: Stack) -> None:
    async with Browser(stack) as alice, Browser(stack) as mallory:
        await alice.signup()
        await mallory.signup()
        page = (await alice.get("/app/top-up")).text
        fields = hidden(page, "/app/top-up") | {
            "amount": "10",
            "currency": "USD",
            "card": "pm_card_visa",
        }
        without = {k: v for k, v in fields.items() if k != "csrf_token"}
        wrong = fields | {"csrf_token": "0" * 64}
        theirs = fields | {
            "csrf_token": hidden((await mallory.get("/app/top-up")).text)["csrf_token"]
        }
        for data in (without, wrong, theirs):
            r = await alice.http.post("/app/top-up", data=data)
            assert r.status_code == 403, r.text[:300]
            assert "Form refused" in r.text and "did not come from this site" in r.text
        foreign = await alice.http.post(
            "/app/top-up", data=fields, headers={"Origin": "https://evil.example"}
        )
        assert foreign.status_code == 403 and "from another site" in foreign.text
        # Sign-up and log-in forms need their token too.
        assert (
            await mallory.http.post("/login", data={"email": alice.email, "password": PASSWORD})
        ).status_code == 403
        # Nothing was paid; the right token from our own origin works.
        assert (await stack.get(alice.api, "/api/v1/payments")).json()["data"] == []
        ok = await alice.http.post("/app/top-up", data=fields, headers={"Origin": stack.base_url})
        assert ok.status_code == 303, ok.text[:300]


async def test_pages_carry_the_csp_and_a_nonce_for_their_script(sqlite_stack: Stack) -> None:
    async with Browser(sqlite_stack) as b:
        await b.signup()
        first, second = await b.get("/app"), await b.get("/app")
        csp = first.headers["content-security-policy"]
        nonce = csp.split("'nonce-", 1)[1].split("'", 1)[0]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert f'<script nonce="{nonce}" src="/app/static/live.js"></script>' in first.text
        assert nonce not in second.headers["content-security-policy"]  # one per response
        assert first.headers["cache-control"] == "no-store"
        script = await b.get("/app/static/live.js")
        assert script.status_code == 200 and "EventSource" in script.text


async def test_no_open_redirect_and_secure_cookies_behind_https(sqlite_stack: Stack) -> None:
    async with Browser(sqlite_stack) as b:
        await b.signup()
        for target in ("https://evil.example/", "//evil.example/app", "/app\\@evil"):
            r = await b.get("/login", params={"next": target})
            assert r.status_code == 303 and r.headers["location"] == "/app", target
    async with Browser(sqlite_stack) as other:
        login = hidden((await other.get("/login")).text, "/login")
        r = await other.http.post(
            "/login",
            data=login | {"email": b.email, "password": PASSWORD},
            headers={"X-Forwarded-Proto": "https"},
        )
        assert r.status_code == 303
        cookies = [h for h in r.headers.get_list("set-cookie") if h.startswith("pocketpay_")]
        assert len(cookies) == 2 and all("Secure" in h for h in cookies), cookies


async def test_session_renewal_by_script_needs_our_origin(sqlite_stack: Stack) -> None:
    async with Browser(sqlite_stack) as b:
        await b.signup()
        r = await b.http.post("/app/session/refresh")
        assert r.status_code == 403  # no Origin: not from one of our pages' scripts
        r = await b.http.post("/app/session/refresh", headers={"Origin": "https://evil.example"})
        assert r.status_code == 403
        kept = b.http.cookies.get("pocketpay_refresh")
        r = await b.http.post("/app/session/refresh", headers={"Origin": sqlite_stack.base_url})
        assert r.status_code == 204
        assert b.http.cookies.get("pocketpay_refresh") == kept  # still valid: nothing rotated
        b.http.cookies.delete("pocketpay_session")
        r = await b.http.post("/app/session/refresh", headers={"Origin": sqlite_stack.base_url})
        assert r.status_code == 204 and b.http.cookies.get("pocketpay_refresh") != kept
        await b.submit("/app", "/app/session/logout", {})
        r = await b.http.post("/app/session/refresh", headers={"Origin": sqlite_stack.base_url})
        assert r.status_code == 401


async def test_two_tabs_renewing_one_session_at_once_both_stay_signed_in(
    sqlite_stack: Stack,
) -> None:
    """Both tabs' session cookies ended; each renews it with the refresh cookie they share.
    The second renewal, right after the first, is not mistaken for a stolen token."""
    async with Browser(sqlite_stack) as tab1, Browser(sqlite_stack) as tab2:
        await tab1.signup()
        shared = tab1.http.cookies.get("pocketpay_refresh")
        assert shared
        tab1.http.cookies.delete("pocketpay_session")
        tab2.http.cookies.set("pocketpay_refresh", shared, path="/app/session")
        origin = {"Origin": sqlite_stack.base_url}
        first = await tab1.http.post("/app/session/refresh", headers=origin)
        second = await tab2.http.post("/app/session/refresh", headers=origin)
        assert (first.status_code, second.status_code) == (204, 204)
        renewed = {first.cookies.get("pocketpay_refresh"), second.cookies.get("pocketpay_refresh")}
        assert len(renewed) == 2 and shared not in renewed and None not in renewed
        for tab in (tab1, tab2):
            page = await tab.get("/app")
            assert page.status_code == 200, page.text[:300]
    # Through the API (no grace), the same reuse is a stolen token: the family is revoked.
    api = await sqlite_stack.http.post("/api/v1/auth/refresh", json={"refresh_token": shared})
    assert api.status_code == 401
