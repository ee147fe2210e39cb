"""/docs (Swagger UI) and /redoc render the API from assets installed with the package: in
chromium, with every request that would leave localhost refused, both pages show the API's
operations, and no request tried to leave. Screenshots go to test-artifacts/."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser import chromium
from tests.support import Stack

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
LOCAL_SCHEMES = {"data", "blob", "about"}


def _create_payment_summary(openapi: dict[str, Any]) -> str:
    """How the docs title the payments create operation (whatever the schema calls it)."""
    operation = openapi["paths"]["/api/v1/payments"]["post"]
    summary: str = operation.get("summary") or operation["operationId"]
    return summary


async def _offline_page(browser: Any, left: list[str]) -> Any:
    """A page whose requests beyond localhost are aborted and recorded in ``left``."""
    page = await browser.new_page(viewport={"width": 1200, "height": 1400})

    async def guard(route: Any) -> None:
        url = urlsplit(route.request.url)
        if url.scheme in LOCAL_SCHEMES or url.hostname in LOCAL_HOSTS:
            await route.continue_()
        else:
            left.append(route.request.url)
            await route.abort()

    await page.route("**/*", guard)
    return page


@pytest.mark.browser
async def test_docs_and_redoc_render_offline(sqlite_stack: Stack) -> None:
    r = await sqlite_stack.http.get("/openapi.json")
    assert r.status_code == 200
    summary = _create_payment_summary(r.json())
    ARTIFACTS.mkdir(exist_ok=True)
    left: list[str] = []
    async with chromium() as browser:
        page = await _offline_page(browser, left)
        loaded: list[str] = []
        page.on("requestfinished", lambda req: loaded.append(req.url))

        await page.goto(f"{sqlite_stack.base_url}/docs")
        create = page.locator(".opblock-post", has=page.locator('[data-path="/api/v1/payments"]'))
        await create.first.wait_for(state="visible", timeout=30_000)
        assert await create.first.locator(".opblock-summary-description").inner_text() == summary
        await page.screenshot(path=str(ARTIFACTS / "docs-swagger-offline.png"))
        # The scripts came from the package, not from a CDN.
        assert f"{sqlite_stack.base_url}/docs/assets/swagger-ui/swagger-ui-bundle.js" in loaded

        await page.goto(f"{sqlite_stack.base_url}/redoc")
        heading = page.locator("h2", has_text=summary)
        await heading.first.wait_for(state="visible", timeout=30_000)
        # ReDoc shows the method and path of the operation beside it.
        assert await page.get_by_text("/api/v1/payments", exact=True).count() >= 1
        await heading.first.scroll_into_view_if_needed()
        await page.screenshot(path=str(ARTIFACTS / "docs-redoc-offline.png"))
        assert f"{sqlite_stack.base_url}/docs/assets/redoc/redoc.standalone.js" in loaded
    assert left == []


async def test_docs_pages_name_only_local_assets(sqlite_stack: Stack) -> None:
    """Without a browser: the HTML of both pages refers to no other host."""
    for path, script in (
        ("/docs", "/docs/assets/swagger-ui/swagger-ui-bundle.js"),
        ("/redoc", "/docs/assets/redoc/redoc.standalone.js"),
    ):
        r = await sqlite_stack.http.get(path)
        assert r.status_code == 200
        assert script in r.text
        assert "http://" not in r.text and "https://" not in r.text, r.text
        asset = await sqlite_stack.http.get(script)
        assert asset.status_code == 200
        assert len(asset.content) > 500_000  # the real bundle, not a stub
        assert asset.headers["request-id"].startswith("req_")
