"""Pod scheduling gates (``spec.schedulingGates``): validated as Kubernetes does, a gated pod
waits with PodScheduled=False/SchedulingGated (written once) and is bound once its last gate
goes, through the scheduler's pod watch."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kyb import errors
from kyb.cli import printers
from kyb.store import Store
from schemas.pod import Pod
from schemas.validation import SchemaError, decode, validate_update
from services.scheduler.podinfo import wants_scheduling
from services.scheduler.service import Scheduler
from tests.cluster import wait_for
from tests.test_scheduler_service import node


def manifest(name: str = "gated", gates: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "containers": [{"name": "c", "image": "busybox:1", "resources": {"requests": {"cpu": "100m"}}}],
            "schedulingGates": [{"name": g} for g in (gates if gates is not None else ["example.com/quota"])],
            **spec,
        },
    }


def gated_pod(name: str = "gated", gates: list[str] | None = None) -> Pod:
    obj = decode(manifest(name, gates))
    assert isinstance(obj, Pod)
    return obj


def scheduled(p: Pod) -> Any:
    return next((c for c in p.status.conditions if c.type == "PodScheduled"), None)


@pytest.mark.parametrize(
    ("gates", "spec", "want"),
    [
        pytest.param(["a", "a"], {}, [("spec.schedulingGates[1]", 'Duplicate value: "a"')], id="duplicate"),
        pytest.param(["-bad"], {}, [("spec.schedulingGates[0].name", None)], id="not-a-qualified-name"),
        pytest.param(["example.com/"], {}, [("spec.schedulingGates[0].name", None)], id="empty-name-part"),
        pytest.param(["ok"], {"nodeName": "n1"},
                     [("spec.nodeName", "Forbidden: cannot be set until all schedulingGates have been cleared")],
                     id="bound-while-gated"),
    ],
)
def test_bad_gates_are_refused_naming_the_field(gates, spec, want):
    with pytest.raises(SchemaError) as raised:
        decode(manifest(gates=gates, **spec))
    got = [(f, m) for f, m in raised.value.details]
    assert [f for f, _ in got] == [f for f, _ in want]
    for (_, m), (_, wanted) in zip(got, want, strict=True):
        assert wanted is None or wanted in m


def test_gates_may_only_be_removed_on_update():
    old = gated_pod(gates=["a", "b"])
    assert validate_update(gated_pod(gates=["b"]), old) == []
    assert validate_update(gated_pod(gates=[]), old) == []
    assert validate_update(gated_pod(gates=["a", "c"]), old) == [
        ("spec.schedulingGates[1].name", "Forbidden: only deletion is allowed, but found new scheduling gate 'c'")
    ]


@given(st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True), st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True))
def test_an_update_is_refused_exactly_when_it_adds_a_gate(before, after):
    errs = validate_update(gated_pod(gates=after), gated_pod(gates=before))
    assert bool(errs) == bool(set(after) - set(before))
    assert all(f.startswith("spec.schedulingGates[") for f, _ in errs)


def test_a_gated_pod_is_not_for_the_scheduler_and_shows_scheduling_gated():
    pod = gated_pod()
    assert not wants_scheduling(pod)
    assert wants_scheduling(gated_pod(gates=[]))
    doc = msgspec.to_builtins(pod)
    doc["status"] = {"phase": "Pending",
                     "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}
    assert printers.pod_status(doc) == "SchedulingGated"


@pytest.fixture
async def scheduler(nats_url):
    import nats

    clients = [await nats.connect(nats_url) for _ in range(2)]
    store = Store(clients[0].jetstream())
    from schemas.registry import resolve

    await store.ensure_buckets([resolve("pods"), resolve("nodes")])
    stop = asyncio.Event()
    sched = Scheduler(clients[1], Store(clients[1].jetstream()), identity="sched-gates", rng=np.random.default_rng(0))
    await sched.start()
    task = asyncio.create_task(sched.run(stop))
    yield store, sched
    stop.set()
    await task
    await sched.stop()
    for c in clients:
        await c.close()


async def test_a_gated_pod_waits_until_its_last_gate_goes(scheduler):
    store, sched = scheduler
    await store.create(node("n1", cpu="4"))
    created = await store.create(gated_pod(gates=["example.com/a", "example.com/b"]))
    cond = scheduled(created)
    assert (cond.status, cond.reason) == ("False", "SchedulingGated")
    assert cond.message == "Scheduling is blocked due to non-empty scheduling gates"

    # An ungated pod created after it is bound: the scheduler has seen both and left the gated one.
    await store.create(gated_pod("free", gates=[]))

    async def free_bound() -> bool:
        return bool((await store.get("pods", "default", "free")).spec.nodeName)

    await wait_for(free_bound, 10, "the ungated pod bound")
    still = await store.get("pods", "default", "gated")
    assert not still.spec.nodeName
    assert still.metadata.resourceVersion == created.metadata.resourceVersion, "the condition is written once"

    one_left = await store.update(msgspec.structs.replace(still, spec=msgspec.structs.replace(
        still.spec, schedulingGates=still.spec.schedulingGates[1:])), current=still)

    async def after_first() -> Pod | None:
        p = await store.get("pods", "default", "gated")
        return p if p.metadata.resourceVersion != one_left.metadata.resourceVersion or p.spec.nodeName else None

    # Still gated: nothing binds it (the ungated pod's binding shows the scheduler is live).
    await store.create(gated_pod("free2", gates=[]))

    async def free2_bound() -> bool:
        return bool((await store.get("pods", "default", "free2")).spec.nodeName)

    await wait_for(free2_bound, 10, "the second ungated pod bound")
    assert await after_first() is None

    ungated = await store.update(msgspec.structs.replace(one_left, spec=msgspec.structs.replace(
        one_left.spec, schedulingGates=[])), current=one_left)

    async def bound_now() -> Pod | None:
        p = await store.get("pods", "default", "gated")
        return p if p.spec.nodeName else None

    bound = await wait_for(bound_now, 5, "the pod bound once its last gate went")
    assert bound.spec.nodeName == "n1"
    assert (scheduled(bound).status, scheduled(bound).reason) == ("True", "")
    assert ungated.metadata.resourceVersion != bound.metadata.resourceVersion


async def test_the_api_refuses_a_new_gate_and_accepts_removals(api):
    client, _ = api
    made, _ = await client.apply(manifest("web", ["a", "b"]))
    assert made["status"]["conditions"][0]["reason"] == "SchedulingGated"
    with pytest.raises(errors.Invalid) as raised:
        await client.apply(manifest("web", ["a", "b", "c"]))
    assert [d.field for d in raised.value.details] == ["spec.schedulingGates[2].name"]
    assert "only deletion is allowed" in raised.value.message
    fewer, result = await client.apply(manifest("web", ["b"]))
    assert result == "configured" and [g["name"] for g in fewer["spec"]["schedulingGates"]] == ["b"]
    assert fewer["status"]["conditions"][0]["reason"] == "SchedulingGated"
    bad = copy.deepcopy(manifest("dup", ["x", "x"]))
    with pytest.raises(errors.Invalid) as raised:
        await client.apply(bad)
    assert [d.field for d in raised.value.details] == ["spec.schedulingGates[1]"]
