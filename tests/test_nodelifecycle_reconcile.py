"""Properties of the node lifecycle decisions: heartbeats, unreachable taints, taint-based
eviction and pod GC, as pure functions of the node, its pods and the time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from schemas.coordination import Lease, LeaseSpec
from schemas.core import Node, NodeCondition, NodeSpec, NodeStatus, Taint
from schemas.helpers import format_time
from schemas.meta import ObjectMeta
from schemas.pod import Container, Pod, PodCondition, PodSpec, PodStatus, Toleration
from schemas.tolerations import tolerates
from services.nodelifecycle.reconcile import (
    MESSAGE_UNKNOWN,
    NOT_READY,
    REASON_UNKNOWN,
    UNREACHABLE,
    Health,
    Settings,
    eviction_time,
    is_unreachable,
    observe,
    plan_node,
    plan_orphans,
)

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
SETTINGS = Settings(node_monitor_grace_period=50, pod_eviction_timeout=300, orphan_quarantine=40)


def node(ready: str | None = "True", taints: list[Taint] | None = None) -> Node:
    conditions = [] if ready is None else [
        NodeCondition(type="Ready", status=ready, reason="KubeletReady", lastHeartbeatTime=format_time(T0)),  # type: ignore[arg-type]
        NodeCondition(type="MemoryPressure", status="False"),
    ]
    return Node(
        metadata=ObjectMeta(name="n1", uid="node-uid"),
        spec=NodeSpec(taints=list(taints or [])),
        status=NodeStatus(conditions=conditions),
    )


def pod(name: str, tolerations: list[Toleration] = (), *, phase: str = "Running", ready: bool = True, **meta) -> Pod:  # type: ignore[assignment]
    return Pod(
        metadata=ObjectMeta(name=name, namespace="default", uid=f"uid-{name}", **meta),
        spec=PodSpec(containers=[Container(name="c", image="busybox")], nodeName="n1", tolerations=list(tolerations)),
        status=PodStatus(phase=phase, conditions=[PodCondition(type="Ready", status="True" if ready else "False")]),  # type: ignore[arg-type]
    )


def lease(renew: datetime) -> Lease:
    return Lease(metadata=ObjectMeta(name="n1", namespace="kube-node-lease"), spec=LeaseSpec(renewTime=format_time(renew)))


# -- strategies -------------------------------------------------------------------------------

keys = st.sampled_from([UNREACHABLE, NOT_READY, "dedicated", ""])
effects = st.sampled_from(["", "NoSchedule", "PreferNoSchedule", "NoExecute"])
tolerations = st.builds(
    Toleration,
    key=keys,
    operator=st.sampled_from(["Exists", "Equal"]),
    value=st.sampled_from(["", "x"]),
    effect=effects,
    tolerationSeconds=st.one_of(st.none(), st.integers(-5, 600)),
)
taints = st.builds(
    Taint,
    key=st.sampled_from([UNREACHABLE, NOT_READY, "dedicated"]),
    value=st.sampled_from(["", "x"]),
    effect=st.sampled_from(["NoSchedule", "PreferNoSchedule", "NoExecute"]),
    timeAdded=st.one_of(st.none(), st.integers(0, 900).map(lambda s: format_time(T0 + timedelta(seconds=s)))),
)
nodes = st.builds(node, ready=st.sampled_from([None, "True", "False", "Unknown"]), taints=st.lists(taints, max_size=4))
pods = st.lists(
    st.builds(
        lambda i, tol, phase, ready: pod(f"p{i}", tol, phase=phase, ready=ready),
        st.integers(0, 1000),
        st.lists(tolerations, max_size=3),
        st.sampled_from(["Pending", "Running", "Succeeded", "Failed"]),
        st.booleans(),
    ),
    max_size=6,
    unique_by=lambda p: p.metadata.name,
)
ages = st.floats(0, 2000, allow_nan=False)


# -- heartbeats and the node ------------------------------------------------------------------


@given(n=nodes, ps=pods, age=st.floats(0, 50, allow_nan=False), later=st.floats(0, 2000, allow_nan=False))
def test_never_marks_a_node_whose_heartbeat_is_fresh(n, ps, age, later):
    now = T0 + timedelta(seconds=later)
    health = Health(probed_at=now - timedelta(seconds=age))
    plan = plan_node(n, health, ps, now, SETTINGS)
    result = plan.node or n
    assert not any(t.key == UNREACHABLE for t in result.spec.taints)
    before = {c.type: c.status for c in n.status.conditions}
    assert {c.type: c.status for c in result.status.conditions} == before
    assert plan.not_ready == []


@given(n=nodes, ps=pods, age=st.floats(50.001, 5000, allow_nan=False))
def test_a_silent_node_becomes_unknown_and_unreachable_once(n, ps, age):
    health = Health(probed_at=T0)
    now = T0 + timedelta(seconds=age)
    plan = plan_node(n, health, ps, now, SETTINGS)
    result = plan.node or n
    ready = next(c for c in result.status.conditions if c.type == "Ready")
    assert ready.status == "Unknown"
    assert {(t.key, t.effect) for t in result.spec.taints if t.key == UNREACHABLE} == {
        (UNREACHABLE, "NoExecute"),
        (UNREACHABLE, "NoSchedule"),
    }
    assert not any(t.key == NOT_READY for t in result.spec.taints)
    assert all(t.timeAdded for t in result.spec.taints if t.effect == "NoExecute")
    # applying the plan again changes nothing more
    assert plan_node(result, health, ps, now, SETTINGS).node is None


def test_unknown_condition_says_why():
    plan = plan_node(node(), Health(probed_at=T0), [], T0 + timedelta(seconds=51), SETTINGS)
    assert plan.node is not None and plan.became == "NodeNotReady"
    ready = next(c for c in plan.node.status.conditions if c.type == "Ready")
    assert (ready.reason, ready.message) == (REASON_UNKNOWN, MESSAGE_UNKNOWN)
    assert ready.lastHeartbeatTime == format_time(T0)  # the last heartbeat stays what it was
    pressure = next(c for c in plan.node.status.conditions if c.type == "MemoryPressure")
    assert pressure.status == "Unknown"


def test_a_renewed_lease_takes_the_unreachable_taint_away():
    silent = plan_node(node(), Health(probed_at=T0), [], T0 + timedelta(seconds=60), SETTINGS).node
    assert silent is not None and is_unreachable(silent)
    health = observe(Health(lease_renew=format_time(T0), probed_at=T0), lease(T0 + timedelta(seconds=61)), silent, T0 + timedelta(seconds=62))
    assert health.probed_at == T0 + timedelta(seconds=62)
    back = plan_node(silent, health, [], T0 + timedelta(seconds=62), SETTINGS)
    assert back.node is not None and back.became == "NodeReady"
    assert not back.node.spec.taints


def test_an_unchanged_lease_is_no_heartbeat():
    first = observe(None, lease(T0), node(), T0)
    assert observe(first, lease(T0), node(), T0 + timedelta(seconds=30)) is first


def test_a_kubelet_reporting_not_ready_gets_the_not_ready_taint():
    plan = plan_node(node(ready="False"), Health(probed_at=T0), [], T0, SETTINGS)
    assert plan.node is not None
    assert {(t.key, t.effect) for t in plan.node.spec.taints} == {(NOT_READY, "NoExecute"), (NOT_READY, "NoSchedule")}


@given(n=nodes, age=st.floats(0, 49, allow_nan=False))
def test_other_taints_are_kept(n, age):
    plan = plan_node(n, Health(probed_at=T0), [], T0 + timedelta(seconds=age), SETTINGS)
    result = plan.node or n
    others = [(t.key, t.effect, t.value) for t in n.spec.taints if t.key not in (UNREACHABLE, NOT_READY)]
    assert [(t.key, t.effect, t.value) for t in result.spec.taints if t.key not in (UNREACHABLE, NOT_READY)] == others


# -- eviction ----------------------------------------------------------------------------------


@given(n=nodes, ps=pods, age=ages)
def test_never_evicts_a_pod_tolerating_every_noexecute_taint_forever(n, ps, age):
    forever = [Toleration(operator="Exists", effect="NoExecute")]
    tolerant = [msgspec.structs.replace(p, spec=msgspec.structs.replace(p.spec, tolerations=forever)) for p in ps]
    plan = plan_node(n, Health(probed_at=T0), tolerant, T0 + timedelta(seconds=age), SETTINGS)
    assert plan.evict == []


@given(n=nodes, ps=pods, age=ages)
def test_no_pod_is_evicted_before_its_time(n, ps, age):
    now = T0 + timedelta(seconds=age)
    plan = plan_node(n, Health(probed_at=T0), ps, now, SETTINGS)
    result = plan.node or n
    for ev in plan.evict:
        if ev.reason == "TaintManagerEviction":
            due = eviction_time(ev.pod, result.spec.taints, now, SETTINGS)
            assert due is not None and due <= now
            assert ev.pod.status.phase not in ("Succeeded", "Failed")
    evicted = {ev.pod.metadata.name for ev in plan.evict}
    for p in ps:
        due = eviction_time(p, result.spec.taints, now, SETTINGS)
        if due is not None and due <= now and p.status.phase in ("Pending", "Running"):
            assert p.metadata.name in evicted


@given(n=nodes, ps=pods, age=ages)
def test_the_controller_looks_again_before_anything_is_due(n, ps, age):
    now = T0 + timedelta(seconds=age)
    plan = plan_node(n, Health(probed_at=T0), ps, now, SETTINGS)
    result = plan.node or n
    evicted = {ev.pod.metadata.name for ev in plan.evict}
    for p in ps:
        due = eviction_time(p, result.spec.taints, now, SETTINGS)
        if p.metadata.name in evicted or due is None or p.status.phase in ("Succeeded", "Failed"):
            continue
        assert plan.requeue_after is not None
        assert 0 < plan.requeue_after <= (due - now).total_seconds() + 0.06
    if not is_unreachable(result):
        # a healthy node is looked at again when its grace period would run out
        assert plan.requeue_after is not None and plan.requeue_after <= 50 - age + 0.06


@pytest.mark.parametrize(
    "tols, evicted_after",
    [
        pytest.param([], 300, id="no-toleration-pod-eviction-timeout"),
        pytest.param([Toleration(key=UNREACHABLE, operator="Exists", effect="NoExecute", tolerationSeconds=30)], 30, id="toleration-seconds"),
        pytest.param([Toleration(key=UNREACHABLE, operator="Exists", effect="NoExecute", tolerationSeconds=0)], 0, id="zero-seconds"),
        pytest.param([Toleration(key=UNREACHABLE, operator="Exists")], None, id="forever"),
        pytest.param([Toleration(key="other", operator="Exists", tolerationSeconds=5)], 300, id="unrelated-toleration"),
        pytest.param(
            [
                Toleration(key=UNREACHABLE, operator="Exists", tolerationSeconds=10),
                Toleration(operator="Exists", effect="NoExecute", tolerationSeconds=90),
            ],
            90,
            id="most-permissive-wins",
        ),
    ],
)
def test_eviction_time_per_toleration(tols, evicted_after):
    taints = [Taint(key=UNREACHABLE, effect="NoExecute", timeAdded=format_time(T0))]
    due = eviction_time(pod("p", tols), taints, T0, SETTINGS)
    if evicted_after is None:
        assert due is None
    else:
        assert due == T0 + timedelta(seconds=evicted_after)


def test_pods_on_an_unreachable_node_stop_being_ready():
    plan = plan_node(node(), Health(probed_at=T0), [pod("a"), pod("b", ready=False)], T0 + timedelta(seconds=51), SETTINGS)
    assert [p.metadata.name for p in plan.not_ready] == ["a"]
    ready = next(c for c in plan.not_ready[0].status.conditions if c.type == "Ready")
    assert ready.status == "False"


def test_a_terminating_pod_on_an_unreachable_node_is_forced_after_its_grace():
    doomed = pod("t", deletionTimestamp=format_time(T0 + timedelta(seconds=55)), deletionGracePeriodSeconds=30)
    early = plan_node(node(), Health(probed_at=T0), [doomed], T0 + timedelta(seconds=60), SETTINGS)
    assert early.evict == [] and early.requeue_after is not None and early.requeue_after <= 25.1
    late = plan_node(node(), Health(probed_at=T0), [doomed], T0 + timedelta(seconds=86), SETTINGS)
    assert [(e.pod.metadata.name, e.reason) for e in late.evict] == [("t", "NodeLost")]


def test_a_terminating_pod_on_a_healthy_node_is_left_to_its_kubelet():
    doomed = pod("t", deletionTimestamp=format_time(T0), deletionGracePeriodSeconds=0)
    assert plan_node(node(), Health(probed_at=T0), [doomed], T0 + timedelta(seconds=10), SETTINGS).evict == []


@given(first=st.dictionaries(st.sampled_from(["uid-a", "uid-b"]), st.floats(0, 100).map(lambda s: T0 + timedelta(seconds=s))), age=st.floats(0, 200))
def test_orphans_go_only_after_the_quarantine(first, age):
    now = T0 + timedelta(seconds=age)
    evict, requeue = plan_orphans([pod("a"), pod("b")], first, now, SETTINGS)
    for ev in evict:
        seen = first.get(ev.pod.metadata.uid or "", now)
        assert now - seen >= timedelta(seconds=40)
    assert len(evict) == 2 or requeue is not None


@given(t=tolerations, taint=taints)
@hsettings(max_examples=200)
def test_tolerates_matches_kubernetes(t, taint):
    expected = (not t.effect or t.effect == taint.effect) and (not t.key or t.key == taint.key) and (
        t.operator == "Exists" or t.value == taint.value
    )
    assert tolerates(t, taint) == expected
