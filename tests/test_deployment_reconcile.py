"""The Deployment controller's pure planning, driven through whole rollouts in a small model of
the rest of the cluster: a ReplicaSet controller that creates and deletes pods to match each
ReplicaSet (deleting pods that are not available first), and pods that become available at
random moments. Properties: a rolling update stays within replicas + maxSurge pods and never
below replicas - maxUnavailable available ones; Recreate never runs old and new pods together;
scaling mid-rollout keeps the sum right; every rollout finishes on the new template. Claims:
orphans are adopted and owned ReplicaSets released exactly by the selector, never one another
controller holds, nothing while the Deployment is being deleted."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from schemas.apps import (
    Deployment,
    DeploymentSpec,
    DeploymentStrategy,
    ReplicaSet,
    ReplicaSetSpec,
    RollingUpdateDeployment,
)
from schemas.meta import LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference
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


# -- claims: adoption and release ---------------------------------------------------------------

OWNERS = {"mine": "d-uid", "theirs": "other-uid"}


@st.composite
def namespace_replica_sets(draw) -> list[ReplicaSet]:
    """ReplicaSets of two namespaces: orphans, the Deployment's, another controller's; some with a
    non-controller reference too; some being deleted; labels around the selector."""
    out = []
    for i in range(draw(st.integers(0, 8))):
        labels = draw(st.dictionaries(st.sampled_from(["app", "tier"]), st.sampled_from(["web", "api", "front"])))
        owner = draw(st.sampled_from([None, "mine", "theirs"]))
        refs = []
        if draw(st.booleans()):
            refs.append(OwnerReference(apiVersion="v1", kind="ConfigMap", name="cm", uid="cm-uid"))
        if owner is not None:
            refs.append(OwnerReference(apiVersion="apps/v1", kind="Deployment", name=owner,
                                       uid=OWNERS[owner], controller=True))
        meta = ObjectMeta(name=f"rs{i}", namespace=draw(st.sampled_from(["default", "default", "other"])),
                          uid=f"rs-uid-{i}", resourceVersion="7", labels=labels, ownerReferences=refs,
                          deletionTimestamp="2026-01-01T00:00:00Z" if draw(st.booleans()) else None)
        out.append(ReplicaSet(metadata=meta))
    return out


selectors = st.sampled_from([
    LabelSelector(matchLabels={"app": "web"}),
    LabelSelector(matchLabels={"app": "web"},
                  matchExpressions=[LabelSelectorRequirement(key="tier", operator="In", values=["front"])]),
    LabelSelector(matchExpressions=[LabelSelectorRequirement(key="app", operator="NotIn", values=["api"])]),
])


def _selected(sel: LabelSelector, labels: dict[str, str]) -> bool:
    """The generated selectors, evaluated by hand (independently of schemas.selector)."""
    for k, v in sel.matchLabels.items():
        if labels.get(k) != v:
            return False
    for e in sel.matchExpressions:
        if e.operator == "In" and labels.get(e.key) not in e.values:
            return False
        if e.operator == "NotIn" and e.key in labels and labels[e.key] in e.values:
            return False
    return True


def _controller_uid(rs: ReplicaSet) -> str | None:
    return next((r.uid for r in rs.metadata.ownerReferences if r.controller), None)


def _claiming(sel: LabelSelector, deleting: bool) -> Deployment:
    d = deployment(2)
    meta = replace(d.metadata, deletionTimestamp="2026-01-01T00:00:00Z" if deleting else None)
    return replace(d, metadata=meta, spec=replace(d.spec, selector=sel))


@settings(max_examples=300, deadline=None)
@given(rss=namespace_replica_sets(), sel=selectors, deleting=st.booleans())
def test_claims_adopt_and_release_exactly_by_the_selector_and_never_touch_another_controllers(rss, sel, deleting):
    d = _claiming(sel, deleting)
    claims = rc.claim(d, rss)
    here = [r for r in rss if r.metadata.namespace == "default"]
    names = lambda xs: {r.metadata.name for r in xs}  # noqa: E731
    orphans = [r for r in here if _controller_uid(r) is None]
    mine = [r for r in here if _controller_uid(r) == "d-uid"]
    theirs = names(r for r in here if _controller_uid(r) == "other-uid")

    want_adopt = set() if deleting else names(
        r for r in orphans if not r.metadata.deletionTimestamp and _selected(sel, r.metadata.labels))
    want_release = set() if deleting else names(r for r in mine if not _selected(sel, r.metadata.labels))
    assert names(claims.adopt) == want_adopt
    assert names(claims.release) == want_release
    assert names(claims.owned) == names(r for r in mine if _selected(sel, r.metadata.labels)) | want_adopt
    assert not theirs & (names(claims.owned) | names(claims.adopt) | names(claims.release))
    # Every ReplicaSet of the namespace is either managed or its name is off limits; no other namespace's.
    assert sorted([*names(claims.owned), *claims.taken]) == sorted(names(here))
    for rs in claims.adopt:
        before = next(r for r in rss if r.metadata.name == rs.metadata.name)
        assert _controller_uid(rs) == "d-uid" and rs.metadata.resourceVersion == before.metadata.resourceVersion
        assert [r for r in rs.metadata.ownerReferences if not r.controller] == before.metadata.ownerReferences
    for rs in claims.release:
        before = next(r for r in rss if r.metadata.name == rs.metadata.name)
        assert _controller_uid(rs) is None
        assert rs.metadata.ownerReferences == [r for r in before.metadata.ownerReferences if not r.controller]


@settings(max_examples=200, deadline=None)
@given(rss=namespace_replica_sets(), sel=selectors)
def test_nothing_is_adopted_or_released_while_the_deployment_is_being_deleted(rss, sel):
    d = _claiming(sel, deleting=True)
    claims = rc.claim(d, rss)
    assert claims.adopt == [] and claims.release == []
    assert all(rc.adopted(r, d) is None and rc.released(r, d) is None for r in rss)
    assert all(_controller_uid(r) == "d-uid" for r in claims.owned)


@settings(max_examples=200, deadline=None)
@given(rss=namespace_replica_sets(), sel=selectors)
def test_claiming_again_after_the_writes_changes_nothing(rss, sel):
    d = _claiming(sel, deleting=False)
    first = rc.claim(d, rss)
    written = {r.metadata.name: r for r in [*first.adopt, *first.release]}
    again = rc.claim(d, [written.get(r.metadata.name, r) for r in rss])
    assert again.adopt == [] and again.release == []
    assert [r.metadata.name for r in again.owned] == [r.metadata.name for r in first.owned]


def test_a_name_held_by_a_replicaset_it_does_not_own_bumps_the_collision_count():
    d = deployment(2)
    name = f"web-{rc.template_hash(d.spec.template)}"
    plan = rc.reconcile(d, [], [], T0, taken=[name])
    assert plan.create is None
    assert plan.deployment is not None and plan.deployment.status.collisionCount == 1
    plan = rc.reconcile(plan.deployment, [], [], T0, taken=[name])
    assert plan.create is not None and plan.create.metadata.name not in (name, "")
    assert plan.create.metadata.labels["pod-template-hash"] == rc.template_hash(d.spec.template, 1)


def test_an_adopted_replicaset_with_the_deployments_template_is_the_new_one():
    d = deployment(3)
    orphan = ReplicaSet(metadata=ObjectMeta(name="legacy", namespace="default", uid="rs-1", resourceVersion="4",
                                            labels={"app": "web"}, creationTimestamp="2025-01-01T00:00:00Z"),
                        spec=ReplicaSetSpec(replicas=1, selector=LabelSelector(matchLabels={"app": "web"}),
                                            template=template("img:1")))
    claims = rc.claim(d, [orphan])
    plan = rc.reconcile(d, claims.owned, [], T0, taken=claims.taken)
    assert plan.create is None
    (rs,) = plan.updates
    assert rs.metadata.name == "legacy" and rs.spec.replicas == 3
    assert rs.metadata.annotations[rc.REVISION] == "1" and _controller_uid(rs) == "d-uid"
