"""The DaemonSet controller on a real nats-server with the api and scheduler services, hollow
nodes and a stand-in kubelet; and once on the real Docker engine with the real kubelet."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from msgspec.structs import replace

from kyb.client import ApiClient
from kyb.store import Store
from services.daemonset.reconcile import HASH_LABEL
from tests.cluster import (
    QUIET,
    HollowKubelet,
    Services,
    docker_kubelet_options,
    hollow_node,
    remove_containers,
    wait_api,
    wait_for,
)
from tests.images import busybox_image  # noqa: F401


def ds_manifest(name: str, image: str = "agent:1", **podspec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}], **podspec},
            },
        },
    }


async def placement(store: Store, app: str) -> dict[str, list[str]]:
    """node -> names of live pods of ``app`` bound there."""
    out: dict[str, list[str]] = {}
    for p in await store.list("pods", "default"):
        if p.metadata.labels.get("app") == app and p.metadata.deletionTimestamp is None and p.spec.nodeName:
            out.setdefault(p.spec.nodeName, []).append(p.metadata.name)
    return out


@pytest.fixture
async def env(nats_url, nc):
    base = Services(["api", "scheduler"], nats_url, QUIET).start()
    store = Store(nc.jetstream())
    await wait_api(nc)
    ds = Services(["daemonset"], nats_url, QUIET).start()
    kubelet = HollowKubelet(store, nc).start()
    try:
        yield store, ApiClient(nc), ds
    finally:
        await kubelet.stop()
        await ds.stop()
        await base.stop()


async def test_one_pod_per_eligible_node_following_nodes_and_taints(env):
    store, api, ds = env
    await store.create(hollow_node("a", {"role": "edge"}))
    await store.create(hollow_node("b", {"role": "edge"}, taints=[{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]))
    await store.create(hollow_node("c", {"role": "core"}))
    await store.create(hollow_node("d", {"role": "edge"}, taints=[{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]))
    await api.apply(ds_manifest("agent", nodeSelector={"role": "edge"}))

    async def placed(expected: set[str]):
        where = await placement(store, "agent")
        return where if set(where) == expected and all(len(v) == 1 for v in where.values()) else None

    await wait_for(lambda: placed({"a", "d"}), 20, "pods on a and d only")
    await store.create(hollow_node("e", {"role": "edge"}))
    await wait_for(lambda: placed({"a", "d", "e"}), 20, "new node gets its pod")
    node_a = await store.get("Node", None, "a")
    await store.update(replace(node_a, metadata=replace(node_a.metadata, labels={"role": "core"})))
    await wait_for(lambda: placed({"d", "e"}), 20, "pod leaves the node that stopped matching")
    await store.delete("Node", None, "e")
    await wait_for(lambda: placed({"d"}), 20, "pod of a removed node goes")

    async def status():
        obj = await store.get("DaemonSet", "default", "agent")
        s = obj.status
        ok = (s.desiredNumberScheduled, s.currentNumberScheduled, s.numberReady, s.numberMisscheduled) == (1, 1, 1, 0)
        return obj if ok and s.observedGeneration == obj.metadata.generation else None

    await wait_for(status, 20, "status counts")


async def test_rolling_update_replaces_pods_one_node_at_a_time_and_restart_adds_nothing(env):
    store, api, ds = env
    for n in ("a", "b", "c"):
        await store.create(hollow_node(n))
    await api.apply(ds_manifest("roll"))

    async def all_on(hash_: str | None = None):
        pods = [p for p in await store.list("pods", "default") if p.metadata.labels.get("app") == "roll"]
        live = [p for p in pods if p.metadata.deletionTimestamp is None]
        nodes = sorted(p.spec.nodeName for p in live)
        ready = all(p.status.phase == "Running" for p in live)
        same = hash_ is None or all(p.metadata.labels[HASH_LABEL] == hash_ for p in live)
        return live if nodes == ["a", "b", "c"] and ready and same else None

    first = await wait_for(all_on, 20, "three pods running")
    old_hash = first[0].metadata.labels[HASH_LABEL]
    await ds.stop()
    ds.start()
    await wait_for(all_on, 20, "still three pods")
    worst = 0

    async def rolled():
        nonlocal worst
        where = await placement(store, "roll")
        pods = [p for p in await store.list("pods", "default") if p.metadata.labels.get("app") == "roll"]
        available = {p.spec.nodeName for p in pods if p.metadata.deletionTimestamp is None and p.status.phase == "Running"}
        worst = max(worst, 3 - len(available & {"a", "b", "c"}))
        assert all(len(v) <= 1 for v in where.values()), f"two pods on one node: {where}"
        live = await all_on()
        return live if live and all(p.metadata.labels[HASH_LABEL] != old_hash for p in live) else None

    await api.apply(ds_manifest("roll", image="agent:2"))
    live = await wait_for(rolled, 30, "rolled to the new template")
    assert {p.spec.containers[0].image for p in live} == {"agent:2"}
    assert worst <= 1, f"{worst} nodes were without an available pod (maxUnavailable 1)"
    obj = await store.get("DaemonSet", "default", "roll")
    assert obj.status.updatedNumberScheduled == 3 or await wait_for(
        lambda: _updated(store, "roll", 3), 20, "updatedNumberScheduled"
    )


async def _updated(store: Store, name: str, n: int) -> bool:
    obj = await store.get("DaemonSet", "default", name)
    return obj.status.updatedNumberScheduled == n and obj.status.numberAvailable == n


@pytest.mark.docker
async def test_daemonset_pod_runs_on_the_kubelet_node_on_docker(nats_url, nc, tmp_path, busybox_image):  # noqa: F811
    node = "dsnode"
    kubelet_opts = docker_kubelet_options(node, tmp_path, "127.79.0.0/16")
    base = Services(["api", "scheduler", "daemonset"], nats_url, QUIET).start()
    kubelet = Services(["kubelet"], nats_url, kubelet_opts).start()
    store = Store(nc.jetstream())
    try:
        await wait_api(nc)
        manifest = ds_manifest("logger")
        manifest["spec"]["template"]["spec"]["containers"] = [
            {"name": "c", "image": busybox_image, "imagePullPolicy": "Never", "command": ["sh", "-c", "sleep 3600"]}
        ]
        manifest["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 1
        await ApiClient(nc).apply(manifest)

        async def running():
            pods = [p for p in await store.list("pods", "default") if p.metadata.labels.get("app") == "logger"]
            return pods if len(pods) == 1 and pods[0].status.phase == "Running" else None

        (pod,) = await wait_for(running, 90, "daemon pod running")
        assert pod.spec.nodeName == node
        obj = await store.get("DaemonSet", "default", "logger")
        assert obj.status.desiredNumberScheduled == 1
    finally:
        with contextlib.suppress(Exception):
            await ApiClient(nc).delete("DaemonSet", "default", "logger")
        await kubelet.stop()
        await base.stop()
        await remove_containers(node)
