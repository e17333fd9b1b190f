"""The toolkit pieces every controller wires its informers with: ``Controller.handler`` (a
handler that only enqueues the keys of the new and old object) and ``start_all``/``stop_all``
(informers synced before a controller's first reconcile), the latter on a real nats-server."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kyb.controller import Controller, controller_keys
from kyb.informer import Informer, start_all, stop_all
from kyb.store import Store
from schemas.helpers import object_key
from schemas.meta import ObjectMeta, OwnerReference
from schemas.pod import Pod


async def _noop(_key, _ctx):
    return None


def pod(name: str, owner: str | None = None) -> Pod:
    labels = {"owner": owner} if owner else {}
    return Pod(metadata=ObjectMeta(name=name, namespace="default", labels=labels))


def owner_keys(obj) -> list[str]:
    owner = obj.metadata.labels.get("owner")
    return [f"default.{owner}"] if owner else []


@given(new_owner=st.sampled_from([None, "a", "b"]), old_owner=st.sampled_from([None, "a", "b"]))
def test_handler_enqueues_the_keys_of_new_and_old_each_once(new_owner, old_owner):
    controller = Controller("demo", _noop)
    on_change = controller.handler(owner_keys)
    on_change("MODIFIED", pod("p", new_owner), pod("p", old_owner), {})
    queued = []
    while (item := controller.queue.try_get()) is not None:
        queued.append(item[0])
    assert sorted(queued) == sorted({f"default.{o}" for o in (new_owner, old_owner) if o})


def test_handler_follows_deletions_and_an_objects_own_key():
    controller = Controller("demo", _noop)
    controller.handler(lambda o: [object_key(o)])("DELETED", None, pod("gone"), {})
    item = controller.queue.try_get()
    assert item is not None and item[0] == "default.gone"


def owned(name: str, kind: str, owner: str, *, controller: bool = True) -> Pod:
    ref = OwnerReference(apiVersion="batch/v1", kind=kind, name=owner, uid="u1", controller=controller)
    return Pod(metadata=ObjectMeta(name=name, namespace="ns1", ownerReferences=[ref]))


def test_controller_keys_name_the_controller_of_that_kind_only():
    job_keys = controller_keys("Job")
    assert job_keys(owned("p", "Job", "pi")) == ["ns1.pi"]
    assert job_keys(owned("p", "ReplicaSet", "web")) == []
    assert job_keys(owned("p", "Job", "pi", controller=False)) == []  # an owner that does not control it
    assert job_keys(pod("free")) == []


async def test_start_all_returns_with_every_cache_listed(nc):
    store = Store(nc.jetstream())
    await store.ensure_buckets()
    for i in range(3):
        await store.create(pod(f"p{i}"))
    pods, nodes = Informer(nc, "Pod"), Informer(nc, "Node")
    await start_all((pods, nodes))
    try:
        assert pods.synced and nodes.synced
        assert sorted(pods.keys()) == ["default.p0", "default.p1", "default.p2"]
    finally:
        await stop_all((pods, nodes))
