"""Slack incoming webhook posts to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from pocketpay.notifications.slack import post_slack
from pocketpay.notifications.targets import TargetRefused


@dataclass
class SlackReceiver:
    status: int = 200
    answer: bytes = b"ok"
    posts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # content-type, body
    url: str = ""


@pytest.fixture
def slack() -> Iterator[SlackReceiver]:
    receiver = SlackReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            receiver.posts.append((self.headers.get("content-type", ""), json.loads(body)))
            self.send_response(receiver.status)
            self.send_header("content-length", str(len(receiver.answer)))
            self.end_headers()
            self.wfile.write(receiver.answer)

        def log_message(self, *_args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/services/T0/B0/secret"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()
    thread.join()


async def test_the_text_arrives_as_slack_json(slack: SlackReceiver) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        resp = await post_slack(client, slack.url, "*You received 12.34 USD*", allow_private=True)
    assert (resp.status_code, resp.text) == (200, "ok")
    assert slack.posts == [("application/json", {"text": "*You received 12.34 USD*"})]


async def test_user_text_cannot_ping_the_channel_or_forge_links(slack: SlackReceiver) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        text = "note: <!channel> <http://x|y> & co"
        await post_slack(client, slack.url, text, allow_private=True)
    [(_, body)] = slack.posts
    assert body["text"] == "note: &lt;!channel&gt; &lt;http://x|y&gt; &amp; co"


async def test_a_refusing_webhook_answer_is_returned(slack: SlackReceiver) -> None:
    slack.status, slack.answer = 404, b"no_service"
    async with httpx.AsyncClient(trust_env=False) as client:
        resp = await post_slack(client, slack.url, "hi", allow_private=True)
    assert (resp.status_code, resp.text) == (404, "no_service")


async def test_a_loopback_webhook_is_refused_without_allow_private(slack: SlackReceiver) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        with pytest.raises(TargetRefused, match="loopback"):
            await post_slack(client, slack.url, "hi", allow_private=False)
    assert slack.posts == []
