"""Slack incoming webhooks: ``{"text": ...}`` POSTed through the SSRF guard.

Any public http(s) URL is accepted as a Slack webhook, not only ``https://hooks.slack.com/``:
Slack-compatible receivers (Mattermost, Rocket.Chat, Discord's ``/slack`` endpoints) take the
same body, and tests post to a real receiver on loopback. What keeps this safe is the target
check (``targets.post_guarded``), on every post and every redirect, not the host name.
"""

from __future__ import annotations

import json

import httpx

from pocketpay.notifications.targets import post_guarded


def escape(text: str) -> str:
    """Slack's three control characters, so user text (a transfer note) cannot mention
    ``<!channel>`` or forge a link; ``*bold*`` and other mrkdwn stay as they are."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


async def post_slack(
    client: httpx.AsyncClient,
    url: str,
    text: str,
    *,
    allow_private: bool,
    timeout_seconds: float = 10.0,
) -> httpx.Response:
    """Post ``text`` (escaped) to the webhook; Slack answers 200 ``ok`` when it took it.
    Raises ``targets.TargetRefused`` for a refused URL, httpx errors for transport ones."""
    body = json.dumps({"text": escape(text)}).encode()
    return await post_guarded(
        client,
        url,
        content=body,
        headers={"content-type": "application/json"},
        allow_private=allow_private,
        timeout_seconds=timeout_seconds,
    )
