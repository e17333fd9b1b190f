"""The scheduler service on a real nats-server: two replicas at once on the same pods and nodes."""

from __future__ import annotations

import asyncio
import time

import msgspec
import numpy as np
import pytest

from kyb.store import Store
from schemas.core import Node
from schemas.pod import Pod
from services.scheduler.service import Scheduler


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


async def wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


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
    msg = next(c.message for c in unschedulable[0].status.conditions if c.type == "PodScheduled")
    assert msg == "0/4 nodes are available: 1 node(s) were not ready, 3 Insufficient cpu."
    assert all(p.status.phase == "Pending" for p in unschedulable)


async def test_unschedulable_pod_gets_event_and_is_retried_when_a_node_appears(cluster, nc):
    store, _ = cluster
    await store.create(node("small", cpu="1"))
    events = await nc.jetstream().subscribe("kyb.events.default.Pod.big", ordered_consumer=True)
    await store.create(pod("big", cpu="2"))
    msg = await events.next_msg(timeout=10)
    event = msgspec.json.decode(msg.data)
    assert event["reason"] == "FailedScheduling"
    assert event["message"] == "0/1 nodes are available: 1 Insufficient cpu."

    async def pending_with_reason():
        p = await store.get("pods", "default", "big")
        return any(c.reason == "Unschedulable" for c in p.status.conditions) and not p.spec.nodeName

    await wait_for(pending_with_reason)
    await store.create(node("large", cpu="4"))

    async def bound():
        p = await store.get("pods", "default", "big")
        return p.spec.nodeName

    assert await wait_for(bound) == "large"
