"""``kyb up --nodes 3``: three kubelets on one machine (process runtime), each its own node with
its own pod range; a Deployment spreads over them and a DaemonSet puts one pod on each. Also
``--metrics-port``: every service of the process on one Prometheus endpoint, kubelets included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from kyb.cli.multinode import kubelet_instances, pod_cidr
from kyb.natsd import free_port
from tests.cluster import wait_until

pytest.importorskip("services.kubelet.service", reason="the kubelet service is not there yet")

CONTAINER = {"name": "main", "image": "busybox", "command": ["sleep", "120"]}
MANIFESTS = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: spread}}
spec:
  replicas: 6
  selector: {{matchLabels: {{app: spread}}}}
  template:
    metadata: {{labels: {{app: spread}}}}
    spec: {{containers: [{json.dumps(CONTAINER)}]}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: everywhere}}
spec:
  selector: {{matchLabels: {{app: everywhere}}}}
  template:
    metadata: {{labels: {{app: everywhere}}}}
    spec: {{containers: [{json.dumps(CONTAINER)}]}}
"""


def kyb(url: str, data: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KYB_NATS_")}
    env["KYB_DATA_DIR"] = str(data)
    return subprocess.run([sys.executable, "-m", "kyb.cli.main", "--nats", url, *args], input=input,
                          capture_output=True, text=True, timeout=60, env=env)


def items(url: str, data: Path, kind: str) -> list[dict[str, Any]]:
    r = kyb(url, data, "get", kind, "-A", "-o", "json")
    return json.loads(r.stdout)["items"] if r.returncode == 0 else []


def bound(pods: list[dict[str, Any]], app: str) -> list[dict[str, Any]]:
    return [p for p in pods if p["metadata"].get("labels", {}).get("app") == app
            and p["spec"].get("nodeName") and not p["metadata"].get("deletionTimestamp")]


def running(pods: list[dict[str, Any]], app: str) -> list[dict[str, Any]]:
    return [p for p in pods if p["metadata"].get("labels", {}).get("app") == app
            and p.get("status", {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_up_with_three_nodes_spreads_a_deployment_and_runs_a_daemon_on_each(tmp_path: Path):
    port, metrics_port = free_port(), free_port()
    url = f"nats://127.0.0.1:{port}"
    data = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kyb.cli.main", "up", "--data-dir", str(data), "--nats-port", str(port),
         "--runtime", "process", "--nodes", "3", "--metrics-port", str(metrics_port),
         "--apiserver-port", str(free_port()), "--network", "loopback"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: [lines.append(line) for line in proc.stdout], daemon=True).start()
    try:
        def nodes_ready() -> list[str]:
            nodes = items(url, data, "nodes")
            ready = [n["metadata"]["name"] for n in nodes
                     if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))]
            return sorted(ready) if len(ready) == 3 else []

        assert wait_until(nodes_ready, 60, "three Ready nodes") == ["node-1", "node-2", "node-3"]
        nodes = {n["metadata"]["name"]: n for n in items(url, data, "nodes")}
        assert {name: n["spec"]["podCIDR"] for name, n in nodes.items()} == {
            "node-1": "127.101.0.0/16", "node-2": "127.102.0.0/16", "node-3": "127.103.0.0/16"}

        applied = kyb(url, data, "apply", "-f", "-", input=MANIFESTS)
        assert applied.returncode == 0, applied.stderr

        def placed() -> list[dict[str, Any]]:
            pods = items(url, data, "pods")
            ok = len(bound(pods, "spread")) == 6 and len(bound(pods, "everywhere")) == 3
            return pods if ok else []

        pods = wait_until(placed, 60, "6 deployment pods and 3 daemon pods bound")
        spread = Counter(p["spec"]["nodeName"] for p in bound(pods, "spread"))
        assert spread == {"node-1": 2, "node-2": 2, "node-3": 2}
        daemons = Counter(p["spec"]["nodeName"] for p in bound(pods, "everywhere"))
        assert daemons == {"node-1": 1, "node-2": 1, "node-3": 1}

        def counted() -> dict:
            m = scrape(metrics_port)
            per_node = {n: sum(v for (name, labels), v in m.items()
                               if name == "kyb_kubelet_pods" and ("node", n) in labels) for n in nodes}
            return m if per_node == {"node-1": 3, "node-2": 3, "node-3": 3} else {}

        m = wait_until(counted, 20, "3 pods per node in kyb_kubelet_pods")
        assert any(k[0] == "kyb_reconcile_total" and ("controller", "daemonset") in k[1] for k in m)

        def all_running() -> list[dict[str, Any]]:
            pods = items(url, data, "pods")
            return pods if len(running(pods, "spread")) == 6 and len(running(pods, "everywhere")) == 3 else []

        pods = wait_until(all_running, 30, "all 9 pods running")
        for p in running(pods, "spread") + running(pods, "everywhere"):
            octet = 100 + int(p["spec"]["nodeName"].split("-")[1])
            assert p["status"]["podIP"].startswith(f"127.{octet}."), (p["spec"]["nodeName"], p["status"]["podIP"])
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _remove_pod_processes(data)


def _remove_pod_processes(data: Path) -> None:
    """The process runtime leaves pods running across kubelet restarts (they are adopted): end them."""
    import asyncio

    from services.kubelet.runtime.process import ProcessRuntime

    async def clean() -> None:
        for node_dir in (data / "nodes").glob("node-*"):
            rt = ProcessRuntime(node_dir / "process")
            try:
                for uid in set(await rt.list_sandboxes()) | {i.pod_uid for i in await rt.list()}:
                    await rt.remove_sandbox(uid)
            finally:
                await rt.close()

    asyncio.run(clean())


@given(st.integers(1, 155))
def test_node_ranges_are_distinct_loopback_16s_outside_the_hosts_own(count):
    import ipaddress

    nets = [ipaddress.IPv4Network(o["pod_cidr"]) for o in kubelet_instances(count, Path("/d"))]
    assert len(set(nets)) == count
    assert all(n.prefixlen == 16 and n.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")) for n in nets)
    assert not any(n.overlaps(ipaddress.IPv4Network("127.0.0.0/16")) for n in nets)
    assert len({o["state_dir"] for o in kubelet_instances(count, Path("/d"))}) == count


def test_cni_nodes_take_nodeipams_ranges_and_each_has_its_own_cni_directory_and_store():
    instances = kubelet_instances(3, Path("/d"), "cni")
    assert not [o for o in instances if "pod_cidr" in o]  # a 127.x range would keep nodeipam's away
    assert len({o["cni_conf_dir"] for o in instances}) == len({o["cni_ipam_dir"] for o in instances}) == 3
    assert instances[1]["cni_conf_dir"] == "/d/nodes/node-2/cni/net.d"


def test_node_range_refuses_indexes_past_the_loopback_space():
    with pytest.raises(ValueError):
        pod_cidr(156)
