"""The volume binder on a real nats-server: two binders racing never give one volume to two
claims; provisioning in both binding modes; a claim in use is not deleted; Delete reclaim."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import msgspec
import pytest

from kyb import errors
from kyb.store import Store
from schemas.core import (
    HostPathPV,
    Node,
    NodeCondition,
    NodeStatus,
    PersistentVolume,
    PersistentVolumeClaim,
    PersistentVolumeClaimSpec,
    PersistentVolumeSpec,
    VolumeResourceRequirements,
)
from schemas.meta import ObjectMeta
from schemas.pod import Container, PersistentVolumeClaimVolumeSource, Pod, PodSpec, PodStatus, Volume
from schemas.storage import StorageClass
from services.volumebinder.reconcile import LOCAL_PATH, PVC_PROTECTION, SELECTED_NODE, volume_node
from services.volumebinder.service import VolumeBinder
from tests.cluster import wait_for


@contextlib.asynccontextmanager
async def binders(nc, store: Store, volume_dir: Path, count: int = 1):
    stop = asyncio.Event()
    running = [VolumeBinder(nc, store, volume_dir=str(volume_dir), workers=4, resync=2) for _ in range(count)]
    for b in running:
        await b.start()
    tasks = [asyncio.create_task(b.controller.run(stop)) for b in running]
    try:
        yield running
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for b in running:
            await b.stop()


def claim(name: str, size: str = "1Gi", cls: str | None = "", **meta) -> PersistentVolumeClaim:
    return PersistentVolumeClaim(
        metadata=ObjectMeta(name=name, namespace="default", **meta),
        spec=PersistentVolumeClaimSpec(accessModes=["ReadWriteOnce"], storageClassName=cls,
                                       resources=VolumeResourceRequirements(requests={"storage": size})),
    )


def volume(name: str, size: str = "1Gi", path: str = "/tmp/none") -> PersistentVolume:
    return PersistentVolume(
        metadata=ObjectMeta(name=name),
        spec=PersistentVolumeSpec(capacity={"storage": size}, accessModes=["ReadWriteOnce"],
                                  hostPath=HostPathPV(path=path)),
    )


def ready_node(name: str) -> Node:
    return Node(metadata=ObjectMeta(name=name, labels={"kubernetes.io/hostname": name}),
                status=NodeStatus(conditions=[NodeCondition(type="Ready", status="True")]))


def pod_with_claim(name: str, claim_name: str, node_name: str = "") -> Pod:
    return Pod(
        metadata=ObjectMeta(name=name, namespace="default"),
        spec=PodSpec(containers=[Container(name="c", image="busybox")], nodeName=node_name,
                     volumes=[Volume(name="v", persistentVolumeClaim=PersistentVolumeClaimVolumeSource(claimName=claim_name))]),
        status=PodStatus(phase="Running" if node_name else "Pending"),
    )


async def test_two_binders_racing_never_give_one_volume_to_two_claims(nc, tmp_path):
    store = Store(nc.jetstream())
    await store.ensure_buckets()
    await store.create(volume("only", "5Gi"))
    async with binders(nc, store, tmp_path, count=2):
        await asyncio.gather(*(store.create(claim(f"c{i}")) for i in range(4)))

        async def settled():
            pv = await store.get("PersistentVolume", None, "only")
            claims = await store.list("PersistentVolumeClaim", "default")
            bound = [c for c in claims if c.status.phase == "Bound"]
            return (pv, bound) if pv.status.phase == "Bound" and bound else None

        pv, bound = await wait_for(settled, what="one claim bound")
        # Let any loser's late writes land, then look again.
        await asyncio.sleep(0.5)
        claims = await store.list("PersistentVolumeClaim", "default")
        bound = [c for c in claims if c.spec.volumeName]
        assert len(bound) == 1, [(c.metadata.name, c.spec.volumeName) for c in claims]
        pv = await store.get("PersistentVolume", None, "only")
        assert pv.spec.claimRef.uid == bound[0].metadata.uid
        assert bound[0].status.capacity == {"storage": "5Gi"}
        assert all(c.status.phase == "Pending" for c in claims if c is not bound[0])


async def test_immediate_class_provisions_a_local_path_volume(nc, tmp_path):
    store = Store(nc.jetstream())
    await store.ensure_buckets()
    await store.create(ready_node("n1"))
    await store.create(StorageClass(metadata=ObjectMeta(name="local", annotations={
        "storageclass.kubernetes.io/is-default-class": "true"}), provisioner=LOCAL_PATH))
    async with binders(nc, store, tmp_path):
        created = await store.create(claim("data", "2Gi", cls=None))

        async def bound():
            c = await store.get("PersistentVolumeClaim", "default", "data")
            return c if c.status.phase == "Bound" else None

        c = await wait_for(bound, what="claim bound to a provisioned volume")
        assert c.spec.storageClassName == "local"  # the default class
        assert PVC_PROTECTION in c.metadata.finalizers
        pv = await store.get("PersistentVolume", None, c.spec.volumeName)
        assert volume_node(pv) == "n1"
        path = Path(pv.spec.hostPath.path)
        assert path.is_dir() and path.parent == tmp_path / "n1"
        assert pv.spec.claimRef.uid == created.metadata.uid
        # Reclaim policy Delete: the claim goes, so do the volume and its directory.
        await store.delete("PersistentVolumeClaim", "default", "data")

        async def reclaimed():
            with contextlib.suppress(Exception):
                await store.get("PersistentVolume", None, pv.metadata.name)
                return False
            return not path.exists()

        await wait_for(reclaimed, what="volume and directory deleted")


async def test_wait_for_first_consumer_provisions_on_the_selected_node(nc, tmp_path):
    store = Store(nc.jetstream())
    await store.ensure_buckets()
    for n in ("n1", "n2"):
        await store.create(ready_node(n))
    await store.create(StorageClass(metadata=ObjectMeta(name="late"), provisioner=LOCAL_PATH,
                                    volumeBindingMode="WaitForFirstConsumer"))
    async with binders(nc, store, tmp_path):
        await store.create(claim("data", cls="late"))
        await wait_for(lambda: _has_finalizer(store, "data"), what="claim seen")
        assert await store.list("PersistentVolume") == []  # no consumer yet: nothing provisioned
        await store.mutate("PersistentVolumeClaim", "default", "data", lambda c: msgspec.structs.replace(
            c, metadata=msgspec.structs.replace(c.metadata, annotations={SELECTED_NODE: "n2"})))

        async def bound():
            c = await store.get("PersistentVolumeClaim", "default", "data")
            return c if c.status.phase == "Bound" else None

        c = await wait_for(bound, what="claim bound after a node was selected")
        pv = await store.get("PersistentVolume", None, c.spec.volumeName)
        assert volume_node(pv) == "n2"


async def _has_finalizer(store: Store, name: str) -> bool:
    c = await store.get("PersistentVolumeClaim", "default", name)
    return PVC_PROTECTION in c.metadata.finalizers


async def test_a_claim_in_use_is_not_deleted_until_its_pod_is_gone(nc, tmp_path):
    store = Store(nc.jetstream())
    await store.ensure_buckets()
    await store.create(volume("v1", path=str(tmp_path / "v1")))
    async with binders(nc, store, tmp_path):
        await store.create(claim("data"))
        await store.create(pod_with_claim("user", "data", node_name="n1"))

        async def bound():
            c = await store.get("PersistentVolumeClaim", "default", "data")
            return c.status.phase == "Bound" and PVC_PROTECTION in c.metadata.finalizers

        await wait_for(bound, what="claim bound")
        marked = await store.delete("PersistentVolumeClaim", "default", "data")
        assert marked.metadata.deletionTimestamp is not None
        with pytest.raises(AssertionError):  # held while the pod runs
            await wait_for(lambda: _gone(store, "data"), timeout=1.0)
        await store.delete("Pod", "default", "user", grace_period_seconds=0)
        await wait_for(lambda: _gone(store, "data"), what="claim deleted once unused")

        async def released():
            pv = await store.get("PersistentVolume", None, "v1")
            return pv.status.phase == "Released"

        await wait_for(released, what="retained volume released")


async def _gone(store: Store, name: str) -> bool:
    try:
        await store.get("PersistentVolumeClaim", "default", name)
    except errors.NotFound:
        return True
    return False
