"""Trace context across NATS and into controllers; log lines carrying trace ids."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import io
import json
import logging
import os
import subprocess
import sys

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from kyb import telemetry
from kyb.controller import Controller
from kyb.log import configure_logging
from tests.cluster import wait_for as _wait_for

_EXPORTER = InMemorySpanExporter()


# Their windows are a few milliseconds wide: poll more often than the default.
wait_for = functools.partial(_wait_for, interval=0.005)


@pytest.fixture
def spans() -> InMemorySpanExporter:
    telemetry.init_telemetry("kyb-test", exporter=_EXPORTER)
    _EXPORTER.clear()
    return _EXPORTER


@pytest.fixture
def log_lines():
    """Configure JSON logging into a buffer; give back a reader of the parsed lines."""
    buf = io.StringIO()
    configure_logging("kyb-test", stream=buf)

    def read() -> list[dict]:
        return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]

    yield read
    structlog.reset_defaults()
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "_kyb", False)]:
        root.removeHandler(h)


def hex_ids(span) -> tuple[str, str]:
    sc = span.get_span_context()
    return trace.format_trace_id(sc.trace_id), trace.format_span_id(sc.span_id)


def test_init_telemetry_is_idempotent(spans) -> None:
    first = telemetry.init_telemetry("kyb-test")
    assert telemetry.init_telemetry("another-name", exporter=spans) is first
    assert trace.get_tracer_provider() is first
    with telemetry.tracer("t").start_as_current_span("once"):
        pass
    assert [s.name for s in spans.get_finished_spans()] == ["once"], "an exporter is attached only once"


def test_inject_without_a_span_adds_nothing_and_extract_reads_any_header_case(spans) -> None:
    assert telemetry.inject() == {}
    with telemetry.tracer("client").start_as_current_span("apply") as span:
        headers = telemetry.inject({"Kyb-Namespace": "default"})
    assert headers["Kyb-Namespace"] == "default"
    assert headers["traceparent"].split("-")[1] == hex_ids(span)[0]
    shouted = {"Traceparent": headers["traceparent"]}
    ctx = telemetry.extract(shouted)
    assert telemetry.current_ids(ctx) == hex_ids(span)
    assert telemetry.current_ids(telemetry.extract(None)) is None


async def test_trace_continues_across_nats_and_into_a_controller(spans, nc, log_lines) -> None:
    seen: list[tuple[str, str]] = []
    reconciled: list[tuple[str, tuple[str, str] | None]] = []

    async def reconcile(key: str, _ctx) -> None:
        reconciled.append((key, telemetry.current_ids()))
        structlog.get_logger("test").info("reconciling")

    controller = Controller("deployment", reconcile, resync_seconds=None)
    stop = asyncio.Event()
    running = asyncio.create_task(controller.run(stop))

    async def on_message(msg) -> None:
        with telemetry.span_from_headers("handle apply", msg.headers, SpanKind.CONSUMER) as span:
            seen.append(hex_ids(span))
            controller.enqueue_from_headers("default.web", telemetry.inject())

    await nc.subscribe("kyb.test.apply", cb=on_message)
    with telemetry.tracer("kyb.cli").start_as_current_span("kyb apply", kind=SpanKind.CLIENT) as client:
        await nc.publish("kyb.test.apply", b"{}", headers=telemetry.inject())
        client_trace, client_span = hex_ids(client)
    await nc.flush()
    await wait_for(lambda: reconciled)
    stop.set()
    await asyncio.wait_for(running, 5)

    handled_trace, handled_span = seen[0]
    assert handled_trace == client_trace
    finished = {s.name: s for s in spans.get_finished_spans()}
    assert finished["handle apply"].parent.span_id == int(client_span, 16)
    assert finished["handle apply"].kind is SpanKind.CONSUMER

    rec = finished["reconcile deployment"]
    assert trace.format_trace_id(rec.context.trace_id) == client_trace
    assert rec.parent.span_id == int(handled_span, 16)
    assert rec.attributes["kyb.key"] == "default.web"
    assert reconciled[0] == ("default.web", (client_trace, trace.format_span_id(rec.context.span_id)))

    line = next(entry for entry in log_lines() if entry["event"] == "reconciling")
    assert line["trace_id"] == client_trace
    assert line["span_id"] == trace.format_span_id(rec.context.span_id)
    assert line["controller"] == "deployment" and line["key"] == "default.web"
    assert line["service"] == "kyb-test"


async def test_a_failing_reconcile_marks_its_span_as_an_error(spans) -> None:
    calls: list[str] = []

    async def reconcile(key: str, _ctx) -> float | None:
        calls.append(key)
        if len(calls) == 1:
            raise RuntimeError("image missing")
        return None

    controller = Controller("job", reconcile, resync_seconds=None)
    stop = asyncio.Event()
    running = asyncio.create_task(controller.run(stop))
    with telemetry.tracer("kyb.cli").start_as_current_span("kyb apply") as client:
        controller.enqueue("default.pi", telemetry.extract(telemetry.inject()))
    await wait_for(lambda: len(calls) == 2)
    stop.set()
    await asyncio.wait_for(running, 5)
    attempts = [s for s in spans.get_finished_spans() if s.name == "reconcile job"]
    assert [s.status.status_code for s in attempts] == [trace.StatusCode.ERROR, trace.StatusCode.UNSET]
    assert "image missing" in (attempts[0].status.description or "")
    assert {s.context.trace_id for s in attempts} == {client.get_span_context().trace_id}, (
        "the retry stays in the trace of the change that caused it"
    )


def test_logs_are_json_off_a_terminal_and_readable_on_one(log_lines) -> None:
    structlog.get_logger().info("pod started", pod="web-1")
    entry = log_lines()[-1]
    assert entry["event"] == "pod started" and entry["pod"] == "web-1" and entry["level"] == "info"
    assert entry["service"] == "kyb-test" and "trace_id" not in entry

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Terminal()
    configure_logging("kyb-test", stream=tty)
    structlog.get_logger().info("pod started", pod="web-1")
    text = tty.getvalue()
    assert "pod started" in text and "web-1" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[-1])


def _otlp_installed() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.skipif(
    _otlp_installed(),
    reason="the OTLP exporter is installed here",
)
def test_otlp_endpoint_without_the_exporter_package_says_so() -> None:
    code = "from kyb.log import configure_logging; from kyb.telemetry import init_telemetry; configure_logging('api'); init_telemetry('api')"
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "opentelemetry-exporter-otlp-proto-http is not installed" in out.stdout
