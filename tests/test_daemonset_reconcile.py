"""Properties of the pure DaemonSet plan over a simulated cluster: nodes come and go, pods
become ready, the template changes, and a rolling update proceeds."""

from __future__ import annotations

import datetime as dt
import itertools

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from schemas.apps import DaemonSet
from schemas.core import Node
from schemas.defaults import apply_defaults
from schemas.helpers import format_time
from schemas.pod import Pod, PodCondition
from services.daemonset import reconcile
from services.daemonset.reconcile import HASH_LABEL, pinned_node, should_run

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def daemonset(strategy: dict | None = None, **podspec) -> DaemonSet:
    raw = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "default", "uid": "ds-uid", "generation": 1},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "c", "image": "agent:1"}], **podspec},
            },
            **({"updateStrategy": strategy} if strategy else {}),
        },
    }
    return apply_defaults(msgspec.convert(raw, DaemonSet))


def node(name: str, labels: dict | None = None, taints: list | None = None, unschedulable: bool = False) -> Node:
    return msgspec.convert(
        {
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "spec": {"taints": taints or [], "unschedulable": unschedulable},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        },
        Node,
    )


READY = [PodCondition(type="Ready", status="True", lastTransitionTime=format_time(T0))]


class World:
    def __init__(self, ds: DaemonSet, nodes: list[Node]) -> None:
        self.ds = ds
        self.nodes = {n.metadata.name: n for n in nodes}
        self.pods: dict[str, Pod] = {}
        self.seq = itertools.count()

    def live_on(self, node: str) -> list[Pod]:
        return [p for p in self.pods.values() if pinned_node(p) == node and p.metadata.deletionTimestamp is None]

    def unavailable(self) -> set[str]:
        return {
            n
            for n, obj in self.nodes.items()
            if should_run(self.ds, obj) and not any(p.status.conditions == READY for p in self.live_on(n))
        }

    def reconcile(self) -> reconcile.Plan:
        before = self.unavailable()
        p = reconcile.plan(self.ds, list(self.nodes.values()), list(self.pods.values()), T0)
        for name in p.delete:
            pod = self.pods[name]
            self.pods[name] = replace(pod, metadata=replace(pod.metadata, deletionTimestamp=format_time(T0)))
        ru = self.ds.spec.updateStrategy.rollingUpdate
        if self.ds.spec.updateStrategy.type == "RollingUpdate":
            max_unavailable = reconcile.scaled_int_or_percent(ru.maxUnavailable, len(self.nodes), True) or 1
            made = self.unavailable() - before
            assert len(self.unavailable()) <= max(max_unavailable, len(before)) or not made, (
                f"rolling update left {sorted(self.unavailable())} without an available pod"
            )
        for pod in p.create:
            target = pinned_node(pod)
            assert target in self.nodes and should_run(self.ds, self.nodes[target]), "pod for an ineligible node"
            n = next(self.seq)
            self.pods[f"p{n}"] = replace(pod, metadata=replace(pod.metadata, name=f"p{n}", uid=f"u{n}"))
        surge = reconcile.scaled_int_or_percent(ru.maxSurge, len(self.nodes), True) if ru else 0
        for n in self.nodes:
            live = self.live_on(n)
            assert len(live) <= (2 if surge else 1), f"{len(live)} pods on node {n}"
            assert sum(1 for q in live if reconcile.is_updated(q, self.ds, reconcile.template_hash(self.ds))) <= 1
        return p

    def kubelet(self, ready_count: int) -> None:
        """Terminating pods go; up to ``ready_count`` pending pods become ready."""
        for name, pod in list(self.pods.items()):
            if pod.metadata.deletionTimestamp:
                del self.pods[name]
        for name, pod in sorted(self.pods.items())[:ready_count]:
            self.pods[name] = replace(pod, status=replace(pod.status, phase="Running", conditions=READY))

    def roll(self, image: str) -> None:
        tmpl = self.ds.spec.template
        c = replace(tmpl.spec.containers[0], image=image)
        self.ds = replace(
            self.ds,
            metadata=replace(self.ds.metadata, generation=(self.ds.metadata.generation or 1) + 1),
            spec=replace(self.ds.spec, template=replace(tmpl, spec=replace(tmpl.spec, containers=[c]))),
        )


strategies = st.one_of(
    st.builds(lambda u: {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": u, "maxSurge": 0}}, st.sampled_from([1, 2, "50%"])),
    st.builds(lambda s: {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": s}}, st.sampled_from([1, 2, "100%"])),
)
acts = st.lists(
    st.one_of(
        st.tuples(st.just("reconcile"), st.none()),
        st.tuples(st.just("kubelet"), st.integers(0, 6)),
        st.tuples(st.just("roll"), st.integers(2, 4)),
        st.tuples(st.just("add"), st.integers(0, 9)),
        st.tuples(st.just("remove"), st.integers(0, 9)),
        st.tuples(st.just("label"), st.integers(0, 9)),
    ),
    max_size=50,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategy=strategies, n=st.integers(1, 6), actions=acts, selective=st.booleans())
def test_one_pod_per_node_and_rolling_update_keeps_availability(strategy, n, actions, selective):
    podspec = {"nodeSelector": {"role": "edge"}} if selective else {}
    labels = {"role": "edge"}
    w = World(daemonset(strategy, **podspec), [node(f"n{i}", labels) for i in range(n)])
    for kind, arg in actions:
        if kind == "reconcile":
            w.reconcile()
        elif kind == "kubelet":
            w.kubelet(arg)
        elif kind == "roll":
            w.roll(f"agent:{arg}")
        elif kind == "add":
            w.nodes.setdefault(f"n{arg}", node(f"n{arg}", labels))
        elif kind == "remove":
            w.nodes.pop(f"n{arg}", None)
        elif f"n{arg}" in w.nodes:  # the node stops matching the selector
            w.nodes[f"n{arg}"] = node(f"n{arg}", {})
    # converge: every eligible node ends with exactly one available pod of the current template
    for _ in range(60):
        w.reconcile()
        w.kubelet(100)
    h = reconcile.template_hash(w.ds)
    for name, obj in w.nodes.items():
        live = w.live_on(name)
        if should_run(w.ds, obj):
            assert len(live) == 1 and live[0].metadata.labels[HASH_LABEL] == h, f"node {name}: {live}"
        else:
            assert not live, f"pod left on ineligible node {name}"
    assert not [p for p in w.pods.values() if pinned_node(p) not in w.nodes]
    status = w.reconcile().status
    eligible = sum(1 for o in w.nodes.values() if should_run(w.ds, o))
    assert (status.desiredNumberScheduled, status.numberAvailable, status.updatedNumberScheduled) == (eligible,) * 3
    assert status.numberMisscheduled == 0 and status.numberUnavailable == 0


@pytest.mark.parametrize(
    ("taint", "tolerated"),
    [
        pytest.param({"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}, True, id="not-ready"),
        pytest.param({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}, True, id="unschedulable"),
        pytest.param({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}, False, id="foreign-noschedule"),
        pytest.param({"key": "dedicated", "value": "gpu", "effect": "PreferNoSchedule"}, True, id="prefer"),
    ],
)
def test_daemon_pods_tolerate_node_condition_taints(taint, tolerated):
    assert should_run(daemonset(), node("n", taints=[taint])) is tolerated


def test_template_tolerations_and_node_affinity_decide_eligibility():
    ds = daemonset(
        tolerations=[{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
        affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
    )
    gpu = [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]
    assert should_run(ds, node("n", {"zone": "a"}, gpu))
    assert not should_run(ds, node("n", {"zone": "b"}, gpu))


def test_new_pod_is_pinned_by_node_affinity_and_keeps_other_terms():
    ds = daemonset(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}})
    pod = reconcile.new_pod(ds, "n7", reconcile.template_hash(ds))
    (term,) = pod.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms
    assert [(r.key, r.operator, r.values) for r in term.matchFields] == [("metadata.name", "In", ["n7"])]
    assert term.matchExpressions[0].key == "zone"
    assert not pod.spec.nodeName, "the scheduler binds daemon pods"
    assert {t.key for t in pod.spec.tolerations} >= {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
    assert pod.metadata.labels["pod-template-generation"] == "1"


def test_on_delete_replaces_only_deleted_pods():
    w = World(daemonset({"type": "OnDelete"}), [node("a"), node("b")])
    w.reconcile()
    w.kubelet(10)
    w.roll("agent:2")
    assert not w.reconcile().delete, "OnDelete must not delete old pods"
    victim = next(iter(w.pods))
    w.pods[victim] = replace(w.pods[victim], metadata=replace(w.pods[victim].metadata, deletionTimestamp=format_time(T0)))
    w.kubelet(10)
    p = w.reconcile()
    assert len(p.create) == 1 and p.status.updatedNumberScheduled == 0
    w.kubelet(10)
    assert w.reconcile().status.updatedNumberScheduled == 1


# --- history: ControllerRevisions ----------------------------------------------------------------


def with_image(ds: DaemonSet, image: str, limit: int) -> DaemonSet:
    spec = ds.spec
    containers = [replace(spec.template.spec.containers[0], image=image)]
    template = replace(spec.template, spec=replace(spec.template.spec, containers=containers))
    return replace(ds, spec=replace(spec, template=template, revisionHistoryLimit=limit))


def pod_of(hash_: str, name: str) -> Pod:
    return msgspec.convert({"metadata": {"name": name, "labels": {"app": "agent", HASH_LABEL: hash_}}}, Pod)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(st.tuples(st.sampled_from("abcdef"), st.sets(st.integers(0, 5), max_size=3)), min_size=1, max_size=12),
    limit=st.integers(0, 3),
)
def test_history_keeps_one_revision_per_template_the_current_highest_trimmed_but_never_one_a_pod_runs(steps, limit):
    base = daemonset()
    revisions: dict[str, reconcile.ControllerRevision] = {}
    for image, running in steps:
        ds = with_image(base, f"agent:{image}", limit)
        # pods still running some earlier revisions (by index into what exists now)
        existing = sorted(revisions.values(), key=lambda r: r.revision)
        live_hashes = {existing[i].metadata.labels[HASH_LABEL] for i in running if i < len(existing)}
        pods = [pod_of(h, f"p{i}") for i, h in enumerate(sorted(live_hashes))]
        h = reconcile.history(ds, list(revisions.values()), pods)
        assert set(h.delete) <= set(revisions)
        for name in h.delete:
            assert revisions[name].metadata.labels[HASH_LABEL] not in live_hashes or reconcile.matches(revisions[name], ds)
            del revisions[name]
        if h.create is not None:
            assert h.create.metadata.name not in revisions
            revisions[h.create.metadata.name] = h.create
        if h.renumber is not None:
            revisions[h.renumber.metadata.name] = h.renumber
        current = [r for r in revisions.values() if reconcile.matches(r, ds)]
        assert len(current) == 1, "exactly one revision holds the current template"
        (cur,) = current
        assert cur.metadata.labels[HASH_LABEL] == h.current_hash
        assert cur.metadata.name == f"agent-{h.current_hash}"
        assert cur.metadata.ownerReferences[0].uid == "ds-uid" and cur.metadata.ownerReferences[0].controller
        assert all(r.revision < cur.revision for r in revisions.values() if r is not cur), "current is highest"
        templates = [msgspec.json.encode(reconcile.revision_template(r)) for r in revisions.values()]
        assert len(templates) == len(set(templates)), "one revision per distinct template"
        old = [r for r in revisions.values() if r is not cur]
        kept_for_pods = [r for r in old if r.metadata.labels[HASH_LABEL] in live_hashes]
        assert len(old) <= max(limit, len(kept_for_pods)), "history trimmed to the limit"
        assert all(r.metadata.name in revisions for r in kept_for_pods)
        # a revision a live pod runs is never deleted
        assert live_hashes <= {r.metadata.labels[HASH_LABEL] for r in revisions.values()}


def test_a_template_that_comes_back_is_renumbered_not_copied():
    a, b = with_image(daemonset(), "agent:a", 10), with_image(daemonset(), "agent:b", 10)
    first = reconcile.history(a, [], []).create
    second = reconcile.history(b, [first], []).create
    assert (first.revision, second.revision) == (1, 2)
    back = reconcile.history(a, [first, second], [])
    assert back.create is None and back.delete == []
    assert back.renumber is not None and back.renumber.metadata.name == first.metadata.name and back.renumber.revision == 3
    assert reconcile.revision_template(back.renumber) == a.spec.template
    assert back.current_hash == first.metadata.labels[HASH_LABEL]


def test_pods_are_placed_with_the_current_revisions_hash():
    ds = daemonset()
    p = reconcile.plan(ds, [node("n1")], [], T0, current_hash="fromhistory")
    assert [pod.metadata.labels[HASH_LABEL] for pod in p.create] == ["fromhistory"]
