"""The kubelet as a node: registration, lease, adoption of running containers after a
restart, and image pull failures, on a real nats-server (and the real Docker engine)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.images import BUSYBOX_TAG, busybox_image  # noqa: F401  (fixture)
from tests.test_kubelet_lifecycle import (
    NODE,
    Cluster,
    cluster_for,
    kubelet_options,
    sh,
    start_services,
    status_of,
    stop_services,
    wait_node,
)


async def test_node_registers_with_status_labels_and_a_lease(nats_url, tmp_path):
    async with cluster_for("process", nats_url, tmp_path, BUSYBOX_TAG) as c:
        node = await c.store.get("Node", None, NODE)
        assert node.metadata.labels["kubernetes.io/hostname"] == NODE
        assert node.metadata.labels["kubernetes.io/os"] == "linux"
        assert node.spec.podCIDR == "127.77.0.0/16"
        assert node.status.capacity["pods"] == "110" and int(node.status.allocatable["cpu"]) >= 1
        conditions = {cond.type: cond.status for cond in node.status.conditions}
        assert conditions == {"Ready": "True", "MemoryPressure": "False", "DiskPressure": "False", "PIDPressure": "False"}
        assert {(a.type, a.address) for a in node.status.addresses} >= {("InternalIP", "127.0.0.1")}
        assert node.status.nodeInfo.kubeletVersion and node.status.nodeInfo.containerRuntimeVersion.startswith("process://")
        lease = await c.store.get("Lease", "kube-node-lease", NODE)
        assert lease.spec.holderIdentity == NODE and lease.spec.renewTime
        ns = await c.store.get("Namespace", None, "kube-node-lease")
        assert ns.metadata.name == "kube-node-lease"


async def test_node_taints_and_labels_from_options(nats_url, tmp_path):
    options = {**kubelet_options("process", tmp_path), "taints": ["dedicated=gpu:NoSchedule"], "labels": {"zone": "a"}}
    stop, task = await start_services(["kubelet"], nats_url, options)
    try:
        import nats

        from kyb.store import Store

        nc = await nats.connect(nats_url)
        try:
            store = Store(nc.jetstream())
            await wait_node(store, task)
            node = await store.get("Node", None, NODE)
            assert [(t.key, t.value, t.effect) for t in node.spec.taints] == [("dedicated", "gpu", "NoSchedule")]
            assert node.metadata.labels["zone"] == "a"
        finally:
            await nc.close()
    finally:
        await stop_services(stop, task)


@pytest.fixture(params=[pytest.param("docker", id="docker"), pytest.param("process", id="process")])
def runtime_and_image(request) -> tuple[str, str]:
    if request.param == "docker":
        return "docker", request.getfixturevalue("busybox_image")
    return "process", BUSYBOX_TAG


async def test_restarted_kubelet_adopts_running_containers(nats_url, tmp_path, runtime_and_image):
    runtime, image = runtime_and_image
    async with cluster_for(runtime, nats_url, tmp_path, image) as c:
        await c.apply(c.pod_manifest("keep", [{"name": "main", **sh("while true; do sleep 1; done")}]))
        before = await c.wait_pod("keep", lambda p: p.status.phase == "Running")
        first_id = status_of(before, "main").containerID
        await _restart_kubelet(c)  # its containers keep running meanwhile
        # a second pod running proves the new kubelet went through its pods
        await c.apply(c.pod_manifest("probe", [{"name": "main", **sh("while true; do sleep 1; done")}]))
        await c.wait_pod("probe", lambda p: p.status.phase == "Running")
        after = await c.pod("keep")
        assert after is not None and after.status.phase == "Running"
        st = status_of(after, "main")
        assert st.containerID == first_id and st.restartCount == 0
        assert after.status.podIP == before.status.podIP


async def _restart_kubelet(c: Cluster) -> None:
    assert c.kubelet_stop is not None and c.kubelet_task is not None
    await stop_services(c.kubelet_stop, c.kubelet_task)
    c.kubelet_stop, c.kubelet_task = await start_services(["kubelet"], c.url, c.options)
    await wait_node(c.store, c.kubelet_task)


async def test_missing_image_reports_errimagepull_then_backoff(nats_url, tmp_path, busybox_image):  # noqa: F811
    async with cluster_for("docker", nats_url, tmp_path, busybox_image) as c:
        manifest: dict[str, Any] = c.pod_manifest(
            "noimage", [{"name": "main", "image": "127.0.0.1:9/kyb-missing:v1", "imagePullPolicy": "IfNotPresent",
                         **sh("true")}])
        await c.apply(manifest)
        reasons: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "ImagePullBackOff" not in reasons:
            pod = await c.pod("noimage")
            if pod is not None and pod.status.containerStatuses:
                w = status_of(pod, "main").state.waiting
                if w is not None and (not reasons or reasons[-1] != w.reason):
                    reasons.append(w.reason)
            await asyncio.sleep(0.05)
        assert "ErrImagePull" in reasons and "ImagePullBackOff" in reasons, reasons
        assert reasons.index("ErrImagePull") < reasons.index("ImagePullBackOff")
        pod = await c.pod("noimage")
        assert pod is not None and pod.status.phase == "Pending"
