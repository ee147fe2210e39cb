"""A small SSE client for tests (httpx streaming; frames parsed here, per the HTML spec's
event-stream format: ``field: value`` lines, a blank line ends a frame, ``:`` a comment)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class SseFrame:
    event: str = "message"
    id: str | None = None
    data: str = ""
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def body(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.data)
        return parsed


class SseStream:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def frame(self, timeout: float = 15.0) -> SseFrame | None:
        """The next frame (heartbeat comments included); None when the server closed."""
        async with asyncio.timeout(timeout):
            current = SseFrame()
            started = False
            async for line in self._lines:
                if line == "":
                    if started:
                        return current
                    continue
                started = True
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "":
                    current.comments.append(value)
                elif name == "event":
                    current.event = value
                elif name == "id":
                    current.id = value
                elif name == "data":
                    current.data = f"{current.data}\n{value}" if current.data else value
                elif name == "retry":
                    current.retry = int(value)
            return current if started else None

    async def event(self, timeout: float = 15.0) -> SseFrame | None:
        """The next frame that is not a heartbeat; None when the server closed."""
        while True:
            f = await self.frame(timeout)
            if f is None or not (f.comments and not f.data):
                return f

    async def until(self, event_type: str, timeout: float = 15.0) -> list[SseFrame]:
        """Frames up to and including the first of ``event_type``."""
        seen: list[SseFrame] = []
        while True:
            f = await self.event(timeout)
            assert f is not None, f"closed before {event_type}; saw {[s.event for s in seen]}"
            seen.append(f)
            if f.event == event_type:
                return seen


@contextlib.asynccontextmanager
async def sse(
    http: httpx.AsyncClient, headers: dict[str, str], **params: Any
) -> AsyncIterator[SseStream]:
    async with http.stream(
        "GET", "/api/v1/stream", headers=headers, params=params, timeout=30
    ) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield SseStream(response)
