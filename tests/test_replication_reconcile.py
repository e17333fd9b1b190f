"""Properties of the replication controller's pure logic: no over-creation under watch lag,
scale-down order, adoption and release against the selector, slow start and status counts."""

from __future__ import annotations

import datetime as _dt

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kyb.expectations import Expectations
from schemas.apps import ReplicaSet
from schemas.core import ReplicationController
from schemas.helpers import controller_of, format_time
from schemas.meta import OwnerReference
from schemas.pod import Pod
from services.replication.reconcile import (
    Owner,
    claims,
    deletion_rank,
    pod_from_template,
    pods_to_delete,
    reconcile,
    slow_start_batches,
)
from services.replication.service import EXPECTATIONS_TTL

NOW = _dt.datetime(2025, 1, 1, 12, 0, 0, tzinfo=_dt.UTC)
KEY = "ReplicaSet/default.web"


def rs(
    replicas: int, *, uid: str = "rs-uid", match: dict[str, str] | None = None, min_ready: int = 0
) -> ReplicaSet:
    match = match if match is not None else {"app": "web"}
    return msgspec.convert(
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "web", "namespace": "default", "uid": uid, "generation": 3},
            "spec": {
                "replicas": replicas,
                "minReadySeconds": min_ready,
                "selector": {"matchLabels": match},
                "template": {
                    "metadata": {"labels": {"app": "web", "tier": "fe"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        },
        ReplicaSet,
    )


def make_pod(
    name: str,
    *,
    owner_uid: str | None = "rs-uid",
    labels: dict[str, str] | None = None,
    node: str = "",
    phase: str = "Pending",
    ready: bool = False,
    ready_since: int = 0,
    restarts: int = 0,
    created: int = 0,
    terminating: bool = False,
) -> Pod:
    refs = []
    if owner_uid is not None:
        refs = [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "web",
                "uid": owner_uid,
                "controller": True,
            }
        ]
    meta = {
        "name": name,
        "namespace": "default",
        "labels": labels if labels is not None else {"app": "web", "tier": "fe"},
        "ownerReferences": refs,
        "creationTimestamp": format_time(NOW - _dt.timedelta(seconds=1000 - created)),
    }
    if terminating:
        meta["deletionTimestamp"] = format_time(NOW)
    conditions = []
    if ready:
        conditions = [
            {
                "type": "Ready",
                "status": "True",
                "lastTransitionTime": format_time(NOW - _dt.timedelta(seconds=500 - ready_since)),
            }
        ]
    return msgspec.convert(
        {
            "metadata": meta,
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
            "status": {
                "phase": phase,
                "conditions": conditions,
                "containerStatuses": [{"name": "c", "restartCount": restarts}],
            },
        },
        Pod,
    )


# -- no over-creation under watch lag ---------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    replicas=st.integers(0, 25),
    initial=st.integers(0, 25),
    steps=st.lists(st.tuples(st.sampled_from(["reconcile", "observe"]), st.integers(1, 10)), max_size=60),
)
def test_never_more_pods_than_replicas_however_late_the_watch(replicas, initial, steps):
    """The controller only sees pods once its (lagging) watch delivers them; expectations keep
    it from acting on a stale count, so the live pods never exceed what it started from or replicas."""
    actual: dict[str, Pod] = {}
    observed: dict[str, Pod] = {}
    in_flight: list[tuple[str, str]] = []  # ("add" | "del", name) not yet seen by the watch
    for i in range(initial):
        p = make_pod(f"init-{i}", phase="Running", node="n", ready=True, created=i)
        actual[p.metadata.name] = observed[p.metadata.name] = p
    exp = Expectations(EXPECTATIONS_TTL)
    owner = rs(replicas)
    seq = 0
    bound = max(replicas, initial)

    def live() -> int:
        return sum(1 for p in actual.values() if p.metadata.deletionTimestamp is None)

    def step(kind: str, n: int) -> None:
        nonlocal seq
        if kind == "reconcile":
            plan = reconcile(owner, list(observed.values()), exp.satisfied(KEY, NOW.timestamp()), NOW)
            if plan.create:
                exp.expect(KEY, NOW.timestamp(), adds=plan.create)
                for _ in range(plan.create):
                    seq += 1
                    p = msgspec.structs.replace(
                        pod_from_template(Owner.of(owner), NOW),
                        metadata=msgspec.structs.replace(
                            pod_from_template(Owner.of(owner), NOW).metadata, name=f"new-{seq}", uid=f"u{seq}"
                        ),
                    )
                    actual[p.metadata.name] = p
                    in_flight.append(("add", p.metadata.name))
            if plan.delete:
                exp.expect(KEY, NOW.timestamp(), deleting=plan.delete)
                for name in plan.delete:
                    p = actual[name]
                    actual[name] = msgspec.structs.replace(
                        p, metadata=msgspec.structs.replace(p.metadata, deletionTimestamp=format_time(NOW))
                    )
                    in_flight.append(("del", name))
        else:
            for verb, name in in_flight[:n]:
                observed[name] = actual[name]
                if verb == "add":
                    exp.creation_observed(KEY)
                else:
                    exp.deletion_observed(KEY, name)
            del in_flight[:n]

    for kind, n in steps:
        step(kind, n)
        assert live() <= bound
    # Let the watch catch up and the controller settle: exactly `replicas` live pods.
    for _ in range(6):
        step("observe", 10_000)
        step("reconcile", 0)
        assert live() <= bound
    step("observe", 10_000)
    assert live() == replicas


# -- scale-down order -------------------------------------------------------------------------

pod_shapes = st.lists(
    st.fixed_dictionaries(
        {
            "node": st.sampled_from(["", "n1"]),
            "phase": st.sampled_from(["Pending", "Unknown", "Running"]),
            "ready": st.booleans(),
            "ready_since": st.integers(0, 100),
            "restarts": st.integers(0, 3),
            "created": st.integers(0, 100),
        }
    ),
    min_size=1,
    max_size=15,
)


@settings(max_examples=200, deadline=None)
@given(shapes=pod_shapes, data=st.data())
def test_scale_down_removes_the_least_valuable_pods_first(shapes, data):
    pods = [make_pod(f"p{i}", **s) for i, s in enumerate(shapes)]
    count = data.draw(st.integers(0, len(pods)))
    doomed = set(pods_to_delete(pods, count))
    assert len(doomed) == count
    gone = [p for p in pods if p.metadata.name in doomed]
    kept = [p for p in pods if p.metadata.name not in doomed]
    rank = {"Pending": 0, "Unknown": 1, "Running": 2}
    for d in gone:
        for k in kept:
            if not k.spec.nodeName:
                assert not d.spec.nodeName, "a scheduled pod went before an unscheduled one"
            if bool(k.spec.nodeName) == bool(d.spec.nodeName):
                assert rank[d.status.phase] <= rank[k.status.phase], "a running pod went before a pending one"
                if d.status.phase == k.status.phase and _ready(k) != _ready(d):
                    assert not _ready(d), "a ready pod went before a not-ready one"
            assert deletion_rank(d) <= deletion_rank(k)


def _ready(p: Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in p.status.conditions)


def test_among_equal_pods_the_newest_goes_first():
    pods = [make_pod(f"p{i}", node="n", phase="Running", ready=True, created=i) for i in range(5)]
    assert pods_to_delete(pods, 2) == ["p4", "p3"]


# -- adoption and release ---------------------------------------------------------------------

labels = st.dictionaries(
    st.sampled_from(["app", "tier", "env"]), st.sampled_from(["web", "db", "fe"]), max_size=3
)


@settings(max_examples=200, deadline=None)
@given(
    selector=st.dictionaries(
        st.sampled_from(["app", "tier"]), st.sampled_from(["web", "fe"]), min_size=1, max_size=2
    ),
    pods=st.lists(
        st.tuples(labels, st.sampled_from([None, "rs-uid", "other-uid"]), st.booleans()), max_size=12
    ),
    deleting=st.booleans(),
)
def test_adoption_and_release_follow_the_selector(selector, pods, deleting):
    owner_obj = rs(3, match=selector)
    if deleting:
        owner_obj = msgspec.structs.replace(
            owner_obj,
            metadata=msgspec.structs.replace(owner_obj.metadata, deletionTimestamp=format_time(NOW)),
        )
    owner = Owner.of(owner_obj)
    objs = [make_pod(f"p{i}", labels=lb, owner_uid=uid, terminating=t) for i, (lb, uid, t) in enumerate(pods)]
    owned, adopt, release = claims(owner, objs)
    by_name = {p.metadata.name: p for p in objs}

    def matches(p: Pod) -> bool:
        return all(p.metadata.labels.get(k) == v for k, v in selector.items())

    for name in adopt:
        p = by_name[name]
        assert (
            controller_of(p) is None and matches(p) and not deleting and p.metadata.deletionTimestamp is None
        )
    for name in release:
        p = by_name[name]
        assert controller_of(p).uid == "rs-uid" and not matches(p) and not deleting
    for p in owned:
        assert matches(p)
        ref = controller_of(p)
        assert ref is None or ref.uid == "rs-uid", "a pod of another controller was claimed"
    for p in objs:
        ref = controller_of(p)
        if ref is None and matches(p) and not deleting and p.metadata.deletionTimestamp is None:
            assert p.metadata.name in adopt
        if (
            ref is not None
            and ref.uid == "rs-uid"
            and not matches(p)
            and p.metadata.deletionTimestamp is None
            and not deleting
        ):
            assert p.metadata.name in release


def test_replication_controller_selector_defaults_to_template_labels():
    rc = msgspec.convert(
        {
            "apiVersion": "v1",
            "kind": "ReplicationController",
            "metadata": {"name": "rc", "namespace": "default", "uid": "rc-uid"},
            "spec": {
                "replicas": 2,
                "template": {
                    "metadata": {"labels": {"app": "x"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]},
                },
            },
        },
        ReplicationController,
    )
    plan = reconcile(rc, [make_pod("orphan", owner_uid=None, labels={"app": "x"})], True, NOW)
    assert plan.adopt == ["orphan"] and plan.create == 1


# -- slow start, status, templates ------------------------------------------------------------


@given(st.integers(0, 2000))
def test_slow_start_batches_double_from_one(count):
    batches = slow_start_batches(count)
    assert sum(batches) == count
    if batches:
        assert batches[0] == 1
    for a, b in zip(batches, batches[1:], strict=False):
        assert b <= 2 * a


@settings(max_examples=100, deadline=None)
@given(shapes=pod_shapes, min_ready=st.integers(0, 600))
def test_status_counts_are_consistent(shapes, min_ready):
    pods = [make_pod(f"p{i}", **s) for i, s in enumerate(shapes)]
    plan = reconcile(rs(len(pods), min_ready=min_ready), pods, True, NOW)
    s = plan.status
    assert s is not None
    assert s.replicas == len(pods) == s.fullyLabeledReplicas
    assert s.readyReplicas == sum(_ready(p) for p in pods)
    assert s.availableReplicas <= s.readyReplicas
    assert s.observedGeneration == 3
    if s.readyReplicas > s.availableReplicas:
        assert plan.requeue_after is not None and plan.requeue_after > 0


@pytest.mark.parametrize(
    "pods, expected",
    [
        pytest.param([make_pod("a", terminating=True)], 3, id="terminating-not-counted"),
        pytest.param(
            [make_pod("a", phase="Failed"), make_pod("b", phase="Succeeded")], 3, id="finished-not-counted"
        ),
        pytest.param([make_pod(f"p{i}") for i in range(3)], 0, id="enough"),
    ],
)
def test_creates_replace_only_missing_live_pods(pods, expected):
    assert reconcile(rs(3), pods, True, NOW).create == expected


def test_nothing_is_created_or_deleted_while_expectations_are_pending():
    plan = reconcile(rs(3), [], False, NOW)
    assert plan.create == 0 and plan.delete == [] and plan.status is not None


def test_pod_from_template_is_controlled_and_named_after_the_owner():
    pod = pod_from_template(Owner.of(rs(1)), NOW)
    assert pod.metadata.generateName == "web-"
    assert pod.metadata.labels == {"app": "web", "tier": "fe"}
    ref = controller_of(pod)
    assert ref == OwnerReference(
        apiVersion="apps/v1",
        kind="ReplicaSet",
        name="web",
        uid="rs-uid",
        controller=True,
        blockOwnerDeletion=True,
    )


def test_expectations_expire():
    exp = Expectations(EXPECTATIONS_TTL)
    exp.expect(KEY, NOW.timestamp(), adds=2)
    assert not exp.satisfied(KEY, NOW.timestamp())
    assert exp.satisfied(KEY, (NOW + _dt.timedelta(minutes=6)).timestamp())


def test_replica_failure_condition_is_set_once_and_cleared():
    from services.replication.reconcile import with_replica_failure

    status = rs(3).status
    failed = with_replica_failure(status, "FailedCreate", "quota exceeded", NOW)
    [cond] = failed.conditions
    assert (cond.type, cond.status, cond.reason, cond.message) == (
        "ReplicaFailure",
        "True",
        "FailedCreate",
        "quota exceeded",
    )
    later = NOW + _dt.timedelta(minutes=1)
    assert with_replica_failure(failed, "FailedCreate", "again", later) is failed
    assert with_replica_failure(failed, None, "", later).conditions == []
    assert with_replica_failure(status, None, "", later) is status
