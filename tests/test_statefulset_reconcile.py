"""Properties of the pure StatefulSet plan over a simulated cluster: pods become Running and
Ready in any order, the set is scaled and its template changed, and the plan is applied."""

from __future__ import annotations

import datetime as dt

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from kyb import revisions
from schemas.apps import StatefulSet
from schemas.defaults import apply_defaults
from schemas.helpers import format_time
from schemas.pod import Pod, PodCondition, PodStatus
from services.statefulset import reconcile

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def statefulset(replicas: int, policy: str = "OrderedReady", start: int = 0, **spec) -> StatefulSet:
    raw = {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": "default", "uid": "sts-uid", "generation": 1},
        "spec": {"replicas": replicas, "podManagementPolicy": policy, "serviceName": "nginx",
                 "ordinals": {"start": start},
                 "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "img:1"}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "www"},
                                           "spec": {"accessModes": ["ReadWriteOnce"],
                                                    "resources": {"requests": {"storage": "1Gi"}}}}],
                 **spec},
    }
    return apply_defaults(msgspec.convert(raw, StatefulSet))


def ready(pod: Pod) -> Pod:
    cond = PodCondition(type="Ready", status="True", lastTransitionTime=format_time(T0))
    return replace(pod, metadata=replace(pod.metadata, uid=pod.metadata.name),
                   status=PodStatus(phase="Running", conditions=[cond]))


def history(sts: StatefulSet, revs: list) -> revisions.History:
    return revisions.history(sts, sts.spec.template, None, 10, revs)


class Sim:
    def __init__(self, sts: StatefulSet) -> None:
        self.sts = sts
        self.pods: dict[str, Pod] = {}
        self.claims: dict = {}
        self.revs: list = []

    def step(self) -> reconcile.Plan:
        hist = history(self.sts, self.revs)
        if hist.create is not None:
            self.revs.append(hist.create)
        plan = reconcile.plan(self.sts, list(self.pods.values()), self.claims, hist, T0)
        for c in plan.create_claims:
            self.claims[c.metadata.name] = c
        for p in plan.create:
            assert p.metadata.name not in self.pods
            self.pods[p.metadata.name] = p
        for n in plan.delete:
            self.pods.pop(n)
        self.sts = replace(self.sts, status=plan.status)
        return plan


def ordinal(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


@settings(max_examples=150, deadline=None)
@given(
    start=st.integers(0, 3),
    sizes=st.lists(st.integers(0, 6), min_size=1, max_size=4),
    readiness=st.lists(st.integers(0, 20), max_size=60),
)
def test_orderedready_never_has_pod_n_plus_1_before_pod_n_is_ready(start, sizes, readiness):
    sim = Sim(statefulset(sizes[0], start=start))
    moves = iter(readiness)
    for size in sizes:
        sim.sts = replace(sim.sts, spec=replace(sim.sts.spec, replicas=size))
        for _ in range(30):
            before = dict(sim.pods)
            plan = sim.step()
            assert len(plan.create) <= 1
            for p in plan.create:
                o = ordinal(p.metadata.name)
                lower = [before.get(f"web-{k}") for k in range(start, o)]
                assert all(q is not None and reconcile.running_and_ready(q) for q in lower), (o, sorted(before))
                # its claim comes with it, and the pod mounts it
                assert f"www-web-{o}" in sim.claims
            scale_down = [n for n in plan.delete if ordinal(n) >= start + size]
            assert len(scale_down) <= 1
            for n in scale_down:
                assert ordinal(n) == max(ordinal(m) for m in before)
                assert all(reconcile.running_and_ready(q) for q in before.values())
            k = next(moves, None)
            if k is not None and sim.pods:
                name = sorted(sim.pods)[k % len(sim.pods)]
                sim.pods[name] = ready(sim.pods[name])
            elif k is None:
                for name in list(sim.pods):
                    sim.pods[name] = ready(sim.pods[name])
        assert sorted(ordinal(n) for n in sim.pods) == list(range(start, start + size))
        assert sim.sts.status.replicas == size


@settings(max_examples=100, deadline=None)
@given(size=st.integers(1, 8), partition=st.integers(0, 9), max_unavailable=st.integers(1, 4),
       policy=st.sampled_from(["OrderedReady", "Parallel"]))
def test_rolling_update_highest_first_above_partition_within_max_unavailable(size, partition, max_unavailable, policy):
    sim = Sim(statefulset(size, policy))
    for _ in range(3 * size + 2):
        sim.step()
        sim.pods = {n: ready(p) for n, p in sim.pods.items()}
    old_rev = sim.sts.status.updateRevision
    tmpl = sim.sts.spec.template
    new_tmpl = replace(tmpl, spec=replace(tmpl.spec, containers=[replace(tmpl.spec.containers[0], image="img:2")]))
    strategy = replace(sim.sts.spec.updateStrategy, rollingUpdate=replace(
        sim.sts.spec.updateStrategy.rollingUpdate, partition=partition, maxUnavailable=max_unavailable))
    sim.sts = replace(sim.sts, spec=replace(sim.sts.spec, template=new_tmpl, updateStrategy=strategy))
    for _ in range(4 * size + 2):
        before = dict(sim.pods)
        plan = sim.step()
        updates = [n for n in plan.delete if n in before]
        assert all(ordinal(n) >= partition for n in updates)
        unhealthy = size - sum(1 for p in before.values() if reconcile.running_and_ready(p))
        assert len(updates) + unhealthy <= max(max_unavailable, unhealthy)
        old = sorted((ordinal(n) for n, p in before.items() if reconcile.revision_of(p) == old_rev), reverse=True)
        assert [ordinal(n) for n in updates] == old[: len(updates)]  # highest first
        sim.pods = {n: ready(p) for n, p in sim.pods.items()}
    images = {ordinal(n): p.spec.containers[0].image for n, p in sim.pods.items()}
    assert images == {o: ("img:1" if o < partition else "img:2") for o in range(size)}
    assert (sim.sts.status.currentRevision == sim.sts.status.updateRevision) == (partition == 0)


def test_pod_identity_and_claims():
    sts = statefulset(2)
    hist = history(sts, [])
    plan = reconcile.plan(sts, [], {}, hist, T0)
    (pod,) = plan.create
    assert pod.metadata.name == "web-0"
    assert (pod.spec.hostname, pod.spec.subdomain) == ("web-0", "nginx")
    assert pod.metadata.labels["controller-revision-hash"] == hist.current
    assert [c.metadata.name for c in plan.create_claims] == ["www-web-0"]
    assert plan.create_claims[0].metadata.ownerReferences == []  # whenDeleted: Retain


def test_parallel_creates_all_and_scales_down_all():
    sts = statefulset(5, "Parallel")
    sim = Sim(sts)
    plan = sim.step()
    assert sorted(p.metadata.name for p in plan.create) == [f"web-{i}" for i in range(5)]
    sim.sts = replace(sim.sts, spec=replace(sim.sts.spec, replicas=1))
    plan = sim.step()
    assert sorted(plan.delete) == ["web-1", "web-2", "web-3", "web-4"]
