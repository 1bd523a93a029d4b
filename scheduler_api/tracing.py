"""W3C trace context for deliveries, and OpenTelemetry spans when an OTLP endpoint is set.

Every delivery carries ``traceparent: 00-<trace id>-<span id>-01``
(https://www.w3.org/TR/trace-context/):

* the **trace id** is the firing's: 16 bytes of BLAKE2b of the firing id, so every attempt,
  retry and replay of one firing shares it, and it needs no storage - a record shows it
  (`trace_id`), computed from its id, so a receiver's logs can be joined to ours;
* the **span id** is the attempt's: 8 random bytes, or, with tracing on, the id of the attempt's
  exported span.

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set (the OpenTelemetry SDK's own variable; the service name
is ``scheduler-api-<role>`` unless ``OTEL_SERVICE_NAME`` says otherwise), `install_from_env`
exports spans with the SDK's OTLP/HTTP exporter in batches: the scheduler's ``tick``, the worker's
``batch`` and each ``attempt`` (a child of the firing's trace, with the workspace, trigger, status
and error as attributes). Unset, `tracer()` is None and a delivery pays one global read.

Failure rule: the exporter runs in the SDK's background thread; an endpoint that is down loses
spans (the SDK logs it), never a delivery.
"""

from __future__ import annotations

import os
from hashlib import blake2b
from random import getrandbits
from typing import Any

_tracer: Any = None  # an opentelemetry Tracer once installed; None: tracing is off


def trace_id(firing_id: str) -> str:
    """The firing's W3C trace id: 32 lower-case hex digits, never all zeros."""
    digest = blake2b(firing_id.encode(), digest_size=16).hexdigest()
    return digest if digest.strip("0") else "0" * 31 + "1"


def span_id() -> str:
    """A new W3C span id: 16 lower-case hex digits, never all zeros."""
    return f"{getrandbits(64) or 1:016x}"


def traceparent(firing_id: str, span: str | None = None) -> str:
    return f"00-{trace_id(firing_id)}-{span or span_id()}-01"


def tracer() -> Any:
    """The installed OpenTelemetry tracer, or None when tracing is off."""
    return _tracer


def install(provider: Any) -> None:
    """Use `provider` (an SDK TracerProvider) for the spans of this process; None turns tracing off."""
    global _tracer
    _tracer = provider.get_tracer("scheduler_api") if provider is not None else None


def install_from_env(role: str) -> bool:
    """At a process's start: export spans over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.
    Returns whether tracing is on."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or f"scheduler-api-{role}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    install(provider)
    return True


def firing_context(firing_id: str) -> Any:
    """An OpenTelemetry context whose parent is the firing's trace (for an attempt's span)."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    parent = SpanContext(
        trace_id=int(trace_id(firing_id), 16),
        span_id=int(blake2b(firing_id.encode(), digest_size=8).hexdigest(), 16) or 1,  # the firing itself
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))
