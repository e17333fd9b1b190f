"""kubectl top through the apiserver's metrics.k8s.io/v1beta1, on a real `kyb up` whose kubelet
samples every second: the real kubectl, the real process runtime, no metrics faked."""

from __future__ import annotations

import json
import os

import pytest

from tests.cluster import wait_until
from tests.test_apiserver_kubectl import KUBECTL, _kubectl, apiserver_up

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

PODS = """\
apiVersion: v1
kind: Pod
metadata: {name: busy, labels: {app: busy}}
spec:
  containers:
  - {name: spin, image: busybox, command: ["sh", "-c", "while :; do :; done"]}
  - {name: idle, image: busybox, command: ["sleep", "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: calm, labels: {app: calm}}
spec:
  containers:
  - {name: idle, image: busybox, command: ["sleep", "3600"]}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with apiserver_up(tmp_path_factory.mktemp("top") / "state", "-o", "metrics_interval=1") as up:
        yield up


def _rows(out: str) -> dict[str, list[str]]:
    lines = out.splitlines()
    return {line.split()[0]: line.split()[1:] for line in lines[1:]}


def test_kubectl_top_pods_and_nodes(cluster):
    _kubectl(cluster, "apply", "-f", "-", input=PODS)
    try:
        def both_sampled() -> bool:
            done = _kubectl(cluster, "top", "pod", check=False)
            return done.returncode == 0 and {"busy", "calm"} <= set(_rows(done.stdout))

        wait_until(both_sampled, timeout=60, what="kubectl top pod to show both pods")
        out = _kubectl(cluster, "top", "pod").stdout
        assert out.split("\n")[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
        # the spinning container keeps a core busy; the sleeping pod barely registers
        wait_until(lambda: int(_rows(_kubectl(cluster, "top", "pod", "busy").stdout)["busy"][0].rstrip("m")) > 200,
                   timeout=30, what="the busy pod's CPU to show")
        assert int(_rows(_kubectl(cluster, "top", "pod", "calm").stdout)["calm"][0].rstrip("m")) < 100

        selected = _kubectl(cluster, "top", "pod", "-l", "app=calm").stdout
        assert set(_rows(selected)) == {"calm"}
        # a container is in a sample from its second reading on: wait for both
        def both_containers() -> list[str] | None:
            lines = _kubectl(cluster, "top", "pod", "busy", "--containers").stdout.splitlines()
            return lines if sorted(line.split()[1] for line in lines[1:]) == ["idle", "spin"] else None

        per_container = wait_until(both_containers, timeout=30, what="both containers of busy in kubectl top")
        assert per_container[0].split() == ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"]

        nodes = _kubectl(cluster, "top", "node").stdout
        assert nodes.splitlines()[0].split() == ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
        assert cluster.node in _rows(nodes)

        raw = json.loads(_kubectl(cluster, "get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/busy").stdout)
        assert raw["kind"] == "PodMetrics" and raw["window"].endswith("s")
        assert all(c["usage"]["cpu"].endswith("n") and c["usage"]["memory"].endswith("Ki") for c in raw["containers"])
        missing = _kubectl(cluster, "get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/ghost",
                           check=False)
        assert missing.returncode == 1 and 'podmetrics.metrics.k8s.io "ghost" not found' in missing.stderr
    finally:
        _kubectl(cluster, "delete", "pod", "busy", "calm", "--grace-period=0", check=False)


SAMPLES = [
    {"node": "b", "timestamp": "2026-12-02T10:00:00Z", "window": 15.0,
     "node_usage": {"cpu_millis": 250, "memory_bytes": 10 * 2**20},
     "pods": [{"namespace": "default", "name": "web", "containers": [{"name": "c", "cpu_millis": 3, "memory_bytes": 4096}]}]},
    {"node": "a", "timestamp": "2026-12-02T10:00:01Z", "window": 1.5,
     "node_usage": {"cpu_millis": 1, "memory_bytes": 2048},
     "pods": [{"namespace": "other", "name": "db", "containers": []}]},
]


def test_metrics_documents_are_metrics_servers():
    from services.apiserver import metricsapi

    nodes = metricsapi.nodes(SAMPLES)
    assert [n["metadata"]["name"] for n in nodes] == ["a", "b"]
    assert nodes[1]["usage"] == {"cpu": "250000000n", "memory": "10240Ki"} and nodes[1]["window"] == "15s"
    assert nodes[0]["window"] == "1.5s"
    assert [p["metadata"]["name"] for p in metricsapi.pods(SAMPLES, None)] == ["web", "db"]
    assert [p["metadata"]["name"] for p in metricsapi.pods(SAMPLES, "other")] == ["db"]
    chosen = metricsapi.pods(SAMPLES, None, {("default", "web"): {"app": "web"}})
    assert [(p["metadata"]["name"], p["metadata"]["labels"]) for p in chosen] == [("web", {"app": "web"})]
    assert metricsapi.nodes(SAMPLES, {}) == []
    assert metricsapi.metrics_list("PodMetrics", [])["kind"] == "PodMetricsList"
