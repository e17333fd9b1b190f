"""One `kyb apply` and the reconcile it causes are one trace: client span -> api span ->
KV write headers -> informer -> controller reconcile span."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kyb import telemetry
from kyb.client import ApiClient
from kyb.controller import Controller
from kyb.informer import Informer
from kyb.serve import run_services


@pytest.fixture(scope="module")
def exporter():
    exp = InMemorySpanExporter()
    telemetry.init_telemetry("test", exporter=exp)
    return exp


async def test_apply_and_resulting_reconcile_share_one_trace(nats_url, nc, exporter):
    stop = asyncio.Event()
    services = asyncio.create_task(run_services(["api"], nats_url, {}, stop))
    reconciled: asyncio.Queue[str] = asyncio.Queue()

    async def reconcile(key, ctx):
        await reconciled.put(key)
        return None

    controller = Controller("watcher", reconcile, workers=1, resync_seconds=None)
    informer = Informer(nc, "ConfigMap")
    informer.add_handler(lambda ev, new, old, headers: controller.enqueue_from_headers((new or old).metadata.namespace + "." + (new or old).metadata.name, headers))
    await informer.start()
    ctl = asyncio.create_task(controller.run(stop))
    try:
        await informer.wait_synced(10)
        client = ApiClient(nc)
        with telemetry.tracer("kyb.cli").start_as_current_span("kyb apply") as root:
            for _ in range(100):  # until the api answers
                try:
                    await client.apply(b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: traced}\ndata: {a: b}\n")
                    break
                except Exception:
                    await asyncio.sleep(0.1)
        trace_id = root.get_span_context().trace_id
        assert await asyncio.wait_for(reconciled.get(), 10) == "default.traced"
        for _ in range(100):
            names = {s.name for s in exporter.get_finished_spans() if s.context.trace_id == trace_id}
            if any(n.startswith("reconcile") for n in names):
                break
            await asyncio.sleep(0.05)
        in_trace = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
        names = {s.name for s in in_trace}
        assert "kyb apply" in names and "api.apply" in names, names
        assert any(n.startswith("reconcile") for n in names), names
        api_span = next(s for s in in_trace if s.name == "api.apply")
        # The api span hangs under the user's span (through the client's request span).
        by_id = {s.context.span_id: s for s in in_trace}
        ancestors, cur = [], api_span
        while cur is not None and cur.parent is not None:
            ancestors.append(cur.parent.span_id)
            cur = by_id.get(cur.parent.span_id)
        assert root.get_span_context().span_id in ancestors
        assert api_span.kind == trace.SpanKind.SERVER
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(services, ctl, return_exceptions=True), 30)
        await informer.stop()
