"""Scheduler and volume binder together on a real nats-server (hollow nodes): a pod whose claim
is unbound stays Pending with kube-scheduler's reason; a claim bound to a node-pinned volume
pins its pod; WaitForFirstConsumer provisions on the node the scheduler picked."""

from __future__ import annotations

import asyncio
import contextlib

from kyb.serve import run_services
from kyb.store import Store
from schemas.core import Node, NodeCondition, NodeStatus
from schemas.meta import ObjectMeta
from schemas.pod import Container, PersistentVolumeClaimVolumeSource, Pod, PodSpec, Volume
from schemas.storage import StorageClass
from services.scheduler.podinfo import UNBOUND_IMMEDIATE
from services.volumebinder.reconcile import LOCAL_PATH, SELECTED_NODE, volume_node
from tests.cluster import FAST_LEASE, wait_for
from tests.test_volumebinder_service import claim

OPTIONS = FAST_LEASE


def node(name: str) -> Node:
    res = {"cpu": "4", "memory": "8Gi", "pods": "110"}
    return Node(metadata=ObjectMeta(name=name, labels={"kubernetes.io/hostname": name}),
                status=NodeStatus(capacity=res, allocatable=res,
                                  conditions=[NodeCondition(type="Ready", status="True")]))


def pod(name: str, claim_name: str) -> Pod:
    return Pod(metadata=ObjectMeta(name=name, namespace="default"),
               spec=PodSpec(containers=[Container(name="c", image="busybox")],
                            volumes=[Volume(name="v", persistentVolumeClaim=PersistentVolumeClaimVolumeSource(
                                claimName=claim_name))]))


@contextlib.asynccontextmanager
async def services(nc, nats_url, tmp_path):
    store = Store(nc.jetstream())
    await store.ensure_buckets()
    for n in ("n1", "n2", "n3"):
        await store.create(node(n))
    stop = asyncio.Event()
    task = asyncio.create_task(run_services(["scheduler", "volumebinder"], nats_url,
                                            {**OPTIONS, "volume_dir": str(tmp_path)}, stop))
    try:
        yield store
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def test_unbound_immediate_claim_keeps_the_pod_pending_then_pins_it(nc, nats_url, tmp_path):
    async with services(nc, nats_url, tmp_path) as store:
        await store.create(claim("data", cls="manual"))  # no volume, no such class
        await store.create(pod("user", "data"))

        async def pending_with_reason():
            p = await store.get("Pod", "default", "user")
            c = next((c for c in p.status.conditions if c.type == "PodScheduled"), None)
            return c if c is not None and c.status == "False" else None

        cond = await wait_for(pending_with_reason, what="pod unschedulable")
        assert UNBOUND_IMMEDIATE in cond.message
        assert not (await store.get("Pod", "default", "user")).spec.nodeName
        # The class appears (Immediate, local-path): the binder provisions on some node and
        # the scheduler must put the pod on that node.
        await store.create(StorageClass(metadata=ObjectMeta(name="manual"), provisioner=LOCAL_PATH))

        async def scheduled():
            p = await store.get("Pod", "default", "user")
            return p if p.spec.nodeName else None

        p = await wait_for(scheduled, what="pod scheduled after the claim bound")
        c = await store.get("PersistentVolumeClaim", "default", "data")
        pv = await store.get("PersistentVolume", None, c.spec.volumeName)
        assert p.spec.nodeName == volume_node(pv)


async def test_wait_for_first_consumer_provisions_where_the_pod_was_scheduled(nc, nats_url, tmp_path):
    async with services(nc, nats_url, tmp_path) as store:
        await store.create(StorageClass(metadata=ObjectMeta(name="late"), provisioner=LOCAL_PATH,
                                        volumeBindingMode="WaitForFirstConsumer"))
        await store.create(claim("data", cls="late"))
        await store.create(pod("user", "data"))

        async def bound():
            c = await store.get("PersistentVolumeClaim", "default", "data")
            return c if c.status.phase == "Bound" else None

        c = await wait_for(bound, what="claim bound after its pod was scheduled")
        p = await store.get("Pod", "default", "user")
        pv = await store.get("PersistentVolume", None, c.spec.volumeName)
        assert p.spec.nodeName and volume_node(pv) == p.spec.nodeName == c.metadata.annotations[SELECTED_NODE]
        assert (tmp_path / p.spec.nodeName / pv.metadata.name).is_dir()
