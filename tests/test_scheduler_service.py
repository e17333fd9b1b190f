"""The scheduler service on a real nats-server: two replicas at once on the same pods and nodes."""

from __future__ import annotations

import asyncio

import msgspec
import numpy as np
import pytest

from kyb.store import Store
from schemas.core import Node
from schemas.pod import Pod
from services.scheduler.service import Scheduler
from tests.cluster import wait_for


def node(name: str, cpu: str = "1", ready: bool = True) -> Node:
    return msgspec.convert(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {
                "capacity": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
                "allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            },
        },
        Node,
    )


def pod(name: str, cpu: str = "100m") -> Pod:
    return msgspec.convert(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu}}}]},
        },
        Pod,
    )


@pytest.fixture
async def cluster(nats_url):
    import nats

    clients = [await nats.connect(nats_url) for _ in range(3)]
    store = Store(clients[0].jetstream())
    from schemas.registry import resolve

    await store.ensure_buckets([resolve("pods"), resolve("nodes")])
    stop = asyncio.Event()
    replicas = [
        Scheduler(c, Store(c.jetstream()), identity=f"sched-{i}", batch_size=8, rng=np.random.default_rng(i))
        for i, c in enumerate(clients[1:])
    ]
    for r in replicas:
        await r.start()
    tasks = [asyncio.create_task(r.run(stop)) for r in replicas]
    yield store, replicas
    stop.set()
    await asyncio.gather(*tasks)
    for r in replicas:
        await r.stop()
    for c in clients:
        await c.close()


async def test_two_replicas_never_double_bind_nor_overcommit(cluster):
    store, replicas = cluster
    for i in range(3):
        await store.create(node(f"n{i}", cpu="1"))
    await store.create(node("down", cpu="64", ready=False))
    await asyncio.gather(*(store.create(pod(f"p{i}", cpu="100m")) for i in range(40)))

    async def settled():
        pods = await store.list("pods")
        bound = [p for p in pods if p.spec.nodeName]
        unschedulable = [
            p for p in pods
            if any(c.type == "PodScheduled" and c.status == "False" for c in p.status.conditions)
        ]
        return (bound, unschedulable) if len(bound) == 30 and len(unschedulable) == 10 else None

    bound, unschedulable = await wait_for(settled)
    per_node: dict[str, int] = {}
    for p in bound:
        per_node[p.spec.nodeName] = per_node.get(p.spec.nodeName, 0) + 1
        assert any(c.type == "PodScheduled" and c.status == "True" for c in p.status.conditions)
    assert per_node == {"n0": 10, "n1": 10, "n2": 10}  # 10 x 100m fill 1 cpu, never more
    assert sum(r.bound for r in replicas) == 30, "a pod was bound twice"
    assert all(r.reserving() for r in replicas), "each replica sees the other one"
    assert sum(r.reservations_published for r in replicas) > 0
    msg = next(c.message for c in unschedulable[0].status.conditions if c.type == "PodScheduled")
    assert msg == ("0/4 nodes are available: 1 node(s) were not ready, 3 Insufficient cpu. preemption: 0/4 nodes are "
                   "available: 1 Preemption is not helpful for scheduling, 3 No preemption victims found for incoming pod..")
    assert all(p.status.phase == "Pending" for p in unschedulable)


async def test_unschedulable_pod_gets_event_and_is_retried_when_a_node_appears(cluster, nc):
    store, _ = cluster
    await store.create(node("small", cpu="1"))
    events = await nc.jetstream().subscribe("kyb.events.default.Pod.big", ordered_consumer=True)
    try:
        await store.create(pod("big", cpu="2"))
        msg = await events.next_msg(timeout=10)
    finally:
        await events.unsubscribe()
    event = msgspec.json.decode(msg.data)
    assert event["reason"] == "FailedScheduling"
    assert event["message"] == ("0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: "
                                "1 No preemption victims found for incoming pod..")

    async def pending_with_reason():
        p = await store.get("pods", "default", "big")
        return any(c.reason == "Unschedulable" for c in p.status.conditions) and not p.spec.nodeName

    await wait_for(pending_with_reason)
    await store.create(node("large", cpu="4"))

    async def bound():
        p = await store.get("pods", "default", "big")
        return p.spec.nodeName

    assert await wait_for(bound) == "large"


async def test_a_lone_scheduler_publishes_no_reservations_until_a_second_one_starts(nats_url):
    import nats

    from schemas.registry import resolve

    clients = [await nats.connect(nats_url) for _ in range(3)]
    store = Store(clients[0].jetstream())
    await store.ensure_buckets([resolve("pods"), resolve("nodes")])
    js = clients[0].jetstream()
    stop = asyncio.Event()
    first = Scheduler(clients[1], Store(clients[1].jetstream()), identity="alone", rng=np.random.default_rng(0))
    await first.start()
    tasks = [asyncio.create_task(first.run(stop))]
    second = None
    try:
        for i in range(2):
            await store.create(node(f"n{i}", cpu="1"))
        await asyncio.gather(*(store.create(pod(f"a{i}", cpu="100m")) for i in range(10)))

        async def bound(prefix: str, count: int):
            pods = [p for p in await store.list("pods") if p.metadata.name.startswith(prefix)]
            return len([p for p in pods if p.spec.nodeName]) == count

        await wait_for(lambda: bound("a", 10))
        assert not first.reserving()
        assert first.reservations_published == 0
        info = await js.stream_info("KYB_SCHEDULING")
        assert info.state.messages == 0, "a lone scheduler published node reservations"

        # A second replica announces itself: from then on both reserve, and no node is overcommitted.
        second = Scheduler(clients[2], Store(clients[2].jetstream()), identity="second", rng=np.random.default_rng(1))
        await second.start()
        assert first.reserving() and second.reserving()
        # the first one said so in its presence Lease before the second one bound anything
        leases = await js.key_value("kyb-leases")
        record = msgspec.json.decode((await leases.get("kube-system.kyb-scheduler-alone")).value)
        assert record["kind"] == "Lease" and record["spec"]["holderIdentity"] == "alone"
        assert record["metadata"]["annotations"]["scheduler.kyb.io/reserving-for"] == "second"
        stop_second = asyncio.Event()
        second_run = asyncio.create_task(second.run(stop_second))
        await asyncio.gather(*(store.create(pod(f"b{i}", cpu="100m")) for i in range(14)))
        await wait_for(lambda: bound("b", 10))
        pods = await store.list("pods")
        per_node: dict[str, int] = {}
        for p in pods:
            if p.spec.nodeName:
                per_node[p.spec.nodeName] = per_node.get(p.spec.nodeName, 0) + 1
        assert per_node == {"n0": 10, "n1": 10}
        info = await js.stream_info("KYB_SCHEDULING")
        assert info.state.messages > 0

        # The second one stops gracefully (its presence Lease goes): the first one stops reserving.
        stop_second.set()
        await second_run
        await second.stop()
        second = None
        await wait_for(_async(lambda: not first.reserving()))
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await first.stop()
        if second is not None:
            await second.stop()
        for c in clients:
            await c.close()


def _async(fn):
    async def call():
        return fn()

    return call
