"""PriorityClass and pod priority: Priority admission as a pure rule, PriorityClass validation,
the scheduler's pending order, `kyb get pc`'s columns, and on a real nats-server the api (system
classes, refusals, priorities set on pods from manifests and from controllers' creates) and the
scheduler binding the higher-priority pod first when only one fits."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kyb import errors
from kyb.cli import printers
from kyb.client import ApiClient
from kyb.store import Store
from schemas.pod import Pod
from schemas.scheduling import PriorityClass, PriorityRefused, keep_priority, with_priority
from schemas.validation import SchemaError, decode, validate_update
from services.scheduler.queue import PendingQueue
from tests.cluster import QUIET, HollowKubelet, Services, hollow_node, wait_api, wait_for


def pc_manifest(name: str, value: int, **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
            "value": value, **fields}


def pc(name: str, value: int, **fields: Any) -> PriorityClass:
    return msgspec.convert(pc_manifest(name, value, **fields), PriorityClass)


def pod_manifest(name: str, cpu: str = "100m", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu}}}], **spec},
    }


def pod(name: str = "p", **spec: Any) -> Pod:
    return msgspec.convert(pod_manifest(name, **spec), Pod)


# --- Priority admission -----------------------------------------------------------------------

HIGH = pc("high", 1000)
LOW_NEVER = pc("low", 10, preemptionPolicy="Never")
DEFAULT = pc("everyone", 5, globalDefault=True)


@pytest.mark.parametrize(
    ("spec", "named", "default", "want"),
    [
        pytest.param({"priorityClassName": "high"}, HIGH, DEFAULT, ("high", 1000, "PreemptLowerPriority"), id="named"),
        pytest.param({"priorityClassName": "low"}, LOW_NEVER, None, ("low", 10, "Never"), id="named-never"),
        pytest.param({}, None, DEFAULT, ("everyone", 5, "PreemptLowerPriority"), id="global-default"),
        pytest.param({}, None, None, ("", 0, "PreemptLowerPriority"), id="no-default"),
        pytest.param({"priorityClassName": "high", "priority": 1000}, HIGH, None, ("high", 1000, "PreemptLowerPriority"),
                     id="matching-priority-given"),
    ],
)
def test_a_new_pod_gets_its_class_priority(spec, named, default, want):
    got = with_priority(pod(**spec), named, default).spec
    assert (got.priorityClassName, got.priority, got.preemptionPolicy) == want


@pytest.mark.parametrize(
    ("spec", "named", "field", "words"),
    [
        pytest.param({"priorityClassName": "nope"}, None, "spec.priorityClassName",
                     "no PriorityClass with name nope was found", id="missing-class"),
        pytest.param({"priorityClassName": "high", "priority": 7}, HIGH, "spec.priority",
                     "the integer value of priority (7) must not be provided in pod spec; priority admission "
                     "controller computed 1000", id="priority-not-the-class-value"),
        pytest.param({"priority": 7}, None, "spec.priority", "computed 0", id="priority-without-class"),
        pytest.param({"priorityClassName": "high", "preemptionPolicy": "Never"}, HIGH, "spec.preemptionPolicy",
                     "the string value of PreemptionPolicy (Never) must not be provided", id="policy-not-the-class-one"),
    ],
)
def test_priority_admission_refuses(spec, named, field, words):
    with pytest.raises(PriorityRefused) as raised:
        with_priority(pod(**spec), named, None)
    assert raised.value.field == field and words in raised.value.message


@given(
    name=st.sampled_from(["", "high", "low", "everyone"]),
    default=st.sampled_from([None, DEFAULT]),
    given_priority=st.sampled_from([None, 0, 5, 10, 1000]),
)
def test_an_admitted_pod_has_its_class_value_and_admitting_it_again_changes_nothing(name, default, given_priority):
    classes = {c.metadata.name: c for c in (HIGH, LOW_NEVER, DEFAULT)}
    source = pod(priorityClassName=name, **({} if given_priority is None else {"priority": given_priority}))
    named = classes.get(name) if name else None
    try:
        admitted = with_priority(source, named, default)
    except PriorityRefused:
        expected = named.value if named else (default.value if default else 0)
        assert given_priority is not None and given_priority != expected
        return
    chosen = named or default
    assert admitted.spec.priority == (chosen.value if chosen else 0)
    assert admitted.spec.priorityClassName == (chosen.metadata.name if chosen else "")
    assert with_priority(admitted, classes.get(admitted.spec.priorityClassName), default) == admitted


def test_an_update_keeps_the_priority_admission_gave():
    admitted = with_priority(pod(priorityClassName="high"), HIGH, None)
    reapplied = keep_priority(pod(priorityClassName="high"), admitted)
    assert (reapplied.spec.priority, reapplied.spec.preemptionPolicy) == (1000, "PreemptLowerPriority")
    assert validate_update(reapplied, admitted) == []
    changed = keep_priority(pod(priorityClassName="low"), admitted)
    assert ("spec.priorityClassName", "field is immutable") in validate_update(changed, admitted)


# --- PriorityClass validation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("m", "field", "words"),
    [
        pytest.param(pc_manifest("huge", 1_000_000_001), "value",
                     "maximum allowed value of a user defined priority is 1000000000", id="user-value-too-high"),
        pytest.param(pc_manifest("system-mine", 10), "metadata.name",
                     "priority class names with 'system-' prefix are reserved for system use only. error: "
                     "system-mine is not a known system priority class", id="reserved-prefix"),
        pytest.param(pc_manifest("system-node-critical", 5), "metadata.name",
                     "value of system-node-critical PriorityClass must be 2000001000", id="system-class-value"),
        pytest.param(pc_manifest("system-cluster-critical", 2_000_000_000, globalDefault=True), "metadata.name",
                     "globalDefault of system-cluster-critical PriorityClass must be false", id="system-class-default"),
        pytest.param(pc_manifest("x", 1, preemptionPolicy="Sometimes"), "preemptionPolicy", "Sometimes",
                     id="unknown-preemption-policy"),
        pytest.param({k: v for k, v in pc_manifest("x", 1).items() if k != "value"}, "value", "Required",
                     id="value-required"),
    ],
)
def test_priority_class_validation_names_the_field(m, field, words):
    with pytest.raises(SchemaError) as raised:
        decode(m)
    assert any(f == field and words in msg for f, msg in raised.value.details), raised.value.details


def test_valid_classes_and_what_may_not_change():
    assert decode(pc_manifest("system-cluster-critical", 2_000_000_000)).value == 2_000_000_000  # type: ignore[attr-defined]
    old = decode(pc_manifest("high", 1_000_000_000, description="batch"))
    assert validate_update(decode(pc_manifest("high", 1_000_000_000, description="other", globalDefault=True)), old) == []
    assert validate_update(decode(pc_manifest("high", 7)), old) == [("value", "Forbidden: may not be changed in an update.")]
    assert validate_update(decode(pc_manifest("high", 1_000_000_000, preemptionPolicy="Never")), old) == [
        ("preemptionPolicy", "field is immutable")]


def test_kyb_get_pc_columns():
    now = dt.datetime(2026, 1, 10, 12, 0, 0, tzinfo=dt.UTC)
    objs = [{**pc_manifest("high", 1000, globalDefault=True), "metadata": {"name": "high", "creationTimestamp": "2026-01-10T11:00:00Z"}}]
    assert printers.table("PriorityClass", objs, now) == (["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE"],
                                                          [["high", "1000", "true", "60m"]])


# --- the scheduler's pending order -------------------------------------------------------------


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(-3, 3)), max_size=40))
def test_pending_pods_leave_by_priority_then_arrival(adds):
    q = PendingQueue()
    first: dict[str, tuple[int, int]] = {}
    for i, (key, priority) in enumerate(adds):
        q.add(key, priority)
        first.setdefault(key, (-priority, i))
    assert len(q) == len(first) and all(k in q for k in first)
    out = [q.pop() for _ in range(len(q))]
    assert out == sorted(first, key=lambda k: first[k])
    assert not q and "a" not in q


# --- on a real nats-server --------------------------------------------------------------------


async def test_the_system_classes_exist_from_the_start(api):
    client, _ = api
    items = await client.list("PriorityClass")
    got = {o["metadata"]["name"]: (o["value"], o["globalDefault"], o["preemptionPolicy"]) for o in items}
    assert got == {"system-cluster-critical": (2_000_000_000, False, "PreemptLowerPriority"),
                   "system-node-critical": (2_000_001_000, False, "PreemptLowerPriority")}


async def test_pods_get_priorities_from_manifests_and_from_controllers(api):
    client, store = api
    await client.apply(pc_manifest("high", 1000))
    await client.apply(pc_manifest("everyone", 5, globalDefault=True, preemptionPolicy="Never"))
    with pytest.raises(errors.Forbidden) as raised:
        await client.apply(pc_manifest("also", 6, globalDefault=True))
    assert "PriorityClass everyone is already marked as default. Only one default can exist" in str(raised.value)
    assert [d.field for d in raised.value.details] == ["globalDefault"]

    created, _ = await client.apply(pod_manifest("named", priorityClassName="high"))
    assert (created["spec"]["priority"], created["spec"]["preemptionPolicy"]) == (1000, "PreemptLowerPriority")
    plain, _ = await client.apply(pod_manifest("plain"))
    assert (plain["spec"]["priorityClassName"], plain["spec"]["priority"], plain["spec"]["preemptionPolicy"]) == (
        "everyone", 5, "Never")
    again, result = await client.apply(pod_manifest("named", priorityClassName="high"))
    assert result == "unchanged" and again["spec"]["priority"] == 1000
    critical, _ = await client.apply(pod_manifest("critical", priorityClassName="system-node-critical"))
    assert critical["spec"]["priority"] == 2_000_001_000

    with pytest.raises(errors.Forbidden) as raised:
        await client.apply(pod_manifest("lost", priorityClassName="nope"))
    assert [(d.field, d.message) for d in raised.value.details] == [
        ("spec.priorityClassName", "no PriorityClass with name nope was found")]
    with pytest.raises(errors.Forbidden) as raised:
        await client.apply(pod_manifest("own", priorityClassName="high", priority=2000))
    assert [d.field for d in raised.value.details] == ["spec.priority"]
    with pytest.raises(errors.Invalid) as raised:
        await client.apply(pc_manifest("high", 2000))
    assert [(d.field, d.message) for d in raised.value.details] == [
        ("value", "Forbidden: may not be changed in an update.")]

    # a controller's create goes straight to the store: the same admission applies
    made = await store.create(pod("from-controller", priorityClassName="high"))
    assert made.spec.priority == 1000  # type: ignore[attr-defined]
    defaulted = await store.create(pod("from-controller-plain"))
    assert (defaulted.spec.priorityClassName, defaulted.spec.priority) == ("everyone", 5)  # type: ignore[attr-defined]
    with pytest.raises(errors.Forbidden):
        await store.create(pod("from-controller-lost", priorityClassName="nope"))
    wave = await asyncio.gather(*(store.create(pod(f"wave-{i}", priorityClassName="high")) for i in range(20)))
    assert {p.spec.priority for p in wave} == {1000}  # type: ignore[attr-defined]
    # a class made a moment ago is seen by the next create
    await client.apply(pc_manifest("fresh", 77))
    assert (await store.create(pod("fresh-pod", priorityClassName="fresh"))).spec.priority == 77  # type: ignore[attr-defined]


async def test_the_higher_priority_pod_is_bound_first_when_only_one_fits(nats_url, nc):
    base = Services(["api"], nats_url, QUIET).start()
    client, store = ApiClient(nc), Store(nc.jetstream())
    scheduler = None
    kubelet = HollowKubelet(store, nc, nodes=["small"]).start()
    try:
        await wait_api(nc)
        await client.apply(pc_manifest("high", 1000))
        await client.apply(pc_manifest("mid", 10))
        await store.create(hollow_node("small", resources={"cpu": "1", "memory": "4Gi", "pods": "110"}))
        # pending before any scheduler runs, in the order FIFO would get wrong
        for name, cls in (("zero", None), ("middle", "mid"), ("urgent", "high")):
            await client.apply(pod_manifest(name, cpu="1", **({"priorityClassName": cls} if cls else {})))
        scheduler = Services(["scheduler"], nats_url, QUIET).start()

        async def bound() -> list[str] | None:
            names = [p.metadata.name for p in await store.list("pods", "default") if p.spec.nodeName]
            return names or None

        assert await wait_for(bound, 20, "a pod bound") == ["urgent"]
        await client.delete("Pod", "default", "urgent")  # the hollow kubelet removes it: room for one more

        async def next_bound() -> list[str] | None:
            names = [p.metadata.name for p in await store.list("pods", "default") if p.spec.nodeName]
            return names if names and "urgent" not in names else None

        assert await wait_for(next_bound, 30, "the next pod bound") == ["middle"]
        zero = await store.get("Pod", "default", "zero")
        assert not zero.spec.nodeName and any(  # type: ignore[attr-defined]
            c.type == "PodScheduled" and c.status == "False" for c in zero.status.conditions)  # type: ignore[attr-defined]
    finally:
        if scheduler is not None:
            await scheduler.stop()
        await kubelet.stop()
        await base.stop()
