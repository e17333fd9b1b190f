"""The scheduler's preemption decision (``services.scheduler.preemption``, kube-scheduler's
DefaultPreemption): eligibility, potential nodes, victims with reprieve and PodDisruptionBudgets,
the choice of node and the PostFilter messages; hypothesis properties over random clusters."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from schemas.selector import Requirement as LabelRequirement
from schemas.selector import Selector
from services.scheduler.plan import HostPort, NodeInfo, NodeTable, PodRequest, Taint, reasons_on
from services.scheduler.preemption import (
    NO_VICTIMS,
    NOT_ELIGIBLE_NEVER,
    NOT_ELIGIBLE_TERMINATING,
    NOT_HELPFUL,
    Budget,
    Candidate,
    Preemptor,
    Victim,
    num_candidates,
    pick,
    preempt,
    select_victims,
    split_by_budgets,
)

GiB = 1024**3


def cluster(nodes: dict[str, int], pods: Sequence[tuple[str, str, int, int]] = (), **node_kw: object
            ) -> tuple[NodeTable, dict[str, list[Victim]]]:
    """A table of nodes (name -> cpu millis) and pods (name, node, cpu millis, priority), the pods
    counted on their nodes; and the pods as preemption sees them, by node (start = their index)."""
    t = NodeTable()
    for name, cpu in nodes.items():
        t.set_node(NodeInfo(name=name, cpu=cpu, memory=64 * GiB, **node_kw))  # type: ignore[arg-type]
    by_node: dict[str, list[Victim]] = {}
    for i, (name, node, cpu, prio) in enumerate(pods):
        key = f"default.{name}"
        t.assume(PodRequest(key=key, cpu=cpu, namespace="default", labels=(("app", name),)), node)
        by_node.setdefault(node, []).append(
            Victim(key=key, name=name, namespace="default", uid=f"uid-{name}", priority=prio, start=float(i),
                   labels=(("app", name),)))
    return t, by_node


def preemptor(cpu: int, priority: int = 100, **kw: object) -> Preemptor:
    return Preemptor(request=PodRequest(key="default.p", cpu=cpu, namespace="default"), priority=priority, **kw)  # type: ignore[arg-type]


def names(c: Candidate | None) -> list[str]:
    assert c is not None
    return [v.name for v in c.victims]


def snapshot(t: NodeTable) -> tuple[object, ...]:
    return (t.req_cpu.copy(), t.req_mem.copy(), t.req_pods.copy(), sorted(t.pods), {k: v.copy() for k, v in t.owners.items()})


def same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in zip(a[:3], b[:3], strict=True)) and a[3] == b[3]


# ---- victims on one node ------------------------------------------------------------------


def test_the_least_important_pods_are_the_victims_and_the_rest_reprieved():
    t, by_node = cluster({"n1": 4000}, [("a0", "n1", 1000, 0), ("b0", "n1", 1000, 0), ("c10", "n1", 1000, 10),
                                        ("d10", "n1", 1000, 10)])
    before = snapshot(t)
    out = preempt(t, preemptor(2000), by_node)
    assert out.candidate is not None and out.candidate.node == "n1"
    # the priority-0 pods go; between equals the younger would go first, but both are needed
    assert sorted(names(out.candidate)) == ["a0", "b0"]
    assert same(snapshot(t), before)


def test_among_equal_priorities_the_youngest_goes():
    t, by_node = cluster({"n1": 3000}, [("old", "n1", 1000, 0), ("mid", "n1", 1000, 0), ("young", "n1", 1000, 0)])
    assert names(preempt(t, preemptor(1000), by_node).candidate) == ["young"]


def test_equal_or_higher_priority_is_never_a_victim():
    t, by_node = cluster({"n1": 2000}, [("same", "n1", 1000, 100), ("higher", "n1", 1000, 200)])
    out = preempt(t, preemptor(1000, priority=100), by_node)
    assert out.candidate is None and out.clear_nomination
    assert out.message == f"0/1 nodes are available: 1 {NO_VICTIMS}."


def test_a_node_where_even_every_victim_is_not_enough_says_what_is_short():
    t, by_node = cluster({"n1": 2000}, [("low", "n1", 500, 0), ("high", "n1", 1500, 200)])
    out = preempt(t, preemptor(1000), by_node)
    assert out.candidate is None and out.message == "0/1 nodes are available: 1 Insufficient cpu."


def test_never_waits_and_says_why():
    t, by_node = cluster({"n1": 1000}, [("low", "n1", 1000, 0)])
    out = preempt(t, preemptor(1000, policy="Never"), by_node)
    assert out.candidate is None and out.message == NOT_ELIGIBLE_NEVER and not out.clear_nomination


def test_victims_still_terminating_on_the_nominated_node_stop_a_second_preemption():
    t, by_node = cluster({"n1": 1000, "n2": 1000}, [("low", "n1", 1000, 0), ("other", "n2", 1000, 0)])
    by_node["n1"] = [Victim(key="default.low", name="low", namespace="default", priority=0, terminating=True, preempted=True)]
    out = preempt(t, preemptor(1000, nominated_node="n1"), by_node)
    assert out.candidate is None and out.message == NOT_ELIGIBLE_TERMINATING and not out.clear_nomination
    # A pod terminating for another reason does not hold the preemptor back.
    by_node["n1"] = [Victim(key="default.low", name="low", namespace="default", priority=0, terminating=True)]
    assert preempt(t, preemptor(1000, nominated_node="n1"), by_node).candidate is not None


def test_nodes_no_removal_can_help_are_not_candidates():
    t, by_node = cluster({"n1": 1000}, [("low", "n1", 1000, 0)])
    t.set_node(NodeInfo(name="tainted", cpu=8000, memory=GiB, taints=(Taint(key="k", value="v"),)))
    t.set_node(NodeInfo(name="cordoned", cpu=8000, memory=GiB, unschedulable=True))
    t.assume(PodRequest(key="default.x", cpu=100), "tainted")
    by_node["tainted"] = [Victim(key="default.x", name="x", namespace="default")]
    out = preempt(t, preemptor(1000), by_node)
    assert out.candidate is not None and out.candidate.node == "n1"
    t2, by2 = cluster({"n1": 1000}, [("high", "n1", 1000, 500)])
    t2.set_node(NodeInfo(name="tainted", cpu=8000, memory=GiB, taints=(Taint(key="k", value="v"),)))
    out = preempt(t2, preemptor(1000), by2)
    assert out.message == f"0/2 nodes are available: 1 {NO_VICTIMS}, 1 {NOT_HELPFUL}."


def test_a_victim_holding_the_host_port_is_the_one_evicted():
    t = NodeTable()
    t.set_node(NodeInfo(name="n1", cpu=8000, memory=GiB))
    t.assume(PodRequest(key="default.web", cpu=100, host_ports=(HostPort(port=80),)), "n1")
    t.assume(PodRequest(key="default.idle", cpu=100), "n1")
    by_node = {"n1": [Victim(key="default.web", name="web", namespace="default", start=1.0),
                      Victim(key="default.idle", name="idle", namespace="default", start=2.0)]}
    p = Preemptor(request=PodRequest(key="default.p", cpu=100, host_ports=(HostPort(port=80),)), priority=1)
    assert names(preempt(t, p, by_node).candidate) == ["web"]


@pytest.mark.parametrize(("max_skew", "want"), [pytest.param(1, ["web-a", "web-b"], id="skew-1"),
                                                  pytest.param(2, ["web-b"], id="skew-2")])
def test_topology_spread_counts_in_the_reprieve(max_skew, want):
    from schemas.selector import from_labels
    from services.scheduler.plan import SpreadConstraint

    t = NodeTable()
    t.set_node(NodeInfo(name="na", cpu=8000, memory=GiB, labels=(("zone", "a"),)))
    t.set_node(NodeInfo(name="nb", cpu=1000, memory=GiB, labels=(("zone", "b"),)))
    web = (("app", "web"),)
    t.assume(PodRequest(key="default.web-a", cpu=100, namespace="default", labels=web), "na")
    t.assume(PodRequest(key="default.web-b", cpu=100, namespace="default", labels=web), "na")
    t.assume(PodRequest(key="default.big", cpu=1000, namespace="default"), "nb")  # zone b full, not a victim
    by_node = {"na": [Victim(key=f"default.{n}", name=n, namespace="default", start=float(i), labels=web)
                      for i, n in enumerate(["web-a", "web-b"])],
               "nb": [Victim(key="default.big", name="big", namespace="default", priority=500)]}
    zone = SpreadConstraint(max_skew=max_skew, topology_key="zone", hard=True, selector=from_labels({"app": "web"}))
    p = Preemptor(request=PodRequest(key="default.p", cpu=500, namespace="default", labels=web, spread=(zone,)),
                  priority=100)
    assert all(reasons_on(t, p.request, t.index[n]) for n in ("na", "nb"))  # fits nowhere as things are
    out = preempt(t, p, by_node)
    assert out.candidate is not None and out.candidate.node == "na"
    assert names(out.candidate) == want  # skew 2 leaves room for one: the older is put back


def test_a_node_without_the_topology_key_is_not_helpful():
    from schemas.selector import from_labels
    from services.scheduler.plan import SpreadConstraint

    t, by_node = cluster({"n1": 1000}, [("low", "n1", 1000, 0)])
    zone = SpreadConstraint(max_skew=1, topology_key="zone", hard=True, selector=from_labels({"app": "web"}))
    p = Preemptor(request=PodRequest(key="default.p", cpu=500, namespace="default", spread=(zone,)), priority=100)
    out = preempt(t, p, by_node)
    assert out.candidate is None and out.message == f"0/1 nodes are available: 1 {NOT_HELPFUL}."


# ---- PodDisruptionBudgets -----------------------------------------------------------------


def budget(app: str, allowed: int, disrupted: frozenset[str] = frozenset()) -> Budget:
    return Budget(namespace="default", selector=Selector((LabelRequirement("app", "=", (app,)),)), allowed=allowed,
                  disrupted=disrupted)


def test_a_pod_a_budget_protects_is_spared_when_another_will_do():
    t, by_node = cluster({"n1": 2000}, [("guarded", "n1", 1000, 0), ("free", "n1", 1000, 0)])
    # Without the budget the younger ("free") goes anyway; make the guarded one the younger.
    t, by_node = cluster({"n1": 2000}, [("free", "n1", 1000, 0), ("guarded", "n1", 1000, 0)])
    assert names(preempt(t, preemptor(1000), by_node).candidate) == ["guarded"]
    out = preempt(t, preemptor(1000), by_node, [budget("guarded", 0)])
    assert names(out.candidate) == ["free"] and out.candidate is not None and out.candidate.pdb_violations == 0


def test_budgets_count_down_in_order_and_skip_pods_already_disrupted():
    vs = [Victim(key=f"default.{n}", name=n, namespace="default", labels=(("app", "web"),)) for n in ("a", "b", "c")]
    violating, fine = split_by_budgets(vs, [budget("web", 1)])
    assert [v.name for v in violating] == ["b", "c"] and [v.name for v in fine] == ["a"]
    violating, _ = split_by_budgets(vs, [budget("web", 1, frozenset({"a"}))])
    assert [v.name for v in violating] == ["c"]
    other_ns = Budget(namespace="other", selector=Selector(), allowed=0)
    assert split_by_budgets(vs, [other_ns]) == ([], vs)
    unlabelled = [Victim(key="default.x", name="x", namespace="default")]
    assert split_by_budgets(unlabelled, [Budget(namespace="default", selector=Selector(), allowed=0)]) == ([], unlabelled)


def test_a_node_without_budget_violations_wins_over_a_cheaper_one():
    t, by_node = cluster({"n1": 1000, "n2": 1000}, [("guarded", "n1", 1000, 0), ("pricier", "n2", 1000, 50)])
    out = preempt(t, preemptor(1000), by_node, [budget("guarded", 0)])
    assert out.candidate is not None and out.candidate.node == "n2"


# ---- choosing the node --------------------------------------------------------------------


def cand(node: str, *victims: tuple[int, float], violations: int = 0) -> Candidate:
    vs = tuple(Victim(key=f"{node}.{i}", name=f"{node}-{i}", namespace="default", priority=p, start=s)
               for i, (p, s) in enumerate(sorted(victims, key=lambda v: (-v[0], v[1]))))
    return Candidate(node=node, victims=vs, pdb_violations=violations)


@pytest.mark.parametrize(
    ("candidates", "want"),
    [
        pytest.param([cand("a", (0, 1), violations=1), cand("b", (50, 1))], "b", id="fewest-budget-violations"),
        pytest.param([cand("a", (5, 1)), cand("b", (1, 1), (1, 1))], "b", id="lowest-highest-priority"),
        pytest.param([cand("a", (5, 1), (4, 1)), cand("b", (5, 1), (1, 1))], "b", id="smallest-sum"),
        pytest.param([cand("a", (-5, 1), (-5, 1)), cand("b", (-5, 1))], "b", id="sum-of-negative-priorities"),
        pytest.param([cand("a", (5, 1), (0, 1)), cand("b", (5, 1))], "b", id="fewest-victims"),
        pytest.param([cand("a", (5, 1)), cand("b", (5, 9))], "b", id="latest-start"),
        pytest.param([cand("a", (5, 3), (5, 9)), cand("b", (5, 2), (5, 20))], "a", id="latest-earliest-start"),
        pytest.param([cand("a", (5, 1)), cand("b", (5, 1))], "a", id="first-found"),
    ],
)
def test_the_node_is_picked_as_kube_scheduler_does(candidates, want):
    assert pick(candidates).node == want


def test_enough_candidates_stop_the_search():
    assert [num_candidates(n) for n in (1, 100, 999, 2000)] == [1, 100, 100, 200]


def test_select_victims_of_an_unknown_node_is_not_helpful():
    t, _ = cluster({"n1": 1000})
    assert select_victims(t, preemptor(1000), "gone", []) == [NOT_HELPFUL]


# ---- properties ---------------------------------------------------------------------------

pods_st = st.lists(st.tuples(st.integers(0, 2), st.integers(1, 8), st.integers(0, 4), st.booleans()), max_size=12)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=st.lists(st.integers(2, 10), min_size=1, max_size=3), pods=pods_st, cpu=st.integers(1, 10),
       priority=st.integers(0, 5), offset=st.integers(0, 5), guarded=st.integers(0, 2))
def test_victims_are_lower_priority_enough_and_none_can_be_spared(nodes, pods, cpu, priority, offset, guarded):
    names_ = [f"n{i}" for i in range(len(nodes))]
    placed = []
    room = dict(zip(names_, [c * 1000 for c in nodes], strict=True))
    for i, (n, c, prio, port) in enumerate(pods):
        node = names_[n % len(names_)]
        if room[node] >= c * 500:
            room[node] -= c * 500
            placed.append((f"p{i}", node, c * 500, prio, port))
    t = NodeTable()
    for name, c in zip(names_, nodes, strict=True):
        t.set_node(NodeInfo(name=name, cpu=c * 1000, memory=GiB))
    by_node: dict[str, list[Victim]] = {}
    for i, (name, node, c, prio, port) in enumerate(placed):
        ports = (HostPort(port=80),) if port else ()
        t.assume(PodRequest(key=name, cpu=c, host_ports=ports), node)
        by_node.setdefault(node, []).append(Victim(key=name, name=name, namespace="default", priority=prio,
                                                   start=float(i), labels=(("g", str(i % 3)),)))
    budgets = [Budget(namespace="default", selector=Selector((LabelRequirement("g", "=", (str(guarded),)),)), allowed=0)]
    p = Preemptor(request=PodRequest(key="incoming", cpu=cpu * 500, host_ports=(HostPort(port=80),)), priority=priority)
    assume(all(reasons_on(t, p.request, t.index[node]) for node in names_))  # it fits nowhere as things are
    before = snapshot(t)
    out = preempt(t, p, by_node, budgets, offset)
    assert same(snapshot(t), before)
    # a node where removing every lower-priority pod lets the pod fit exists exactly when there is a candidate
    helps = []
    for node in names_:
        lower = [v for v in by_node.get(node, []) if v.priority < priority]
        taken = [(v.key, t.forget(v.key)) for v in lower]
        if lower and not reasons_on(t, p.request, t.index[node]):
            helps.append(node)
        for key, b in taken:
            assert b is not None
            t.restore(key, b)
    assert (out.candidate is not None) == bool(helps)
    if out.candidate is None:
        return
    c = out.candidate
    assert c.victims and all(v.priority < priority for v in c.victims)
    row = t.index[c.node]
    taken = [(v.key, t.forget(v.key)) for v in c.victims]
    assert reasons_on(t, p.request, row) == []  # the pod fits once the victims are gone
    for key, b in taken:  # and putting any one victim back leaves no room again
        assert b is not None
        t.restore(key, b)
        assert reasons_on(t, p.request, row) != []
        t.forget(key)
    for key, b in taken:
        assert b is not None
        t.restore(key, b)
    assert same(snapshot(t), before)


# ---- from API objects -----------------------------------------------------------------------


def test_pods_and_budgets_as_preemption_reads_them():
    import msgspec

    from schemas.pod import Pod
    from schemas.policy import PodDisruptionBudget
    from services.scheduler.podinfo import budget, pod_request, preemptor, victim

    pod = msgspec.convert({"metadata": {"name": "v", "namespace": "ns", "uid": "u1", "labels": {"app": "a"},
                                        "deletionTimestamp": "2026-01-01T00:00:00Z"},
                           "spec": {"priority": 7, "containers": []},
                           "status": {"startTime": "2026-01-01T00:00:10Z", "nominatedNodeName": "n9", "conditions": [
                               {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}]}}, Pod)
    v = victim(pod, "ns.v", now=1.0)
    assert (v.priority, v.uid, v.terminating, v.preempted, v.labels) == (7, "u1", True, True, (("app", "a"),))
    assert v.start == 1767225610.0
    assert victim(msgspec.structs.replace(pod, status=msgspec.structs.replace(pod.status, startTime=None)), "k", 5.0).start == 5.0
    p = preemptor(pod, pod_request(pod, "ns.v"))
    assert (p.priority, p.policy, p.nominated_node) == (7, "PreemptLowerPriority", "n9")

    def pdb(selector: object) -> PodDisruptionBudget:
        return msgspec.convert({"metadata": {"name": "b", "namespace": "ns"}, "spec": {"selector": selector},
                                "status": {"disruptionsAllowed": 2, "disruptedPods": {"x": "2026-01-01T00:00:00Z"}}},
                               PodDisruptionBudget)

    b = budget(pdb({"matchLabels": {"app": "a"}}))
    assert b.selector.matches({"app": "a"}) and (b.allowed, b.disrupted, b.namespace) == (2, frozenset({"x"}), "ns")
    # unlike an eviction, preemption takes a nil or empty selector to match no pod
    assert not budget(pdb(None)).selector.matches({"app": "a"})
    assert not budget(pdb({})).selector.matches({"app": "a"})
