"""The Deployment controller's pure planning, driven through whole rollouts in a small model of
the rest of the cluster: a ReplicaSet controller that creates and deletes pods to match each
ReplicaSet (deleting pods that are not available first), and pods that become available at
random moments. Properties: a rolling update stays within replicas + maxSurge pods and never
below replicas - maxUnavailable available ones; Recreate never runs old and new pods together;
scaling mid-rollout keeps the sum right; every rollout finishes on the new template."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from schemas.apps import Deployment, DeploymentSpec, DeploymentStrategy, ReplicaSet, RollingUpdateDeployment
from schemas.meta import LabelSelector, ObjectMeta, OwnerReference
from schemas.pod import Container, Pod, PodCondition, PodSpec, PodStatus, PodTemplateSpec
from services.deployment import reconcile as rc

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def template(image: str) -> PodTemplateSpec:
    return PodTemplateSpec(metadata=ObjectMeta(labels={"app": "web"}),
                           spec=PodSpec(containers=[Container(name="c", image=image)]))


def deployment(replicas: int, surge: int | str = "25%", unavailable: int | str = "25%", *,
               recreate: bool = False, image: str = "img:1", history: int = 10) -> Deployment:
    strategy = (DeploymentStrategy(type="Recreate") if recreate else
                DeploymentStrategy(rollingUpdate=RollingUpdateDeployment(maxSurge=surge, maxUnavailable=unavailable)))
    return Deployment(
        metadata=ObjectMeta(name="web", namespace="default", uid="d-uid", generation=1, resourceVersion="1"),
        spec=DeploymentSpec(replicas=replicas, selector=LabelSelector(matchLabels={"app": "web"}),
                            template=template(image), strategy=strategy, revisionHistoryLimit=history,
                            progressDeadlineSeconds=600),
    )


class Cluster:
    """The store plus a model ReplicaSet controller and pods."""

    def __init__(self, d: Deployment) -> None:
        self.d = d
        self.rss: dict[str, ReplicaSet] = {}
        self.pods: list[Pod] = []
        self.now = T0
        self.seq = itertools.count(1)

    def step(self) -> rc.Plan:
        self.now += dt.timedelta(seconds=1)
        plan = rc.reconcile(self.d, list(self.rss.values()), self.pods, self.now)
        if plan.create is not None:
            n = next(self.seq)
            meta = replace(plan.create.metadata, uid=f"rs-{n}", generation=1, resourceVersion="1",
                           creationTimestamp=(T0 + dt.timedelta(seconds=n)).isoformat())
            assert meta.name not in self.rss
            self.rss[meta.name] = replace(plan.create, metadata=meta)
        for rs in plan.updates:
            cur = self.rss[rs.metadata.name]
            gen = (cur.metadata.generation or 1) + (rs.spec != cur.spec)
            self.rss[rs.metadata.name] = replace(rs, metadata=replace(rs.metadata, generation=gen))
        for rs in plan.deletes:
            del self.rss[rs.metadata.name]
        if plan.deployment is not None:
            self.d = plan.deployment
        return plan

    def pods_of(self, rs: ReplicaSet) -> list[Pod]:
        return [p for p in self.pods if p.metadata.ownerReferences[0].uid == rs.metadata.uid]

    def replicaset_controller(self, ready: set[int], drop_terminating: bool = True, skip: frozenset[int] = frozenset()) -> None:
        """Match pod counts to specs (new pods not ready; unavailable pods deleted first), mark
        the pods at positions ``ready`` Ready, and report statuses."""
        if drop_terminating:
            self.pods = [p for p in self.pods if not p.metadata.deletionTimestamp]
        for n, rs in enumerate(self.rss.values()):
            if n in skip:  # this ReplicaSet's controller has not caught up yet
                continue
            active = [p for p in self.pods_of(rs) if not p.metadata.deletionTimestamp]
            for _ in range(rs.spec.replicas - len(active)):
                n = next(self.seq)
                ref = OwnerReference(apiVersion="apps/v1", kind="ReplicaSet", name=rs.metadata.name,
                                     uid=rs.metadata.uid or "", controller=True)
                self.pods.append(Pod(metadata=ObjectMeta(name=f"p{n}", ownerReferences=[ref]),
                                     status=PodStatus(phase="Running")))
            extra = len(active) - rs.spec.replicas
            if extra > 0:
                doomed = {p.metadata.name for p in sorted(active, key=rc_is_ready)[:extra]}
                self.pods = [replace(p, metadata=replace(p.metadata, deletionTimestamp="x"))
                             if p.metadata.name in doomed else p for p in self.pods]
        stamp = self.now.isoformat()
        cond = PodCondition(type="Ready", status="True", lastTransitionTime=stamp)
        self.pods = [replace(p, status=replace(p.status, conditions=[cond]))
                     if i in ready and not p.metadata.deletionTimestamp else p for i, p in enumerate(self.pods)]
        for name, rs in list(self.rss.items()):
            active = [p for p in self.pods_of(rs) if not p.metadata.deletionTimestamp]
            status = replace(rs.status, replicas=len(active), availableReplicas=sum(map(rc_is_ready, active)),
                             observedGeneration=rs.metadata.generation)
            self.rss[name] = replace(rs, status=status)

    def active(self) -> list[Pod]:
        return [p for p in self.pods if not p.metadata.deletionTimestamp]

    def available(self) -> int:
        return sum(map(rc_is_ready, self.active()))

    def new_rs(self) -> ReplicaSet | None:
        return rc.find_new(self.d, list(self.rss.values()))


def rc_is_ready(p: Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in p.status.conditions)


def settle(c: Cluster, steps: int = 200) -> None:
    for _ in range(steps):
        c.step()
        c.replicaset_controller(set(range(len(c.pods))))
    assert rc.complete(c.d, c.d.status), c.d.status


def roll_to(c: Cluster, image: str) -> None:
    c.d = replace(c.d, spec=replace(c.d.spec, template=template(image)),
                  metadata=replace(c.d.metadata, generation=(c.d.metadata.generation or 1) + 1))


percent_or_int = st.one_of(st.integers(0, 4), st.sampled_from(["0%", "10%", "25%", "50%", "100%"]))
ready_sets = st.lists(st.sets(st.integers(0, 30), max_size=6), min_size=1, max_size=80)
lags = st.lists(st.frozensets(st.integers(0, 2), max_size=2), max_size=80)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(replicas=st.integers(1, 8), surge=percent_or_int, unavailable=percent_or_int, readiness=ready_sets,
       lag=lags)
def test_rolling_update_stays_within_surge_and_unavailable_budgets(replicas, surge, unavailable, readiness, lag):
    d = deployment(replicas, surge, unavailable)
    max_surge, max_unav = rc.surge_and_unavailable(d)
    c = Cluster(d)
    settle(c)
    roll_to(c, "img:2")
    for i, ready in enumerate(readiness):
        c.step()
        assert sum(r.spec.replicas for r in c.rss.values()) <= replicas + max_surge
        c.replicaset_controller(ready, skip=lag[i] if i < len(lag) else frozenset())
        assert len(c.active()) <= replicas + max_surge
        assert c.available() >= replicas - max_unav
    settle(c)
    new = c.new_rs()
    assert new is not None and new.spec.template.spec.containers[0].image == "img:2"
    assert new.spec.replicas == replicas and all(r.spec.replicas == 0 for r in c.rss.values() if r is not new)
    assert c.d.metadata.annotations[rc.REVISION] == "2" == new.metadata.annotations[rc.REVISION]
    progressing = next(x for x in c.d.status.conditions if x.type == "Progressing")
    assert progressing.reason == "NewReplicaSetAvailable"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(replicas=st.integers(1, 6), readiness=ready_sets)
def test_recreate_never_runs_old_and_new_pods_together(replicas, readiness):
    c = Cluster(deployment(replicas, recreate=True))
    settle(c)
    old_uids = {r.metadata.uid for r in c.rss.values()}
    roll_to(c, "img:2")
    for i, ready in enumerate(readiness):
        c.step()
        c.replicaset_controller(ready, drop_terminating=i % 3 == 2)  # terminating pods linger
        owners = {p.metadata.ownerReferences[0].uid for p in c.pods}
        assert not (owners & old_uids and owners - old_uids), "old and new pods ran together"
    settle(c)
    assert len(c.active()) == replicas


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(replicas=st.integers(1, 10), later=st.integers(0, 20), readiness=ready_sets, at=st.integers(0, 10))
def test_scaling_in_the_middle_of_a_rollout_keeps_the_sum_right(replicas, later, readiness, at):
    c = Cluster(deployment(replicas, "25%", "25%"))
    settle(c)
    roll_to(c, "img:2")
    for i, ready in enumerate(readiness):
        if i == at:
            c.d = replace(c.d, spec=replace(c.d.spec, replicas=later))
        c.step()
        c.replicaset_controller(ready)
        max_surge, _ = rc.surge_and_unavailable(c.d)
        if i >= at and not rc.is_scaling_event(c.d, c.rss.values()):
            assert sum(r.spec.replicas for r in c.rss.values()) <= c.d.spec.replicas + max_surge
    settle(c, 300)
    assert len(c.active()) == c.d.spec.replicas


@given(sizes=st.lists(st.integers(0, 30), min_size=2, max_size=5), replicas=st.integers(0, 60))
def test_proportional_sizes_sum_to_replicas_plus_surge(sizes, replicas):
    d = deployment(replicas, "25%", "25%")
    rss = [ReplicaSet(metadata=ObjectMeta(name=f"rs{i}", creationTimestamp=f"2026-01-0{i + 1}T00:00:00Z",
                                          annotations={rc.MAX_REPLICAS: str(max(1, sum(sizes)))}),
                      spec=replace(ReplicaSet().spec, replicas=n)) for i, n in enumerate(sizes)]
    out = rc.proportional_sizes(d, rss, sum(sizes))
    surge, _ = rc.surge_and_unavailable(d)
    assert all(v >= 0 for v in out.values())
    if any(sizes):
        assert sum(out.values()) == (replicas + surge if replicas else 0)


@pytest.mark.parametrize(
    ("surge", "unavailable", "replicas", "want"),
    [
        pytest.param("25%", "25%", 10, (3, 2), id="surge-rounds-up-unavailable-down"),
        pytest.param(0, 0, 3, (0, 1), id="both-zero-allows-one"),
        pytest.param("0%", "10%", 5, (0, 1), id="zero-percent-surge-both-zero-after-rounding"),
        pytest.param(2, "50%", 3, (2, 1), id="int-and-percent"),
    ],
)
def test_budgets_round_as_kubernetes(surge, unavailable, replicas, want):
    assert rc.surge_and_unavailable(deployment(replicas, surge, unavailable)) == want


def test_one_replicaset_per_template_with_the_hash_in_labels_and_selector():
    c = Cluster(deployment(3))
    settle(c)
    (rs,) = c.rss.values()
    h = rs.metadata.labels["pod-template-hash"]
    assert rs.metadata.name == f"web-{h}"
    assert rs.spec.selector.matchLabels == {"app": "web", "pod-template-hash": h}
    assert rs.spec.template.metadata.labels["pod-template-hash"] == h
    assert rs.metadata.ownerReferences[0].uid == "d-uid" and rs.metadata.ownerReferences[0].controller
    assert rc.template_hash(template("img:1")) == h != rc.template_hash(template("img:1"), 1)
    assert set(h) <= set("bcdfghjklmnpqrstvwxz2456789")


def test_history_beyond_the_limit_is_deleted_and_undo_reuses_the_old_replicaset():
    c = Cluster(deployment(2, history=2))
    settle(c)
    for image in ("img:2", "img:3", "img:4"):
        roll_to(c, image)
        settle(c)
    revisions = sorted(rc.revision_of(r) for r in c.rss.values())
    assert revisions == [2, 3, 4]  # the new one and two old ones; revision 1 was deleted
    roll_to(c, "img:3")  # what `kyb rollout undo` does: the old template comes back
    settle(c)
    assert len(c.rss) == 3 and c.d.metadata.annotations[rc.REVISION] == "5"
    assert rc.revision_of(c.new_rs()) == 5 and c.new_rs().spec.template.spec.containers[0].image == "img:3"


def test_paused_deployment_scales_but_does_not_roll():
    c = Cluster(deployment(2))
    settle(c)
    c.d = replace(c.d, spec=replace(c.d.spec, paused=True, template=template("img:2"), replicas=4))
    for _ in range(20):
        c.step()
        c.replicaset_controller(set(range(len(c.pods))))
    assert len(c.rss) == 1 and len(c.active()) == 4
    cond = next(x for x in c.d.status.conditions if x.type == "Progressing")
    assert (cond.status, cond.reason) == ("Unknown", "DeploymentPaused")
    c.d = replace(c.d, spec=replace(c.d.spec, paused=False))
    settle(c)
    assert c.new_rs().spec.template.spec.containers[0].image == "img:2" and len(c.active()) == 4


def test_stuck_rollout_reports_progress_deadline_exceeded():
    c = Cluster(replace(deployment(2), spec=replace(deployment(2).spec, progressDeadlineSeconds=5)))
    settle(c)
    roll_to(c, "bad:1")
    for _ in range(12):
        c.step()
        c.replicaset_controller(set())  # new pods never become ready
    cond = next(x for x in c.d.status.conditions if x.type == "Progressing")
    assert (cond.status, cond.reason) == ("False", "ProgressDeadlineExceeded")
    assert c.available() >= 2 - rc.max_unavailable(c.d)


def test_min_ready_seconds_delays_availability_and_asks_to_look_again():
    d = replace(deployment(1), spec=replace(deployment(1).spec, minReadySeconds=30))
    c = Cluster(d)
    c.step()
    c.replicaset_controller({0})
    plan = c.step()
    assert c.d.status.availableReplicas == 0 and c.d.status.readyReplicas == 1
    assert plan.requeue_after is not None and 28 <= plan.requeue_after <= 31
