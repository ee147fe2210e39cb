"""Schemathesis over the public OpenAPI: every /api/v1 operation, generated valid and invalid
requests, authenticated and with a fresh Idempotency-Key. None may get a 5xx, and every answer
must conform to the document: its status documented for the operation, its content type the
documented one (application/problem+json for errors), its body valid against the documented
schema. On both backends (PostgreSQL answers some errors from the database: NUL bytes, sizes).

Schemathesis drives requests synchronously, so the stack runs in a thread of its own with its
own event loop (the async ``stack`` fixture would be frozen while a sync test runs).

Each operation runs as its own Hypothesis test over ``operation.as_strategy()``, rather than
through ``schemathesis.pytest.from_fixture(...).parametrize()``: that loader sets
``request.node._nodeid``, which pytest 9 no longer has.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support import Stack, running_stack

T = TypeVar("T")


class ThreadedStack:
    """A running stack served from a background thread's event loop."""

    def __init__(self, backend: str, var_dir: Path) -> None:
        self.backend = backend
        self.var_dir = var_dir
        self.stack: Stack | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="schemathesis-stack", daemon=True)

    def __enter__(self) -> Stack:
        self._thread.start()
        if not self._ready.wait(120):
            raise RuntimeError("the stack did not start within 120 s")
        if self.error is not None:
            raise self.error
        assert self.stack is not None
        return self.stack

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(60)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        try:
            async with running_stack(self.backend, self.var_dir) as stack:
                self.stack = stack
                self._loop = asyncio.get_running_loop()
                self._stop = asyncio.Event()
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # surfaced by __enter__
            self.error = exc
            self._ready.set()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def threaded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ThreadedStack, Stack]]:
    runner = ThreadedStack(request.param, tmp_path_factory.mktemp("schemathesis"))
    with runner as stack:
        yield runner, stack


@dataclass
class World:
    """A user with objects in every state, for generated requests to act on."""

    headers: dict[str, str]
    ids: dict[str, list[str]]  # path parameter name -> real ids
    recipient: str
    turn: itertools.count[int] = field(default_factory=itertools.count)

    def ground(self, case: schemathesis.Case) -> None:
        """Every other valid case: real ids, a known currency and recipient, so generated
        requests reach the ledger and the PSP instead of stopping at 404 or 422."""
        turn = next(self.turn)
        if turn % 2:
            return
        for name, ids in self.ids.items():
            if case.path_parameters and name in case.path_parameters:
                case.path_parameters[name] = ids[turn // 2 % len(ids)]
        if case.path_parameters and "currency" in case.path_parameters:
            case.path_parameters["currency"] = "USD"
        if isinstance(case.body, dict):
            if "currency" in case.body:
                case.body["currency"] = "USD"
            if "recipient" in case.body:
                case.body["recipient"] = self.recipient
            if isinstance(case.body.get("amount_minor"), int):
                case.body["amount_minor"] = case.body["amount_minor"] % 3000 + 1


async def build_world(stack: Stack) -> World:
    alice, bob = await stack.user(), await stack.user()
    captured = await stack.pay(alice, 50_000, until="settled")
    await stack.wait_available(alice, 50_000)
    held = await stack.pay(alice, 4000, capture="manual", until="authorized")
    pending = await stack.pay(alice, 3000, capture="manual", until="authorized")
    r = await stack.post(alice, f"/api/v1/payments/{captured['id']}/refunds", {"amount_minor": 100})
    assert r.status_code == 202, r.text
    t = await stack.post(
        alice,
        "/api/v1/transfers",
        {"recipient": bob["user"]["email"], "amount_minor": 100, "currency": "USD"},
    )
    assert t.status_code == 201, t.text
    return World(
        headers=dict(alice["headers"]),
        ids={
            "payment_id": [captured["id"], held["id"], pending["id"]],
            "refund_id": [r.json()["id"]],
            "transfer_id": [t.json()["id"]],
        },
        recipient=bob["user"]["email"],
    )


@pytest.fixture(scope="module")
def world(threaded: tuple[ThreadedStack, Stack]) -> World:
    runner, stack = threaded
    return runner.call(build_world(stack))


@pytest.fixture(scope="module")
def api_schema(threaded: tuple[ThreadedStack, Stack]) -> Any:
    _, stack = threaded
    loaded = schemathesis.openapi.from_url(f"{stack.base_url}/openapi.json")
    # GET /api/v1/stream answers an endless event stream: a request/response tool would wait
    # for its end. Its refusals and frames are tested in tests/stream.
    return loaded.include(path_regex="^/api/v1/").exclude(path="/api/v1/stream")


MAX_EXAMPLES = 12  # both backends, both modes in well under a minute
# Every answer: not a 5xx, and as documented (status, content type, body schema).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def exercise(operation: Any, mode: GenerationMode, base_url: str, world: World) -> list[str]:
    """Run generated cases of one operation; the failed checks, as curl commands."""
    failures: list[str] = []

    # An operation without inputs (GET /me) only varies in headers: a few cases suffice.
    inputs = len(operation.path_parameters) + len(operation.query) + len(operation.body)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES if inputs else 5,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: every failure is reported
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        if mode is GenerationMode.POSITIVE:
            world.ground(case)
        headers = dict(world.headers)
        if not case.headers or "Idempotency-Key" not in case.headers:
            headers["Idempotency-Key"] = uuid.uuid4().hex
        try:
            case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=30)
        except AssertionError as exc:  # schemathesis' FailureGroup is one
            failures.append(f"{case.as_curl_command(headers)}\n  {str(exc)[:500]}")

    try:
        run()
    except Unsatisfiable:
        # Negative mode on an operation with no input that can be made invalid (GET /me).
        assert mode is GenerationMode.NEGATIVE, operation.label
    return failures


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_every_answer_is_documented_and_none_is_a_server_error(
    api_schema: Any, world: World, threaded: tuple[ThreadedStack, Stack], mode: GenerationMode
) -> None:
    base_url = threaded[1].base_url
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 14, [op.label for op in operations]
    failures: dict[str, list[str]] = {}
    for operation in operations:
        found = exercise(operation, mode, base_url, world)
        if found:
            failures[operation.label] = found
    assert not failures, "\n\n".join(f"{k}:\n" + "\n".join(v[:3]) for k, v in failures.items())
