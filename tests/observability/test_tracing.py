"""One trace spans gateway -> payments -> PSP and, through the bus, the ledger."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support import Stack, eventually

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the global provider can be set only once
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    yield _EXPORTER


async def test_one_trace_from_the_api_through_the_psp_to_the_ledger(
    exporter: InMemorySpanExporter, sqlite_stack: Stack
) -> None:
    stack = sqlite_stack
    alice = await stack.user()
    exporter.clear()
    payment = await stack.pay(alice, 1200)
    await stack.wait_available(alice, 1200)

    def names_in_trace() -> set[str] | None:
        spans = exporter.get_finished_spans()
        roots = [s for s in spans if s.name == "gateway POST /api/v1/payments"]
        if not roots:
            return None
        trace_id = roots[0].context.trace_id
        names = {s.name for s in spans if s.context.trace_id == trace_id}
        wanted = {"psp authorize", "consume payments.payment.captured"}
        return names if wanted <= names else None

    async def check() -> set[str] | None:
        return names_in_trace()

    names = await eventually(check)
    assert "payments POST /payments" in names  # the internal hop, same trace
    assert "consume payments.payment.created" in names  # through the bus to the processor
    assert payment["status"] == "captured"
