"""Pod topology spread: the schema's refusals, the pod -> constraint translation and the pure
plan's filter (DoNotSchedule) and score (ScheduleAnyway) over a ``NodeTable``."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.pod import Pod
from schemas.selector import Selector, from_labels
from schemas.validation import SchemaError, decode
from services.scheduler import spread
from services.scheduler.plan import (
    REASON_SPREAD,
    REASON_SPREAD_LABEL,
    NodeInfo,
    NodeTable,
    PodRequest,
    SpreadConstraint,
    Taint,
    schedule_one,
)
from services.scheduler.podinfo import pod_request

GiB = 1024**3
ZONE = "topology.kubernetes.io/zone"
WEB = from_labels({"app": "web"})


def zoned(zones: dict[str, int], cpu: int = 64000, **extra: Any) -> NodeTable:
    """``zones``: zone -> how many nodes in it (named <zone>-<i>)."""
    t = NodeTable()
    for zone, count in zones.items():
        for i in range(count):
            t.set_node(NodeInfo(name=f"{zone}-{i}", cpu=cpu, memory=64 * GiB, labels=((ZONE, zone),), **extra))
    return t


def web(i: int, *constraints: SpreadConstraint, ns: str = "default", **fields: Any) -> PodRequest:
    return PodRequest(key=f"{ns}.web-{i}", namespace=ns, labels=(("app", "web"),), spread=constraints, **fields)


def hard(max_skew: int = 1, key: str = ZONE, **fields: Any) -> SpreadConstraint:
    return SpreadConstraint(max_skew=max_skew, topology_key=key, hard=True, selector=WEB, **fields)


def soft(max_skew: int = 1, key: str = ZONE) -> SpreadConstraint:
    return SpreadConstraint(max_skew=max_skew, topology_key=key, hard=False, selector=WEB)


def zone_of(t: NodeTable, node: str) -> str:
    return dict(t.nodes[node].labels).get(ZONE, "")


def place(t: NodeTable, pod: PodRequest, seed: int = 0) -> str | None:
    d = schedule_one(t, pod, np.random.default_rng(seed))
    if d.node_name is not None:
        t.assume(pod, d.node_name)
    return d.node_name


def per_zone(t: NodeTable) -> Counter[str]:
    return Counter(zone_of(t, b.node) for b in t.pods.values())


# ---- DoNotSchedule ------------------------------------------------------------------------------


def test_six_pods_over_three_zones_end_two_each():
    t = zoned({"a": 2, "b": 2, "c": 2})
    for i in range(6):
        assert place(t, web(i, hard()), seed=i) is not None
    assert sorted(per_zone(t).values()) == [2, 2, 2]


@settings(max_examples=60, deadline=None)
@given(
    zones=st.dictionaries(st.sampled_from("abcde"), st.integers(1, 3), min_size=1, max_size=5),
    skew=st.integers(1, 3),
    pods=st.integers(1, 30),
    seed=st.integers(0, 2**16),
)
def test_the_skew_never_exceeds_max_skew(zones: dict[str, int], skew: int, pods: int, seed: int):
    t = zoned(zones)
    for i in range(pods):
        assert place(t, web(i, hard(skew)), seed=seed + i) is not None
        counts = [per_zone(t).get(z, 0) for z in zones]
        assert max(counts) - min(counts) <= skew


def test_do_not_schedule_refuses_the_node_that_would_break_the_skew():
    t = zoned({"a": 1})
    t.set_node(NodeInfo(name="b-0", cpu=64000, memory=64 * GiB, labels=((ZONE, "b"),), unschedulable=True))
    t.assume(web(0), "a-0")
    d = schedule_one(t, web(1, hard()), np.random.default_rng(0))
    assert d.node_name is None
    assert d.message == f"0/2 nodes are available: 1 {REASON_SPREAD}, 1 node(s) were unschedulable."
    assert place(t, web(1, hard(max_skew=2))) == "a-0"


def test_nodes_without_the_topology_key_are_skipped():
    t = zoned({"a": 1})
    t.set_node(NodeInfo(name="bare", cpu=64000, memory=64 * GiB))
    for i in range(4):
        assert place(t, web(i, hard(max_skew=5)), seed=i) == "a-0"
    t2 = NodeTable()
    t2.set_node(NodeInfo(name="bare", cpu=64000, memory=64 * GiB))
    d = schedule_one(t2, web(0, hard()), np.random.default_rng(0))
    assert d.message == f"0/1 nodes are available: 1 {REASON_SPREAD_LABEL}."


def test_min_domains_counts_missing_domains_as_empty():
    t = zoned({"a": 1, "b": 1})
    t.assume(web(0), "a-0")
    t.assume(web(1), "b-0")
    assert place(t, web(2, hard())) is not None  # two domains, minimum 1: 2 - 1 <= 1
    t.forget("default.web-2")
    d = schedule_one(t, web(2, hard(min_domains=3)), np.random.default_rng(0))
    assert d.node_name is None  # fewer domains than minDomains: minimum 0, 2 - 0 > 1
    assert d.reasons == Counter({REASON_SPREAD: 2})


def test_only_matching_pods_of_the_namespace_count():
    t = zoned({"a": 1, "b": 1})
    for i in range(3):
        t.assume(web(i, ns="other"), "a-0")
        t.assume(PodRequest(key=f"default.db-{i}", namespace="default", labels=(("app", "db"),)), "a-0")
    t.assume(web(9), "b-0")
    assert place(t, web(10, hard())) == "a-0"


def test_a_pod_outside_its_own_selector_does_not_count_itself():
    t = zoned({"a": 1})
    t.set_node(NodeInfo(name="b-0", cpu=64000, memory=64 * GiB, labels=((ZONE, "b"),), unschedulable=True))
    t.assume(web(0), "a-0")
    assert schedule_one(t, web(1, hard()), np.random.default_rng(0)).node_name is None  # 1 + 1 - 0 > 1
    other = PodRequest(key="default.x", namespace="default", labels=(("app", "x"),), spread=(hard(),))
    assert schedule_one(t, other, np.random.default_rng(0)).node_name == "a-0"  # 1 + 0 - 0 <= 1


def test_node_affinity_policy_decides_which_domains_count():
    t = NodeTable()
    for zone, disk in (("a", "ssd"), ("b", "ssd"), ("c", "hdd")):
        t.set_node(NodeInfo(name=f"{zone}-0", cpu=64000, memory=64 * GiB, labels=((ZONE, zone), ("disk", disk))))
    t.assume(web(0), "a-0")
    t.assume(web(1), "b-0")
    ssd = (("disk", "ssd"),)
    assert place(t, web(2, hard(), node_selector=ssd)) is not None  # zone c is not eligible: minimum 1
    t.forget("default.web-2")
    d = schedule_one(t, web(2, hard(honor_affinity=False), node_selector=ssd), np.random.default_rng(0))
    assert d.node_name is None  # empty zone c counts: minimum 0


def test_node_taints_policy_honor_leaves_tainted_domains_out():
    t = zoned({"a": 1, "b": 1})
    t.set_node(NodeInfo(name="c-0", cpu=64000, memory=64 * GiB, labels=((ZONE, "c"),), taints=(Taint(key="gpu"),)))
    t.assume(web(0), "a-0")
    t.assume(web(1), "b-0")
    assert schedule_one(t, web(2, hard()), np.random.default_rng(0)).node_name is None  # Ignore: c counts
    assert place(t, web(2, hard(honor_taints=True))) is not None


def test_two_constraints_both_hold():
    t = NodeTable()
    for zone in "ab":
        for i in range(2):
            t.set_node(NodeInfo(name=f"{zone}-{i}", cpu=64000, memory=64 * GiB,
                                labels=((ZONE, zone), ("kubernetes.io/hostname", f"{zone}-{i}"))))
    host = hard(key="kubernetes.io/hostname")
    for i in range(8):
        assert place(t, web(i, hard(), host), seed=i) is not None
    assert Counter(b.node for b in t.pods.values()) == Counter({"a-0": 2, "a-1": 2, "b-0": 2, "b-1": 2})


def ref_feasible(nodes: list[NodeInfo], placed: list[tuple[int, str, str]], pod: PodRequest) -> list[bool]:
    """The filter one node at a time, from the Kubernetes docs. ``placed``: (node, namespace, app)."""
    (c,) = pod.spread
    key = c.topology_key

    def eligible(node: NodeInfo) -> bool:
        labels = dict(node.labels)
        if key not in labels:
            return False
        if c.honor_affinity and any(labels.get(k) != v for k, v in pod.node_selector):
            return False
        return not (c.honor_taints and any(not pod.tolerates(t) for t in node.taints if t.effect != "PreferNoSchedule"))

    counts: Counter[str] = Counter({dict(n.labels)[key]: 0 for n in nodes if eligible(n)})
    for i, ns, app in placed:
        if eligible(nodes[i]) and ns == pod.namespace and c.selector.matches({"app": app}):
            counts[dict(nodes[i].labels)[key]] += 1
    low = min(counts.values()) if counts and len(counts) >= c.min_domains else 0
    me = int(c.selector.matches(dict(pod.labels)))
    return [key in dict(n.labels) and counts[dict(n.labels)[key]] + me - low <= c.max_skew for n in nodes]


@settings(max_examples=150, deadline=None)
@given(
    shapes=st.lists(st.tuples(st.sampled_from(["a", "b", "c", ""]), st.sampled_from(["ssd", "hdd"]), st.booleans()),
                    min_size=1, max_size=8),
    placed=st.lists(st.tuples(st.integers(0, 7), st.sampled_from(["default", "other"]), st.sampled_from(["web", "db"])),
                    max_size=20),
    skew=st.integers(1, 3),
    min_domains=st.integers(1, 4),
    honor_affinity=st.booleans(),
    honor_taints=st.booleans(),
    ssd_only=st.booleans(),
    app=st.sampled_from(["web", "db"]),
)
def test_the_filter_agrees_with_a_per_node_reference(shapes, placed, skew, min_domains, honor_affinity, honor_taints,
                                                     ssd_only, app):
    nodes = [
        NodeInfo(name=f"n{i}", cpu=1000, memory=GiB, labels=tuple(sorted({"disk": disk, **({ZONE: z} if z else {})}.items())),
                 taints=(Taint(key="t"),) if tainted else ())
        for i, (z, disk, tainted) in enumerate(shapes)
    ]
    t = NodeTable()
    for n in nodes:
        t.set_node(n)
    placed = [(i % len(nodes), ns, a) for i, ns, a in placed]
    for k, (i, ns, a) in enumerate(placed):
        t.assume(PodRequest(key=f"{ns}.p{k}", namespace=ns, labels=(("app", a),)), nodes[i].name)
    c = hard(skew, min_domains=min_domains, honor_affinity=honor_affinity, honor_taints=honor_taints)
    pod = PodRequest(key="default.new", namespace="default", labels=(("app", app),), spread=(c,),
                     node_selector=(("disk", "ssd"),) if ssd_only else ())
    masks = spread.filter_masks(t, pod)
    assert masks is not None
    assert list(masks[0] & masks[1]) == ref_feasible(nodes, placed, pod)


# ---- ScheduleAnyway -----------------------------------------------------------------------------


def test_schedule_anyway_prefers_the_emptier_zone_but_still_places():
    t = zoned({"a": 1, "b": 1}, cpu=4000)
    for i in range(3):
        t.assume(web(i, cpu=1000), "a-0")
    pod = web(10, soft(), cpu=1000)
    assert {schedule_one(t, pod, np.random.default_rng(s)).node_name for s in range(10)} == {"b-0"}
    t.assume(PodRequest(key="default.fill", cpu=4000), "b-0")  # b is now full
    assert schedule_one(t, pod, np.random.default_rng(0)).node_name == "a-0"


def test_schedule_anyway_spreads_a_sequence_evenly():
    t = zoned({"a": 1, "b": 1, "c": 1})
    for i in range(9):
        assert place(t, web(i, soft()), seed=i) is not None
    assert sorted(per_zone(t).values()) == [3, 3, 3]


# ---- from a Pod ---------------------------------------------------------------------------------


def _pod(constraints: list[dict[str, Any]], labels: dict[str, str] | None = None) -> Pod:
    return msgspec.convert({
        "metadata": {"name": "p", "namespace": "shop", "labels": labels or {"app": "web", "pod-template-hash": "abc"}},
        "spec": {"containers": [{"name": "c", "image": "x"}], "topologySpreadConstraints": constraints},
    }, Pod)


def test_pod_request_folds_match_label_keys_into_the_selector():
    pod = _pod([{"maxSkew": 2, "topologyKey": ZONE, "whenUnsatisfiable": "ScheduleAnyway",
                 "labelSelector": {"matchLabels": {"app": "web"}}, "matchLabelKeys": ["pod-template-hash", "absent"],
                 "nodeTaintsPolicy": "Honor"}])
    (c,) = pod_request(pod, "shop.p").spread
    assert (c.max_skew, c.hard, c.min_domains, c.honor_affinity, c.honor_taints) == (2, False, 1, True, True)
    assert c.selector.matches({"app": "web", "pod-template-hash": "abc"})
    assert not c.selector.matches({"app": "web", "pod-template-hash": "old"})


def test_a_nil_label_selector_matches_nothing():
    (c,) = pod_request(_pod([{"maxSkew": 1, "topologyKey": ZONE, "whenUnsatisfiable": "DoNotSchedule",
                               "matchLabelKeys": ["app"]}]), "shop.p").spread
    assert c.selector == Selector.none()


def test_a_pod_without_constraints_has_none():
    assert pod_request(_pod([]), "shop.p").spread == ()


# ---- validation ---------------------------------------------------------------------------------


def _manifest(*constraints: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "busybox"}], "topologySpreadConstraints": list(constraints)}}


def _c(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"maxSkew": 1, "topologyKey": ZONE, "whenUnsatisfiable": "DoNotSchedule",
                            "labelSelector": {"matchLabels": {"app": "web"}}}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


F = "spec.topologySpreadConstraints"


@pytest.mark.parametrize(
    ("raw", "field", "fragment"),
    [
        pytest.param(_manifest(_c(maxSkew=0)), f"{F}[0].maxSkew", "must be greater than zero", id="max-skew-zero"),
        pytest.param(_manifest(_c(minDomains=0)), f"{F}[0].minDomains", "must be greater than zero", id="min-domains-zero"),
        pytest.param(_manifest(_c(minDomains=2, whenUnsatisfiable="ScheduleAnyway")), f"{F}[0].minDomains",
                     "whenUnsatisfiable=DoNotSchedule", id="min-domains-schedule-anyway"),
        pytest.param(_manifest(_c(topologyKey="")), f"{F}[0].topologyKey", "Required value", id="topology-key-empty"),
        pytest.param(_manifest(_c(topologyKey=None)), f"{F}[0].topologyKey", "Required value", id="topology-key-missing"),
        pytest.param(_manifest(_c(), _c(maxSkew=2)), f"{F}[1].{{topologyKey, whenUnsatisfiable}}", "Duplicate value",
                     id="duplicate-pair"),
        pytest.param(_manifest(_c(matchLabelKeys=["app"])), f"{F}[0].matchLabelKeys[0]",
                     "exists in both matchLabelKeys and labelSelector", id="match-label-keys-overlap"),
        pytest.param(_manifest(_c(labelSelector=None, matchLabelKeys=["app"])), f"{F}[0].matchLabelKeys",
                     "must not be specified when labelSelector is not set", id="match-label-keys-without-selector"),
        pytest.param(_manifest(_c(whenUnsatisfiable="Sometimes")), f"{F}[0].whenUnsatisfiable", "Invalid enum value",
                     id="when-unsatisfiable-enum"),
        pytest.param(_manifest(_c(nodeAffinityPolicy="Maybe")), f"{F}[0].nodeAffinityPolicy", "Invalid enum value",
                     id="node-affinity-policy-enum"),
        pytest.param(_manifest(_c(labelSelector={"matchExpressions": [{"key": "app", "operator": "In"}]})),
                     f"{F}[0].labelSelector", "values must be non-empty", id="bad-label-selector"),
    ],
)
def test_bad_constraints_name_their_field(raw: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(SchemaError) as err:
        decode(raw)
    fields = dict(err.value.details)
    assert field in fields, err.value.details
    assert fragment in fields[field]


def test_good_constraints_decode_and_keep_their_policies_unset():
    pod = decode(_manifest(_c(minDomains=2, matchLabelKeys=["pod-template-hash"]),
                           _c(whenUnsatisfiable="ScheduleAnyway", nodeTaintsPolicy="Honor")))
    assert isinstance(pod, Pod)
    first, second = pod.spec.topologySpreadConstraints
    assert (first.minDomains, first.nodeAffinityPolicy, first.nodeTaintsPolicy) == (2, None, None)
    assert second.nodeTaintsPolicy == "Honor"


def test_a_deployment_template_is_checked_too():
    raw = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
           "spec": {"selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                                 "spec": {"containers": [{"name": "a", "image": "x"}],
                                          "topologySpreadConstraints": [_c(maxSkew=-1)]}}}}
    with pytest.raises(SchemaError) as err:
        decode(raw)
    assert f"spec.template.{F}[0].maxSkew" in dict(err.value.details)


def test_a_pod_without_constraints_never_counts_pods(monkeypatch: pytest.MonkeyPatch):
    t = zoned({"a": 2, "b": 2})
    t.assume(web(0), "a-0")

    def refuse(*_: Any) -> None:
        raise AssertionError("pods counted for a pod without constraints")

    monkeypatch.setattr(t, "matching_per_row", refuse)
    for i in range(1, 5):
        assert place(t, web(i), seed=i) is not None
    assert t.matching == {}


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(["assume", "forget", "remove", "add"]), st.integers(0, 9),
                                st.integers(0, 3), st.sampled_from(["web", "db"])), max_size=40))
def test_kept_counts_equal_a_fresh_count(steps):
    """The table's matching counts, kept up to date across binds, forgets and node changes,
    equal those a fresh table counts from the same pods."""
    t = zoned({"a": 2, "b": 2})
    t.matching_per_row("default", WEB)
    for op, k, node, app in steps:
        name = f"{'ab'[node // 2]}-{node % 2}"
        if op == "assume":
            t.assume(PodRequest(key=f"default.p{k}", namespace="default", labels=(("app", app),)), name)
        elif op == "forget":
            t.forget(f"default.p{k}")
        elif op == "remove":
            t.remove_node(name)
        else:
            t.set_node(NodeInfo(name=name, cpu=64000, memory=64 * GiB, labels=((ZONE, name[0]),)))
    kept = t.matching_per_row("default", WEB).copy()
    t.matching.clear()
    assert list(kept) == list(t.matching_per_row("default", WEB))
