"""W3C trace context on deliveries (scheduler_api.tracing): one trace id per firing, kept across
its retries and replays, a new span id per attempt, the trace id in the record; and, with an
OpenTelemetry provider installed, spans of the tick, the batch and each attempt (the SDK's
in-memory exporter stands in for an OTLP endpoint)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis import Redis

from scheduler_api import tracing
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, firings
from scheduler_api.triggers import Trigger
from tests.support.clock import ONCE, T, iso_second
from tests.support.engine import tick_and_deliver
from tests.support.factories import make_settings
from tests.support.receiver import Receiver, headers_of

FIRING = f"ws:0@{iso_second(T + 1)}"
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$")


def parts(request: Any) -> tuple[str, str]:
    match = TRACEPARENT.match(headers_of(request)["traceparent"])
    assert match is not None, headers_of(request)
    return match.group(1), match.group(2)


@pytest.fixture
def one_retry(redis_url: str, conn: Redis) -> Settings:
    return make_settings(redis_url, delivery_max_retries=1)


def test_every_attempt_carries_the_firings_trace_id_and_its_own_span_id(
    client: TestClient, conn: Redis, one_retry: Settings, receiver: Receiver
) -> None:
    receiver.on("/hook", (500, 0), (500, 0))
    headers = {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}  # the trigger's own is replaced
    trigger = Trigger(cron=ONCE, url=receiver.url + "/hook", method="POST", headers=headers)
    edits.replace(conn, "ws", [trigger], now=lambda: T)
    tick_and_deliver(conn, one_retry, T + 1.5, T + 2)
    assert client.post(f"/api/workspaces/ws/deliveries/{FIRING}/replay").status_code == 202
    tick_and_deliver(conn, one_retry, T + 3)

    sent = receiver.to("/hook")
    assert len(sent) == 3  # attempt 1, its retry, the replay
    traces = {parts(r)[0] for r in sent}
    spans = [parts(r)[1] for r in sent]
    assert traces == {tracing.trace_id(FIRING)} and "a" * 32 not in traces
    assert len(set(spans)) == 3
    assert all(len(headers_of(r).get("traceparent", "")) == 55 for r in sent)  # one header line each
    record = firings.get_record(conn, FIRING)
    assert record is not None and record["trace_id"] == tracing.trace_id(FIRING)
    listed = client.get("/api/workspaces/ws/deliveries").json()["deliveries"]
    assert [d["trace_id"] for d in listed] == [tracing.trace_id(FIRING)]
    # Another firing of the same trigger is another trace.
    assert tracing.trace_id(f"ws:0@{iso_second(T + 61)}") != tracing.trace_id(FIRING)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.install(None)
        provider.shutdown()


def test_with_a_provider_the_tick_the_batch_and_each_attempt_are_spans_of_the_firings_trace(
    conn: Redis, settings: Settings, receiver: Receiver, spans: InMemorySpanExporter
) -> None:
    edits.replace(conn, "ws", [Trigger(cron=ONCE, url=receiver.url + "/hook", method="POST")], now=lambda: T)
    tick_and_deliver(conn, settings, T + 1.5)

    finished = spans.get_finished_spans()
    names = [s.name for s in finished]
    assert "tick" in names and names.count("batch") == 1 and names.count("attempt") == 1, names
    [attempt] = [s for s in finished if s.name == "attempt"]
    [request] = receiver.to("/hook")
    trace, span = parts(request)
    assert format(attempt.context.trace_id, "032x") == trace == tracing.trace_id(FIRING)
    assert format(attempt.context.span_id, "016x") == span  # the receiver can find our span
    assert attempt.attributes is not None and attempt.attributes["http.response.status_code"] == 200
    [tick] = [s for s in finished if s.name == "tick" and s.attributes and s.attributes["fired"] == 1]
    assert tick.attributes is not None and tick.attributes["pushed"] == 1


def test_without_a_provider_no_span_is_made() -> None:
    assert tracing.tracer() is None
    assert not tracing.install_from_env("worker")  # OTEL_EXPORTER_OTLP_ENDPOINT is not set here
