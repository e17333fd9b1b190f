"""Finished spans kept on the bus, so ``kyb trace`` can show an object's path without a collector.

Every service process publishes the spans it finishes to ``kyb.traces.<trace_id>``; the
JetStream stream ``KYB_TRACES`` keeps them for a bounded time and size (an hour, 64 MiB,
oldest dropped first). :class:`TraceStreamExporter` is an OpenTelemetry ``SpanExporter``:
a ``BatchSpanProcessor`` hands it batches on its own thread and it schedules the publishes on
the event loop of the NATS connection it is bound to. :func:`read_spans` reads them back.

OTLP export to a collector (Jaeger, Tempo, ...) is independent of this and stays available
through ``OTEL_EXPORTER_OTLP_ENDPOINT`` (see kyb/telemetry.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import format_span_id, format_trace_id

from kyb import buckets, errors

__all__ = [
    "TRACES_STREAM",
    "SpanRecord",
    "TraceStreamExporter",
    "bind",
    "ensure_stream",
    "read_spans",
    "record_of",
    "unbind",
]

TRACES_STREAM = "KYB_TRACES"
TRACES_SUBJECT = "kyb.traces"
TRACES_MAX_AGE_S = 3600.0
TRACES_MAX_BYTES = 64 * 1024 * 1024

Attr = str | int | float | bool


class SpanRecord(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One finished span as stored on the stream (times in Unix nanoseconds)."""

    traceId: str
    spanId: str
    name: str
    service: str
    start: int
    end: int
    parentId: str = ""
    kind: str = "INTERNAL"
    status: str = "UNSET"
    message: str = ""
    attributes: dict[str, Attr] = {}

    @property
    def seconds(self) -> float:
        return max(0, self.end - self.start) / 1e9


def record_of(span: ReadableSpan) -> SpanRecord:
    ctx = span.context
    parent = span.parent
    attrs: dict[str, Attr] = {}
    for k, v in (span.attributes or {}).items():
        attrs[k] = v if isinstance(v, str | int | float | bool) else str(v)
    return SpanRecord(
        traceId=format_trace_id(ctx.trace_id),
        spanId=format_span_id(ctx.span_id),
        parentId=format_span_id(parent.span_id) if parent is not None and parent.is_valid else "",
        name=span.name,
        service=str(span.resource.attributes.get("service.name", "")),
        start=span.start_time or 0,
        end=span.end_time or span.start_time or 0,
        kind=span.kind.name,
        status=span.status.status_code.name,
        message=span.status.description or "",
        attributes=attrs,
    )


_encoder = msgspec.json.Encoder()


class TraceStreamExporter(SpanExporter):
    """Publishes finished spans on ``kyb.traces.<trace_id>`` through the bound connection."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._targets: list[tuple[NATS, asyncio.AbstractEventLoop]] = []
        self.dropped = 0  # spans finished while no connection was bound

    def bind(self, nc: NATS, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._targets.append((nc, loop))

    def unbind(self, nc: NATS) -> None:
        with self._lock:
            self._targets = [t for t in self._targets if t[0] is not nc]

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            target = self._targets[-1] if self._targets else None
        if target is None or target[1].is_closed():
            self.dropped += len(spans)
            return SpanExportResult.SUCCESS
        batch = [(f"{TRACES_SUBJECT}.{format_trace_id(s.context.trace_id)}", _encoder.encode(record_of(s))) for s in spans]
        nc, loop = target
        try:
            asyncio.run_coroutine_threadsafe(_publish(nc, batch), loop)
        except RuntimeError:  # the loop went away meanwhile
            self.dropped += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._targets.clear()


async def _publish(nc: NATS, batch: list[tuple[str, bytes]]) -> None:
    # Core publishes: the stream captures them; spans are best effort and never wait for acks.
    with contextlib.suppress(nats.errors.Error, OSError):
        for subject, payload in batch:
            await nc.publish(subject, payload)


_exporter: TraceStreamExporter | None = None
_exporter_lock = threading.Lock()


def bind(provider: TracerProvider, nc: NATS, *, delay_ms: int = 250) -> TraceStreamExporter:
    """Send this process's spans to the trace stream over ``nc`` (attached to ``provider`` once
    per process; a later ``bind`` takes over until ``unbind``)."""
    global _exporter
    with _exporter_lock:
        if _exporter is None:
            _exporter = TraceStreamExporter()
            provider.add_span_processor(BatchSpanProcessor(_exporter, schedule_delay_millis=delay_ms))
        exporter = _exporter
    exporter.bind(nc, asyncio.get_running_loop())
    return exporter


async def unbind(provider: TracerProvider, nc: NATS) -> None:
    """Flush what was finished so far over ``nc`` and stop using it."""
    with contextlib.suppress(Exception):
        await asyncio.to_thread(provider.force_flush, 2000)
    if _exporter is not None:
        _exporter.unbind(nc)
    for _ in range(3):  # let the publishes scheduled by the flush run
        await asyncio.sleep(0)
    with contextlib.suppress(Exception):
        await nc.flush(timeout=2)


async def ensure_stream(js: JetStreamContext, *, replicas: int = 1) -> None:
    cfg = buckets.log_stream(TRACES_STREAM, TRACES_SUBJECT, max_age=TRACES_MAX_AGE_S, max_bytes=TRACES_MAX_BYTES,
                             replicas=replicas)
    await buckets.ensure_stream(js, cfg)


async def read_spans(js: JetStreamContext, trace_id: str | None = None, *, timeout: float = 5.0) -> list[SpanRecord]:
    """Every stored span (of one trace when ``trace_id`` is given), oldest first."""
    subject = f"{TRACES_SUBJECT}.{trace_id}" if trace_id else f"{TRACES_SUBJECT}.>"
    try:
        info = await js.stream_info(TRACES_STREAM)
    except nats.js.errors.NotFoundError:
        return []
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as e:
        raise errors.Unreachable(f"JetStream does not answer: {e}") from e
    if info.state.messages == 0:
        return []
    sub = await js.subscribe(subject, stream=TRACES_STREAM, ordered_consumer=True, deliver_policy=api.DeliverPolicy.ALL)
    out: list[SpanRecord] = []
    try:
        ci = await sub.consumer_info()
        if ci.num_pending == 0 and (ci.delivered is None or not ci.delivered.consumer_seq) and sub.pending_msgs == 0:
            return out
        while True:
            try:
                msg = await sub.next_msg(timeout=timeout)
            except nats.errors.TimeoutError:
                break  # nothing (more) for this subject
            with contextlib.suppress(msgspec.DecodeError):
                out.append(msgspec.json.decode(msg.data, type=SpanRecord))
            if msg.metadata.num_pending == 0:
                break
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return out
