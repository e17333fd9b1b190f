"""The garbage collector on a real nats-server with the api, replication and hollow pods:
`delete --cascade=background|foreground|orphan` and dangling dependents."""

from __future__ import annotations

import pytest

from kyb import errors
from tests.cluster import wait_for
from tests.test_replication_service import hollow_cluster, replicaset


@pytest.fixture
async def cluster(nats_url):
    async with hollow_cluster(nats_url, "api", "replication", "gc") as c:
        yield c


async def three_ready(cluster, name: str) -> None:
    async def ready():
        return (await cluster.rs(name)).status.readyReplicas == 3

    await wait_for(ready, what=f"{name} ready")


async def gone(cluster, kind: str, name: str) -> bool:
    try:
        await cluster.store.get(kind, "default", name)
    except errors.NotFound:
        return True
    return False


async def test_background_cascade_deletes_pods_after_the_owner(cluster):
    await cluster.api.apply(replicaset("bg", 3))
    await three_ready(cluster, "bg")
    deleted = await cluster.api.delete("ReplicaSet", "default", "bg", "Background")
    assert "deletionTimestamp" not in deleted["metadata"]
    assert await gone(cluster, "ReplicaSet", "bg")

    async def no_pods():
        return not await cluster.pods("bg")

    await wait_for(no_pods, what="dependents collected")


async def test_foreground_cascade_keeps_the_owner_until_its_pods_are_gone(cluster):
    await cluster.api.apply(replicaset("fg", 3))
    await three_ready(cluster, "fg")
    marked = await cluster.api.delete("ReplicaSet", "default", "fg", "Foreground")
    assert marked["metadata"]["deletionTimestamp"]
    assert "foregroundDeletion" in marked["metadata"]["finalizers"]

    async def owner_gone():
        return await gone(cluster, "ReplicaSet", "fg")

    await wait_for(owner_gone, what="owner removed")
    # The owner went last: by then every pod was already gone.
    assert await cluster.pods("fg") == []


async def test_foreground_cascade_is_recursive(cluster):
    # A Deployment owning a ReplicaSet (no deployment controller runs here) owning pods.
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "top", "namespace": "default"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "mid"}},
            "template": {
                "metadata": {"labels": {"app": "mid"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }
    d, _ = await cluster.api.apply(deploy)
    ref = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "top",
        "uid": d["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    rs = replicaset("mid", 3)
    rs["metadata"]["ownerReferences"] = [ref]
    await cluster.api.apply(rs)
    await three_ready(cluster, "mid")
    await cluster.api.delete("Deployment", "default", "top", "Foreground")

    async def all_gone():
        return await gone(cluster, "Deployment", "top") and await gone(cluster, "ReplicaSet", "mid")

    await wait_for(all_gone, what="deployment and replicaset removed")
    assert await cluster.pods("mid") == []


async def test_orphan_leaves_pods_running_without_owner(cluster):
    await cluster.api.apply(replicaset("or", 3))
    await three_ready(cluster, "or")
    await cluster.api.delete("ReplicaSet", "default", "or", "Orphan")

    async def owner_gone():
        return await gone(cluster, "ReplicaSet", "or")

    await wait_for(owner_gone, what="owner removed")
    pods = await cluster.pods("or")
    assert len(pods) == 3
    assert all(p.metadata.ownerReferences == [] and p.status.phase == "Running" for p in pods)
    assert all(p.metadata.deletionTimestamp is None for p in pods)


async def test_dangling_dependents_are_collected_and_others_kept(cluster):
    ghost = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": "ghost",
        "uid": "00000000-0000-0000-0000-000000000000",
        "controller": True,
    }
    foreign = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "name": "w",
        "uid": "11111111-1111-1111-1111-111111111111",
    }
    base = {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    await cluster.api.apply(
        {
            **base,
            "metadata": {
                "name": "dangling",
                "namespace": "default",
                "labels": {"app": "loose"},
                "ownerReferences": [ghost],
            },
        }
    )
    await cluster.api.apply(
        {
            **base,
            "metadata": {
                "name": "foreign",
                "namespace": "default",
                "labels": {"app": "loose"},
                "ownerReferences": [foreign],
            },
        }
    )
    await cluster.api.apply(
        {
            **base,
            "metadata": {
                "name": "half",
                "namespace": "default",
                "labels": {"app": "loose"},
                "ownerReferences": [ghost, foreign],
            },
        }
    )

    async def collected():
        return await gone(cluster, "Pod", "dangling")

    await wait_for(collected, what="dangling pod collected")

    async def half_stripped():
        p = await cluster.store.get("Pod", "default", "half")
        return [r.uid for r in p.metadata.ownerReferences] == [foreign["uid"]]

    await wait_for(half_stripped, what="dangling reference removed")
    assert not await gone(cluster, "Pod", "foreign")


async def test_kyb_delete_cascade_foreground_waits_for_the_pods(cluster):
    from tests.test_replication_service import kyb

    await cluster.api.apply(replicaset("cli", 3))
    await three_ready(cluster, "cli")
    code, out, err = await kyb(cluster.url, "delete", "rs", "cli", "--cascade=foreground")
    assert code == 0, err
    assert 'replicaset.apps "cli" deleted' in out
    # --wait (the default) returned once the owner was gone, which foreground allows only without pods.
    assert await gone(cluster, "ReplicaSet", "cli")
    assert await cluster.pods("cli") == []
