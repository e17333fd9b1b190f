"""The node lifecycle service on a real nats-server: a node whose kubelet stops renewing its
Lease turns Unknown and gets the unreachable taint, its pods go as their tolerations say, and a
renewed Lease takes the taint away; pods bound to a missing node are garbage-collected."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
import nats
import pytest

from kyb import errors
from kyb.serve import run_services
from kyb.store import Store
from schemas.coordination import Lease, LeaseSpec
from schemas.core import Node, NodeCondition, NodeStatus
from schemas.helpers import format_micro_time, format_time
from schemas.meta import ObjectMeta
from schemas.pod import Container, Pod, PodCondition, PodSpec, PodStatus, Toleration
from services.nodelifecycle.reconcile import UNREACHABLE
from tests.cluster import wait_for

T = TypeVar("T")

OPTIONS = {
    "node_monitor_grace_period": 1.5,
    "pod_eviction_timeout": 1.0,
    "orphan_quarantine": 0.5,
    "configure_logging": False,
}


class FakeKubelet:
    """Posts Ready and renews the node's Lease every 0.2 s, like a kubelet, until stopped."""

    def __init__(self, store: Store, node: str) -> None:
        self.store = store
        self.node = node
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def _run(self) -> None:
        while True:
            now = datetime.now(UTC)
            lease = Lease(
                metadata=ObjectMeta(name=self.node, namespace="kube-node-lease"),
                spec=LeaseSpec(holderIdentity=self.node, leaseDurationSeconds=40, renewTime=format_micro_time(now)),
            )
            try:
                await self.store.mutate("Lease", "kube-node-lease", self.node, lambda cur, spec=lease.spec: msgspec.structs.replace(cur, spec=spec))
            except errors.NotFound:
                await self.store.create(lease)

            def ready(cur: Any, now: datetime = now) -> Any:
                old = next((c for c in cur.status.conditions if c.type == "Ready"), None)
                if old is not None and old.status == "True":
                    return None
                cond = NodeCondition(type="Ready", status="True", reason="KubeletReady", lastHeartbeatTime=format_time(now), lastTransitionTime=format_time(now))
                return msgspec.structs.replace(cur, status=msgspec.structs.replace(cur.status, conditions=[cond]))

            await self.store.mutate("Node", None, self.node, ready)
            await asyncio.sleep(0.2)


def pod(name: str, node: str, tolerations: list[Toleration] | None = None) -> Pod:
    return Pod(
        metadata=ObjectMeta(name=name, namespace="default"),
        spec=PodSpec(containers=[Container(name="c", image="busybox")], nodeName=node, tolerations=tolerations or []),
        status=PodStatus(phase="Running", conditions=[PodCondition(type="Ready", status="True")]),
    )


@pytest.fixture
async def cluster(nats_url):
    nc = await nats.connect(nats_url)
    store = Store(nc.jetstream())
    await store.ensure_buckets()
    stop = asyncio.Event()
    task = asyncio.create_task(run_services(["nodelifecycle"], nats_url, OPTIONS, stop))
    yield store
    stop.set()
    await asyncio.wait_for(task, 30)
    await nc.close()


async def get_or_none(store: Store, kind: str, ns: str | None, name: str) -> Any:
    try:
        return await store.get(kind, ns, name)
    except errors.NotFound:
        return None


async def test_silent_node_is_tainted_its_pods_evicted_and_a_renewed_lease_heals_it(cluster):
    store = cluster
    await store.create(Node(metadata=ObjectMeta(name="n1"), status=NodeStatus(conditions=[NodeCondition(type="Ready", status="True")])))
    kubelet = FakeKubelet(store, "n1")
    kubelet.start()
    unreachable_for_3s = Toleration(key=UNREACHABLE, operator="Exists", effect="NoExecute", tolerationSeconds=3)
    await store.create(pod("plain", "n1"))
    await store.create(pod("patient", "n1", [unreachable_for_3s]))
    await store.create(pod("forever", "n1", [Toleration(key=UNREACHABLE, operator="Exists", effect="NoExecute")]))

    # While the lease is renewed, nothing happens (well past the grace period).
    await asyncio.sleep(0)  # let the fake kubelet write once
    await wait_for(lambda: get_or_none(store, "Lease", "kube-node-lease", "n1"), 20.0, "first lease", ignoring=())
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        n = await store.get("Node", None, "n1")
        assert not n.spec.taints, "a node with a fresh lease was tainted"
        await asyncio.sleep(0.1)

    await kubelet.stop()

    async def tainted() -> Node | None:
        n = await store.get("Node", None, "n1")
        return n if any(t.key == UNREACHABLE and t.effect == "NoExecute" for t in n.spec.taints) else None

    node = await wait_for(tainted, 20.0, "unreachable taint", ignoring=())
    ready = next(c for c in node.status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason, ready.message) == ("Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.")
    assert {t.effect for t in node.spec.taints if t.key == UNREACHABLE} == {"NoExecute", "NoSchedule"}

    async def gone(name: str) -> bool:
        return await get_or_none(store, "Pod", "default", name) is None

    await wait_for(lambda: gone("plain"), 20.0, "pod without toleration evicted", ignoring=())
    assert not await gone("patient"), "a pod tolerating the taint for 3s went with the intolerant one"
    await wait_for(lambda: gone("patient"), 20.0, "pod with tolerationSeconds evicted", ignoring=())
    forever = await store.get("Pod", "default", "forever")
    assert forever.metadata.deletionTimestamp is None
    assert next(c for c in forever.status.conditions if c.type == "Ready").status == "False"

    kubelet = FakeKubelet(store, "n1")
    kubelet.start()

    async def healed() -> Node | None:
        n = await store.get("Node", None, "n1")
        return n if not n.spec.taints else None

    node = await wait_for(healed, 20.0, "taint removed after the lease was renewed", ignoring=())
    assert next(c for c in node.status.conditions if c.type == "Ready").status == "True"
    await kubelet.stop()
    assert await store.get("Pod", "default", "forever") is not None


async def test_pods_bound_to_a_missing_node_are_force_deleted(cluster):
    store = cluster
    await store.create(Node(metadata=ObjectMeta(name="real"), status=NodeStatus(conditions=[NodeCondition(type="Ready", status="True")])))
    kubelet = FakeKubelet(store, "real")
    kubelet.start()
    try:
        await store.create(pod("lost", "ghost"))
        await store.create(pod("kept", "real"))
        await wait_for(lambda: _absent(store, "lost"), 20.0, "pod on a missing node deleted", ignoring=())
        assert (await store.get("Pod", "default", "kept")).metadata.deletionTimestamp is None
    finally:
        await kubelet.stop()


async def _absent(store: Store, name: str) -> bool:
    return await get_or_none(store, "Pod", "default", name) is None
