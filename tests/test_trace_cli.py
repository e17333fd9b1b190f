"""``kyb trace``: the span tree of an object's path, read from the KYB_TRACES stream that the
services publish to (real nats-server, services in-process, the process runtime), and the pure
tree logic under hypothesis."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from kyb.cli.main import cli
from kyb.cli.trace import build_tree, choose_trace
from kyb.store import Store
from kyb.tracestore import SpanRecord
from tests.cluster import Services, wait_api, wait_for

DEPLOY = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "traced", "namespace": "default"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "traced"}},
        "template": {
            "metadata": {"labels": {"app": "traced"}},
            "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "60"]}]},
        },
    },
}


async def test_kyb_trace_prints_the_path_from_apply_to_container_start(nats_url, nc, tmp_path: Path):
    options = {
        "node_name": "trace-node",
        "runtime": "process",
        "state_dir": str(tmp_path / "kubelet"),
        "pod_cidr": "127.79.0.0/16",
        "relist": 0.2,
    }
    svc = Services(["api", "scheduler", "deployment", "replication", "kubelet"], nats_url, options).start()
    store = Store(nc.jetstream())
    try:
        from kyb.client import ApiClient

        await wait_for(lambda: store.get("Node", None, "trace-node"), what="node registered")
        await wait_api(nc)  # the kubelet may register before the api answers
        await ApiClient(nc, timeout=5).apply(DEPLOY, "default")

        async def running() -> bool:
            pods = await store.list("pods", "default")
            return len(pods) == 1 and pods[0].status.phase == "Running"

        await wait_for(running, timeout=30, what="the pod running")

        def trace_output() -> str:
            r = CliRunner().invoke(cli, ["--nats", nats_url, "trace", "deploy/traced"])
            return r.output if r.exit_code == 0 else ""

        async def complete() -> str | None:
            out = await asyncio.to_thread(trace_output)
            return out if "start container main" in out else None

        out = await wait_for(complete, timeout=20, what="a trace reaching the kubelet")
        print(out)
        lines = out.splitlines()
        assert lines[0].startswith("deployment/traced  trace ")
        first = next(i for i, line in enumerate(lines) if "api.apply" in line)
        assert any("kv.create deployments Deployment default/traced" in line for line in lines[first:])
        assert any("reconcile deployment default.traced" in line for line in lines)
        assert any("kv.create replicasets" in line for line in lines)
        assert any("kv.create pods" in line for line in lines)
        assert all(" ms" in line for line in lines[1:] if "──" in line)
    finally:
        await svc.stop()
        from tests.test_kubelet_lifecycle import cleanup_runtime

        await cleanup_runtime("process", options)


def test_kyb_trace_says_when_nothing_is_stored(nats_url):
    r = CliRunner().invoke(cli, ["--nats", nats_url, "trace", "deploy/none"])
    assert r.exit_code == 1
    assert "No trace found for deployment/none" in r.output


# -- pure tree logic ----------------------------------------------------------------------------

ids = st.sampled_from([f"{i:016x}" for i in range(12)])
spans = st.lists(
    st.builds(
        lambda sid, pid, start, dur: SpanRecord(
            traceId="t" * 32, spanId=sid, parentId=pid, name=f"s{sid[-2:]}", service="x", start=start, end=start + dur
        ),
        ids,
        st.one_of(st.just(""), ids),
        st.integers(0, 10**9),
        st.integers(0, 10**9),
    ),
    max_size=20,
)


def walk(nodes):
    for n in nodes:
        yield n
        yield from walk(n.children)


@given(spans)
def test_every_span_appears_once_under_its_parent_in_start_order(records):
    roots = build_tree(records)
    seen = [n.span.spanId for n in walk(roots)]
    assert sorted(seen) == sorted({r.spanId for r in records})
    for n in walk(roots):
        assert all(c.span.parentId == n.span.spanId for c in n.children)
        starts = [c.span.start for c in n.children]
        assert starts == sorted(starts)


def test_choose_trace_prefers_the_latest_trace_started_by_the_api():
    def span(trace: str, sid: str, name: str, start: int, **attrs: str) -> SpanRecord:
        return SpanRecord(traceId=trace, spanId=sid, name=name, service="s", start=start, end=start + 1, attributes=attrs)

    obj = {"kyb.kind": "Deployment", "kyb.namespace": "default", "kyb.name": "web"}
    records = [
        span("a" * 32, "1", "api.apply", 10),
        span("a" * 32, "2", "kv.create deployments", 11, **obj),
        span("b" * 32, "3", "api.apply", 20),
        span("b" * 32, "4", "kv.update deployments", 21, **obj),
        span("c" * 32, "5", "reconcile deployment", 30),  # a controller's status write, later
        span("c" * 32, "6", "kv.update deployments", 31, **obj),
        span("d" * 32, "7", "api.apply", 40),  # another object
        span("d" * 32, "8", "kv.create deployments", 41, **{**obj, "kyb.name": "other"}),
    ]
    assert choose_trace(records, "Deployment", "default", "web") == "b" * 32
    assert choose_trace(records[4:6], "Deployment", "default", "web") == "c" * 32
    assert choose_trace(records, "Deployment", "kube-system", "web") is None
