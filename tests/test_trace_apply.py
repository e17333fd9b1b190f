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


@pytest.mark.parametrize("ratio", ["0", "1"])
async def test_plain_request_is_traced_only_as_the_sampling_ratio_says(nats_url, nc, exporter, ratio):
    """Like Kubernetes' apiserver: a request inside a trace is always traced; one from a
    plain NATS client without a traceparent starts a trace at `trace_sample_ratio`."""
    stop = asyncio.Event()
    services = asyncio.create_task(run_services(["api"], nats_url, {"trace_sample_ratio": ratio}, stop))
    try:
        name = f"plain-{ratio}"
        manifest = f'{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}}}}'.encode()
        for _ in range(100):  # until the api answers
            try:
                reply = await nc.request("kyb.api.apply", manifest, timeout=1)
                break
            except Exception:
                await asyncio.sleep(0.1)
        assert reply.headers["Kyb-Status"] == "201"
        # A traced request from the same client is traced whatever the ratio.
        with telemetry.tracer("test").start_as_current_span("caller") as caller:
            traced = await nc.request(
                "kyb.api.apply", manifest.replace(name.encode(), b"traced-" + ratio.encode()), timeout=5,
                headers=telemetry.inject({}),
            )
        assert traced.headers["Kyb-Status"] == "201"
        trace_id = caller.get_span_context().trace_id
        writes = {s.attributes.get("kyb.name"): s for s in exporter.get_finished_spans() if s.name == "kv.create configmaps"}
        assert writes[f"traced-{ratio}"].context.trace_id == trace_id
        assert (name in writes) is (ratio == "1")
    finally:
        stop.set()
        await asyncio.wait_for(services, 30)


@pytest.mark.parametrize("raw", ["abc", "1.5", "-0.1"])
def test_a_bad_sampling_ratio_is_refused_by_name(raw):
    from services.api.service import _sample_ratio

    with pytest.raises(ValueError, match="trace_sample_ratio"):
        _sample_ratio(raw)
