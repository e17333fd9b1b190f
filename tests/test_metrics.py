"""Prometheus metrics, scraped over real HTTP from services running on a real nats-server:
reconciles, work queues, KV latency and conflicts, watch lag, and a kubelet's pod counts."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from kyb import errors
from kyb.natsd import free_port
from kyb.store import Store
from tests.cluster import Services, wait_api, wait_for

RS = {
    "apiVersion": "apps/v1",
    "kind": "ReplicaSet",
    "metadata": {"name": "sleepers", "namespace": "default"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "sleepers"}},
        "template": {
            "metadata": {"labels": {"app": "sleepers"}},
            "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "60"]}]},
        },
    },
}


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """name -> {sorted labels -> value} for every sample of the endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        text = r.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def total(samples: dict[str, dict], name: str, **labels: str) -> float:
    return sum(v for k, v in samples.get(name, {}).items() if all((lk, lv) in k for lk, lv in labels.items()))


async def test_services_expose_reconcile_queue_kv_watch_and_pod_metrics(nats_url, nc, tmp_path: Path):
    port = free_port()
    options = {
        "metrics_port": port,
        "node_name": "metrics-node",
        "runtime": "process",
        "state_dir": str(tmp_path / "kubelet"),
        "pod_cidr": "127.78.0.0/16",
        "relist": 0.2,
    }
    svc = Services(["api", "scheduler", "replication", "kubelet"], nats_url, options).start()
    store = Store(nc.jetstream())
    try:
        from kyb.client import ApiClient

        api = ApiClient(nc, timeout=5)
        await wait_for(lambda: store.get("Node", None, "metrics-node"), what="node registered")
        await wait_api(nc)  # the api may come up after the kubelet
        await api.apply(RS, "default")

        async def running() -> bool:
            pods = await store.list("pods", "default")
            return len(pods) == 2 and all(p.status.phase == "Running" for p in pods)

        await wait_for(running, timeout=30, what="two pods running")
        # A stale write is refused and counted as a conflict.
        rs = await store.get("ReplicaSet", "default", "sleepers")
        await store.update(rs)
        try:
            await store.update(rs)
        except errors.Conflict:
            pass

        async def counted() -> dict | None:
            m = await asyncio.to_thread(scrape, port)
            ok = total(m, "kyb_kubelet_pods", node="metrics-node", phase="Running") == 2
            return m if ok else None

        m = await wait_for(counted, timeout=20, what="kubelet pod counts")
        assert total(m, "kyb_reconcile_total", controller="replication", result="success") >= 1
        assert total(m, "kyb_reconcile_duration_seconds_count", controller="replication") >= 1
        assert ("queue", "replication") in {kv for k in m["kyb_workqueue_depth"] for kv in k}
        assert total(m, "kyb_workqueue_adds_total", queue="replication") >= 1
        assert total(m, "kyb_kv_operation_duration_seconds_count", bucket="kyb-pods", op="create") >= 2
        assert total(m, "kyb_kv_conflicts_total", bucket="kyb-replicasets") >= 1
        assert total(m, "kyb_informer_watch_lag_seconds_count", kind="Pod") >= 1
        assert total(m, "kyb_kubelet_containers", node="metrics-node", state="running") == 2
    finally:
        await svc.stop()
        from tests.test_kubelet_lifecycle import cleanup_runtime

        await cleanup_runtime("process", options)
    # the endpoint goes away with the services
    try:
        await asyncio.to_thread(scrape, port)
    except OSError:
        pass
    else:
        raise AssertionError("metrics endpoint still answers after the services stopped")
