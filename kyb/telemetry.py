"""Tracing for every service: one OpenTelemetry tracer provider per process, and W3C trace
context carried in NATS message headers.

A user's ``kyb apply`` starts a trace; its ``traceparent`` rides in the headers of the request,
of the KV write and of every message that follows, so the api, the controllers and the kubelet
add their spans to that one trace. ``inject`` puts the current context into headers,
``extract`` reads it back, ``span_from_headers`` starts the span of whoever reacts.

Spans go to the exporter given to ``init_telemetry`` and, when ``OTEL_EXPORTER_OTLP_ENDPOINT``
is set, to OTLP over HTTP (package ``opentelemetry-exporter-otlp-proto-http``, extra ``otlp``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "Context",
    "SpanKind",
    "carries_context",
    "current_ids",
    "extract",
    "in_trace",
    "init_telemetry",
    "inject",
    "span_from_headers",
    "tracer",
]

log = structlog.get_logger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
_lock = threading.Lock()
_provider: TracerProvider | None = None
_exporters: list[SpanExporter] = []


class _CaseInsensitiveGetter(Getter[Mapping[str, str]]):
    """NATS header names keep the case the sender used; trace context names are lower-case."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        wanted = key.lower()
        for k, v in carrier.items():
            if k.lower() == wanted:
                return [v]
        return None

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier.keys())


_GETTER = _CaseInsensitiveGetter()


def init_telemetry(service_name: str, *, exporter: SpanExporter | None = None) -> TracerProvider:
    """Install the process-wide tracer provider (once) and return it.

    The first call names the service and sets up OTLP export when the environment asks for it.
    Later calls return the same provider; an ``exporter`` not seen before is attached to it
    (spans are handed to it synchronously, which is what in-memory exporters in tests want).
    """
    global _provider
    with _lock:
        if _provider is None:
            provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
            endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
            )
            if endpoint:
                otlp = _otlp_exporter()
                if otlp is not None:
                    provider.add_span_processor(BatchSpanProcessor(otlp))
                    log.info("exporting traces over OTLP", endpoint=endpoint, service=service_name)
            trace.set_tracer_provider(provider)
            # another provider may have been installed before us; use whatever is global
            current = trace.get_tracer_provider()
            _provider = current if isinstance(current, TracerProvider) else provider
        if exporter is not None and all(exporter is not e for e in _exporters):
            _provider.add_span_processor(SimpleSpanProcessor(exporter))
            _exporters.append(exporter)
        return _provider


def _otlp_exporter() -> SpanExporter | None:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but opentelemetry-exporter-otlp-proto-http is not "
            "installed; traces are not exported (pip install 'kybernetes[otlp]')"
        )
        return None
    return OTLPSpanExporter()


def tracer(name: str) -> trace.Tracer:
    """The tracer of one component (instrumentation scope ``name``); looked up once per name."""
    found = _tracers.get(name)
    if found is None:
        found = _tracers[name] = trace.get_tracer(name)
    return found


_tracers: dict[str, trace.Tracer] = {}


def inject(headers: dict[str, str] | None = None, context: Context | None = None) -> dict[str, str]:
    """Add ``traceparent``/``tracestate`` of ``context`` (default: the current one) to ``headers``."""
    carrier: dict[str, str] = headers if headers is not None else {}
    _PROPAGATOR.inject(carrier, context=context)
    return carrier


def extract(headers: Mapping[str, str] | None) -> Context:
    """The trace context carried in ``headers`` (an empty context when there is none)."""
    return _PROPAGATOR.extract(headers or {}, context=Context(), getter=_GETTER)


def carries_context(headers: Mapping[str, str] | None) -> bool:
    """True when ``headers`` hold a W3C ``traceparent`` (whatever the case of its name)."""
    if not headers:
        return False
    return "traceparent" in headers or any(k.lower() == "traceparent" for k in headers)


def has_trace(ctx: Context | None) -> bool:
    """True when ``ctx`` carries a valid span context."""
    if ctx is None:
        return False
    return trace.get_current_span(ctx).get_span_context().is_valid


def in_trace() -> bool:
    """True inside a span of a trace (the current context carries a valid span context)."""
    return trace.get_current_span().get_span_context().is_valid


@contextmanager
def span_from_headers(
    name: str,
    headers: Mapping[str, str] | None,
    kind: SpanKind = SpanKind.CONSUMER,
    *,
    tracer_name: str = "kyb",
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> Iterator[Span]:
    """Start (and make current) a span whose parent is the trace context in ``headers``."""
    with tracer(tracer_name).start_as_current_span(
        name, context=extract(headers), kind=kind, attributes=dict(attributes or {})
    ) as span:
        yield span


def current_ids(ctx: Context | None = None) -> tuple[str, str] | None:
    """(trace_id, span_id) in hex of the current span, or None outside any span."""
    sc = trace.get_current_span(ctx).get_span_context()
    if not sc.is_valid:
        return None
    return trace.format_trace_id(sc.trace_id), trace.format_span_id(sc.span_id)


def attach(ctx: Context) -> object:
    """Make ``ctx`` current; give the returned token to ``detach``."""
    return otel_context.attach(ctx)


def detach(token: object) -> None:
    otel_context.detach(token)  # type: ignore[arg-type]
