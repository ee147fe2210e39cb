"""A person's browser, at the HTTP level: an httpx client with its own cookie jar that reads
the forms' hidden fields (CSRF token, idempotency key) from the pages, as a browser would."""

from __future__ import annotations

import html
import re
import uuid
from typing import Any

import httpx

from tests.support import PASSWORD, Stack

_HIDDEN = re.compile(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"')


def hidden(page: str, action: str | None = None) -> dict[str, str]:
    """The hidden fields of the form posting to ``action`` (the first form when None)."""
    if action is not None:
        start = page.index(f'action="{action}"')
        page = page[start : page.index("</form>", start)]
    else:
        page = page[page.index("<main>") :]
    return {k: html.unescape(v) for k, v in _HIDDEN.findall(page)}


def error_of(page: str, field: str) -> str:
    """The words shown next to ``field``."""
    found = re.search(rf'<p class="error" id="{field}-error" role="alert">([^<]*)</p>', page)
    assert found, f"no error by {field!r} in the page"
    return html.unescape(found.group(1))


class Browser:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        # A pooled connection idle past uvicorn's keep-alive (5 s) may be closed by the server
        # as it is reused (a ReadError): drop idle connections well before that, as browsers do.
        limits = httpx.Limits(keepalive_expiry=2.0)
        self.http = httpx.AsyncClient(base_url=stack.base_url, timeout=30, limits=limits)
        self.email = f"w{uuid.uuid4().hex[:10]}@example.com"

    async def __aenter__(self) -> Browser:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.http.get(path, **kw)

    async def submit(
        self, page_path: str, action: str, fields: dict[str, str], **kw: Any
    ) -> httpx.Response:
        """Open ``page_path``, fill the form posting to ``action`` and send it."""
        page = await self.http.get(page_path)
        assert page.status_code == 200, page.text[:300]
        return await self.http.post(action, data=hidden(page.text, action) | fields, **kw)

    async def signup(self, name: str = "Web User") -> httpx.Response:
        r = await self.submit(
            "/signup", "/signup", {"name": name, "email": self.email, "password": PASSWORD}
        )
        assert r.status_code == 303, r.text[:500]
        return r

    async def top_up(
        self, amount: str = "50.00", card: str = "pm_card_visa", hold: bool = False
    ) -> str:
        fields = {"amount": amount, "currency": "USD", "card": card}
        if hold:
            fields["hold"] = "1"
        r = await self.submit("/app/top-up", "/app/top-up", fields)
        assert r.status_code == 303, r.text[:500]
        return r.headers["location"].rsplit("/", 1)[1]

    @property
    def session(self) -> str:
        token = self.http.cookies.get("pocketpay_session")
        assert token, "no session cookie"
        return token

    @property
    def api(self) -> dict[str, Any]:
        """This person as an API caller (their session's access token)."""
        return {"headers": {"Authorization": f"Bearer {self.session}"}}
