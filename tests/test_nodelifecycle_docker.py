"""End to end on the real Docker engine: api, scheduler, replication, nodelifecycle and a docker
kubelet. When the kubelet stops, its node turns Unknown and unreachable, the ReplicaSet's pod is
force-deleted and its replacement waits (the node is tainted NoSchedule); when the kubelet comes
back the taint goes, the replacement runs, and the evicted pod's container is cleaned up."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import nats
import pytest

from kyb import errors
from kyb.serve import run_services
from kyb.store import Store
from services.nodelifecycle.reconcile import UNREACHABLE
from tests.cluster import QUIET, containers_of, docker_kubelet_options, node_ready, wait_for
from tests.images import busybox_image  # noqa: F401  (fixture)

NODE = "lifecycle-dock"


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("services.replication.service") is None, reason="no replication service"
)
async def test_lost_kubelet_gets_its_pods_replaced_and_comes_back_clean(nats_url, tmp_path, docker_engine, busybox_image):  # noqa: F811
    control = {**QUIET, "node_monitor_grace_period": 2, "pod_eviction_timeout": 1}
    kubelet_opts = docker_kubelet_options(NODE, tmp_path, "127.78.0.0/16", lease_interval=0.3, status_interval=5)
    nc = await nats.connect(nats_url)
    store = Store(nc.jetstream())
    stop = asyncio.Event()
    control_task = asyncio.create_task(
        run_services(["api", "scheduler", "replication", "nodelifecycle"], nats_url, control, stop)
    )
    kl_stop = asyncio.Event()
    kubelet = asyncio.create_task(run_services(["kubelet"], nats_url, kubelet_opts, kl_stop))
    uids: set[str] = set()
    try:

        await wait_for(lambda: node_ready(store, NODE, untainted=True), 40, "kubelet registered a Ready node", ignoring=())
        rs = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "sleeper", "namespace": "default"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "sleeper"}},
                "template": {
                    "metadata": {"labels": {"app": "sleeper"}},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [
                            {"name": "main", "image": busybox_image, "imagePullPolicy": "Never", "command": ["sleep", "3600"]}
                        ],
                    },
                },
            },
        }

        async def applied() -> bool:
            with contextlib.suppress(Exception):
                msg = await nc.request("kyb.api.apply", json.dumps(rs).encode(), timeout=5)
                return msg.headers.get("Kyb-Status") in ("200", "201")
            return False

        await wait_for(applied, 40, "ReplicaSet applied", ignoring=())

        async def running_pods() -> list[Any] | None:
            pods = [p for p in await store.list("Pod", "default") if p.metadata.labels.get("app") == "sleeper"]
            live = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletionTimestamp]
            return live or None

        first = (await wait_for(running_pods, 40, "first pod running", ignoring=()))[0]
        uids.add(first.metadata.uid)
        assert containers_of(docker_engine, first.metadata.uid), "the pod runs in a container"

        # The kubelet goes away (its containers stay, as when a kubelet process dies).
        kl_stop.set()
        await asyncio.wait_for(kubelet, 30)

        async def unreachable() -> Any:
            n = await store.get("Node", None, NODE)
            return n if any(t.key == UNREACHABLE and t.effect == "NoExecute" for t in n.spec.taints) else None

        node = await wait_for(unreachable, 40, "node tainted unreachable", ignoring=())
        assert next(c for c in node.status.conditions if c.type == "Ready").status == "Unknown"

        async def replaced() -> list[Any] | None:
            pods = [p for p in await store.list("Pod", "default") if p.metadata.labels.get("app") == "sleeper"]
            if any(p.metadata.uid == first.metadata.uid for p in pods):
                return None
            return pods or None

        replacements = await wait_for(replaced, 40, "evicted pod force-deleted and replaced", ignoring=())
        assert len(replacements) == 1
        replacement = replacements[0]
        uids.add(replacement.metadata.uid)
        assert not replacement.spec.nodeName, "a replacement was bound to an unreachable node"

        # The kubelet comes back: taint gone, the replacement runs, the evicted pod's container goes.
        kl_stop = asyncio.Event()
        kubelet = asyncio.create_task(run_services(["kubelet"], nats_url, kubelet_opts, kl_stop))
        await wait_for(lambda: node_ready(store, NODE, untainted=True), 40, "node Ready and untainted again", ignoring=())

        async def replacement_running() -> bool:
            with contextlib.suppress(errors.NotFound):
                p = await store.get("Pod", "default", replacement.metadata.name)
                return p.status.phase == "Running" and p.spec.nodeName == NODE
            return False

        await wait_for(replacement_running, 40, "replacement running on the node", ignoring=())

        async def old_container_gone() -> bool:
            return not await asyncio.to_thread(containers_of, docker_engine, first.metadata.uid)

        await wait_for(old_container_gone, 40, "the evicted pod's container removed by the returning kubelet", ignoring=())
    finally:
        stop.set()
        kl_stop.set()
        await asyncio.gather(control_task, kubelet, return_exceptions=True)
        await nc.close()
        for uid in uids:
            for c in containers_of(docker_engine, uid):
                with contextlib.suppress(Exception):
                    c.remove(force=True)
