"""The store on a real nats-server: CAS on every write, metadata, finalizers, no lost updates."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import pytest

from kyb import errors
from kyb.store import Store, new_uid
from schemas.core import ConfigMap
from schemas.meta import ObjectMeta
from schemas.pod import Pod


def pod(name: str, ns: str = "default", **meta) -> Pod:
    return msgspec.convert(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, **meta},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        },
        Pod,
    )


def relabel(obj, **labels):
    return msgspec.structs.replace(obj, metadata=msgspec.structs.replace(obj.metadata, labels={**obj.metadata.labels, **labels}))


@pytest.fixture
async def store(nc):
    s = Store(nc.jetstream())
    await s.ensure_buckets()
    return s


async def test_create_sets_metadata_and_revision(store):
    created = await store.create(pod("a"))
    assert created.metadata.uid and created.metadata.creationTimestamp
    assert created.metadata.generation == 1
    got = await store.get("Pod", "default", "a")
    assert got.metadata.resourceVersion == created.metadata.resourceVersion
    assert got.metadata.uid == created.metadata.uid
    kv = await store.js.key_value("kyb-pods")
    entry = await kv.get("default.a")
    assert str(entry.revision) == got.metadata.resourceVersion


async def test_create_twice_is_already_exists_and_recreate_after_delete_works(store):
    first = await store.create(pod("a"))
    with pytest.raises(errors.AlreadyExists):
        await store.create(pod("a"))
    await store.delete("Pod", "default", "a")
    with pytest.raises(errors.NotFound):
        await store.get("Pod", "default", "a")
    again = await store.create(pod("a"))
    assert again.metadata.uid != first.metadata.uid


async def test_update_at_stale_revision_conflicts(store):
    created = await store.create(pod("a"))
    await store.update(relabel(created, x="1"))
    with pytest.raises(errors.Conflict):
        await store.update(relabel(created, x="2"))
    assert (await store.get("Pod", "default", "a")).metadata.labels == {"x": "1"}


async def test_generation_bumps_only_when_spec_changes(store):
    created = await store.create(pod("a"))
    labelled = await store.update(relabel(created, x="1"))
    assert labelled.metadata.generation == 1
    spec = msgspec.structs.replace(created.spec, nodeName="n1")
    respecced = await store.update(msgspec.structs.replace(labelled, spec=spec))
    assert respecced.metadata.generation == 2
    assert respecced.metadata.uid == created.metadata.uid
    assert respecced.metadata.creationTimestamp == created.metadata.creationTimestamp


async def test_two_concurrent_updates_exactly_one_wins(store):
    created = await store.create(pod("a"))
    results = await asyncio.gather(
        store.update(relabel(created, who="one")), store.update(relabel(created, who="two")), return_exceptions=True
    )
    wins = [r for r in results if not isinstance(r, Exception)]
    conflicts = [r for r in results if isinstance(r, errors.Conflict)]
    assert len(wins) == 1 and len(conflicts) == 1
    assert (await store.get("Pod", "default", "a")).metadata.labels["who"] == wins[0].metadata.labels["who"]


async def test_concurrent_mutations_lose_nothing(store):
    cm = msgspec.convert({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "counter"}, "data": {"n": "0"}}, ConfigMap)
    await store.create(cm)

    def bump(obj):
        return msgspec.structs.replace(obj, data={"n": str(int(obj.data["n"]) + 1)})

    await asyncio.gather(*(store.mutate("ConfigMap", "default", "counter", bump) for _ in range(30)))
    assert (await store.get("ConfigMap", "default", "counter")).data["n"] == "30"


async def test_delete_missing_is_not_found_and_stale_delete_conflicts(store):
    with pytest.raises(errors.NotFound):
        await store.delete("Pod", "default", "ghost")
    created = await store.create(pod("a"))
    await store.update(relabel(created, x="1"))
    with pytest.raises(errors.Conflict):
        await store.delete("Pod", "default", "a", resource_version=created.metadata.resourceVersion)
    assert await store.get("Pod", "default", "a")


async def test_finalizers_hold_the_object_until_the_last_goes(store):
    await store.create(pod("a", finalizers=["example.com/one", "example.com/two"]))
    marked = await store.delete("Pod", "default", "a")
    assert marked.metadata.deletionTimestamp
    still = await store.get("Pod", "default", "a")
    assert still.metadata.deletionTimestamp and still.metadata.finalizers == ["example.com/one", "example.com/two"]

    def drop(name):
        def fn(obj):
            fins = [f for f in obj.metadata.finalizers if f != name]
            return msgspec.structs.replace(obj, metadata=msgspec.structs.replace(obj.metadata, finalizers=fins))

        return fn

    await store.mutate("Pod", "default", "a", drop("example.com/one"))
    assert (await store.get("Pod", "default", "a")).metadata.finalizers == ["example.com/two"]
    await store.mutate("Pod", "default", "a", drop("example.com/two"))
    with pytest.raises(errors.NotFound):
        await store.get("Pod", "default", "a")


async def test_bound_pod_deletion_is_graceful_until_grace_zero(store):
    created = await store.create(pod("a"))
    await store.update(msgspec.structs.replace(created, spec=msgspec.structs.replace(created.spec, nodeName="n1")))
    marked = await store.delete("Pod", "default", "a")
    assert marked.metadata.deletionTimestamp and marked.metadata.deletionGracePeriodSeconds == 30
    assert (await store.get("Pod", "default", "a")).metadata.deletionTimestamp
    await store.delete("Pod", "default", "a", grace_period_seconds=0)
    with pytest.raises(errors.NotFound):
        await store.get("Pod", "default", "a")


async def test_list_by_namespace_and_cluster_scope(store):
    await store.create(pod("a", "default"))
    await store.create(pod("b", "other"))
    await store.create(pod("c", "default"))
    await store.delete("Pod", "default", "c")
    assert [p.metadata.name for p in await store.list("Pod", "default")] == ["a"]
    assert [p.metadata.name for p in await store.list("pods")] == ["a", "b"]
    assert await store.list("Node") == []


async def test_update_without_revision_is_invalid(store):
    created = await store.create(pod("a"))
    blind = msgspec.structs.replace(created, metadata=ObjectMeta(name="a", namespace="default"))
    with pytest.raises(errors.Invalid) as e:
        await store.update(blind)
    assert e.value.details[0].field == "metadata.resourceVersion"


async def test_forced_delete_of_a_marked_pod_with_finalizers_goes_with_the_last_finalizer(store):
    created = await store.create(pod("a", finalizers=["example.com/hold"]))
    await store.update(msgspec.structs.replace(created, spec=msgspec.structs.replace(created.spec, nodeName="n1")))
    marked = await store.delete("Pod", "default", "a")
    assert marked.metadata.deletionGracePeriodSeconds == 30
    forced = await store.delete("Pod", "default", "a", grace_period_seconds=0)
    assert forced.metadata.deletionGracePeriodSeconds == 0
    await store.mutate("Pod", "default", "a", lambda o: msgspec.structs.replace(
        o, metadata=msgspec.structs.replace(o.metadata, finalizers=[])))
    with pytest.raises(errors.NotFound):
        await store.get("Pod", "default", "a")


async def test_generate_name_gives_distinct_kubernetes_style_names(store):
    template = msgspec.convert(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-", "namespace": "default"},
         "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
        Pod,
    )
    made = await asyncio.gather(*(store.create(template) for _ in range(50)))
    names = {p.metadata.name for p in made}
    assert len(names) == 50
    assert all(n.startswith("web-") and len(n) == 9 and set(n[4:]) <= set("bcdfghjklmnpqrstvwxz2456789") for n in names)


async def test_a_delete_without_precondition_wins_over_a_writer_that_keeps_changing_the_object(nc):
    """As a controller updates a Deployment's status while `kyb delete` runs: the delete
    re-reads and retries instead of failing with a Conflict; with a resourceVersion
    precondition the conflict stands."""
    store = Store(nc.jetstream())
    await store.ensure_buckets()
    names = [f"busy-{i}" for i in range(10)]
    for n in names:
        await store.create(ConfigMap(metadata=ObjectMeta(name=n, namespace="default"), data={"n": "0"}))
    busy = True
    writes = 0

    async def writer(name: str) -> None:
        nonlocal writes
        while busy:
            try:
                await store.mutate("ConfigMap", "default", name,
                                   lambda cm: msgspec.structs.replace(cm, data={"n": str(int(cm.data["n"]) + 1)}))
                writes += 1
            except errors.NotFound:
                return
            await asyncio.sleep(0)

    first = await store.get("ConfigMap", "default", names[0])
    tasks = [asyncio.create_task(writer(n)) for n in names]
    try:
        while writes < 50:
            await asyncio.sleep(0.01)
        with pytest.raises(errors.Conflict):
            await store.delete("ConfigMap", "default", names[0], resource_version=first.metadata.resourceVersion)
        for n in names:
            await store.delete("ConfigMap", "default", n)
    finally:
        busy = False
        await asyncio.gather(*tasks)
    for n in names:
        with pytest.raises(errors.NotFound):
            await store.get("ConfigMap", "default", n)


def test_new_uid_is_a_version_4_uuid():
    uids = {new_uid() for _ in range(2000)}
    assert len(uids) == 2000
    for u in uids:
        parsed = uuid.UUID(u)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, u)
