"""The scheduler's pure decisions: filters, scores, FitError messages and the capacity invariant.

A plain per-node reference (one Python loop per node, written from the Kubernetes docs) checks
the vectorised filters; hypothesis drives random clusters and pod sequences."""

from __future__ import annotations

from collections import Counter

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.scheduler import filters, scores
from services.scheduler.plan import (
    HostPort,
    NodeInfo,
    NodeTable,
    PodRequest,
    PreferredTerm,
    Requirement,
    Taint,
    Term,
    Toleration,
    num_feasible_nodes_to_find,
    schedule_one,
)

GiB = 1024**3


def table_of(*nodes: NodeInfo) -> NodeTable:
    t = NodeTable()
    for n in nodes:
        t.set_node(n)
    return t


# ---- reference: one node at a time ------------------------------------------------------------


def ref_req(r: Requirement, labels: dict[str, str]) -> bool:
    v = labels.get(r.key)
    if r.operator == "In":
        return v is not None and v in r.values
    if r.operator == "NotIn":
        return v is None or v not in r.values
    if r.operator == "Exists":
        return v is not None
    if r.operator == "DoesNotExist":
        return v is None
    if len(r.values) != 1:  # Gt/Lt take exactly one integer (Kubernetes rejects anything else)
        return False
    try:
        a, b = int(v), int(r.values[0])  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return a > b if r.operator == "Gt" else a < b


def ref_term(term: Term, node: NodeInfo) -> bool:
    if not term.match_expressions and not term.match_fields:
        return False
    labels = dict(node.labels)
    fields = all(
        (node.name in r.values) == (r.operator == "In") for r in term.match_fields if r.key == "metadata.name"
    )
    return fields and all(ref_req(r, labels) for r in term.match_expressions)


def ref_fits(pod: PodRequest, node: NodeInfo, bound: list[PodRequest]) -> bool:
    labels = dict(node.labels)
    if not node.ready and not pod.tolerates(Taint(key="node.kubernetes.io/not-ready")):
        return False
    if node.unschedulable and not pod.tolerates(Taint(key="node.kubernetes.io/unschedulable")):
        return False
    if pod.node_name and pod.node_name != node.name:
        return False
    if any(t.effect != "PreferNoSchedule" and not pod.tolerates(t) for t in node.taints):
        return False
    if any(labels.get(k) != v for k, v in pod.node_selector):
        return False
    if pod.required is not None and not any(ref_term(t, node) for t in pod.required):
        return False
    used = {(hp.protocol, hp.port, hp.host_ip) for b in bound for hp in b.host_ports}
    for hp in pod.host_ports:
        for proto, port, ip in used:
            if (proto, port) == (hp.protocol, hp.port) and "0.0.0.0" in (ip, hp.host_ip) or (proto, port, ip) == (
                hp.protocol,
                hp.port,
                hp.host_ip,
            ):
                return False
    if len(bound) + 1 > node.pods:
        return False
    if pod.cpu and sum(b.cpu for b in bound) + pod.cpu > node.cpu:
        return False
    if pod.memory and sum(b.memory for b in bound) + pod.memory > node.memory:
        return False
    return True


# ---- strategies -------------------------------------------------------------------------------

KEYS = ["zone", "disk", "gpu"]
VALUES = ["a", "b", "1", "7"]
taints = st.builds(
    Taint,
    key=st.sampled_from(["dedicated", "spot"]),
    value=st.sampled_from(["x", "y"]),
    effect=st.sampled_from(["NoSchedule", "PreferNoSchedule", "NoExecute"]),
)
tolerations = st.builds(
    Toleration,
    key=st.sampled_from(["", "dedicated", "spot", "node.kubernetes.io/unschedulable"]),
    operator=st.sampled_from(["Equal", "Exists"]),
    value=st.sampled_from(["", "x", "y"]),
    effect=st.sampled_from(["", "NoSchedule", "PreferNoSchedule", "NoExecute"]),
)
requirements = st.builds(
    Requirement,
    key=st.sampled_from(KEYS),
    operator=st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]),
    values=st.lists(st.sampled_from(VALUES), min_size=1, max_size=2).map(tuple),
)
name_fields = st.builds(
    Requirement,
    key=st.just("metadata.name"),
    operator=st.sampled_from(["In", "NotIn"]),
    values=st.lists(st.sampled_from(["n0", "n1", "n2", "n9"]), min_size=1, max_size=2).map(tuple),
)
terms = st.builds(
    Term,
    match_expressions=st.lists(requirements, max_size=2).map(tuple),
    match_fields=st.lists(name_fields, max_size=1).map(tuple),
)


@st.composite
def nodes(draw, count: int | None = None) -> list[NodeInfo]:
    k = count if count is not None else draw(st.integers(1, 6))
    out = []
    for i in range(k):
        labels = draw(st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=3))
        out.append(
            NodeInfo(
                name=f"n{i}",
                cpu=draw(st.sampled_from([0, 500, 1000, 2000])),
                memory=draw(st.sampled_from([0, GiB, 2 * GiB])),
                pods=draw(st.integers(0, 4)),
                labels=tuple(sorted(labels.items())),
                taints=tuple(draw(st.lists(taints, max_size=2, unique=True))),
                ready=draw(st.booleans() | st.just(True)),
                unschedulable=draw(st.booleans() | st.just(False)),
            )
        )
    return out


@st.composite
def pods(draw, i: int = 0) -> PodRequest:
    return PodRequest(
        key=f"default.p{i}",
        cpu=draw(st.sampled_from([0, 100, 300, 700])),
        memory=draw(st.sampled_from([0, GiB // 4, GiB])),
        node_name=draw(st.sampled_from(["", "", "", "n1", "n9"])),
        node_selector=tuple(sorted(draw(st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=1)).items())),
        required=draw(st.none() | st.lists(terms, max_size=2).map(tuple)),
        preferred=tuple(draw(st.lists(st.builds(PreferredTerm, weight=st.integers(1, 100), term=terms), max_size=2))),
        tolerations=tuple(draw(st.lists(tolerations, max_size=2))),
        host_ports=tuple(
            draw(st.lists(st.builds(HostPort, port=st.sampled_from([80, 443]), host_ip=st.sampled_from(["0.0.0.0", "127.0.0.2"])), max_size=1))
        ),
        owner_uid=draw(st.sampled_from(["", "rs-1", "rs-2"])),
    )


@st.composite
def pod_sequences(draw) -> list[PodRequest]:
    return [draw(pods(i)) for i in range(draw(st.integers(1, 12)))]


# ---- properties -------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster=nodes(), sequence=pod_sequences(), seed=st.integers(0, 2**16))
def test_sequence_never_binds_past_allocatable_nor_to_a_rejecting_node(cluster, sequence, seed):
    t = table_of(*cluster)
    rng = np.random.default_rng(seed)
    by_name = {n.name: n for n in cluster}
    bound: dict[str, list[PodRequest]] = {n.name: [] for n in cluster}
    for pod in sequence:
        fits = {n.name for n in cluster if ref_fits(pod, n, bound[n.name])}
        d = schedule_one(t, pod, rng, now=0.0)
        t.next_start = d.next_start
        if d.node_name is None:
            assert fits == set(), d.message
            continue
        assert d.node_name in fits
        t.assume(pod, d.node_name)
        bound[d.node_name].append(pod)
    for name, placed in bound.items():
        node = by_name[name]
        assert len(placed) <= node.pods
        assert sum(p.cpu for p in placed) <= node.cpu
        assert sum(p.memory for p in placed) <= node.memory


def ref_reasons(pod: PodRequest, node: NodeInfo) -> list[str]:
    """The reasons one empty node gives, in kube-scheduler's filter order (first failing filter wins;
    NodeResourcesFit may give several)."""
    labels = dict(node.labels)
    if not node.ready and not pod.tolerates(Taint(key="node.kubernetes.io/not-ready")):
        return ["node(s) were not ready"]
    if node.unschedulable and not pod.tolerates(Taint(key="node.kubernetes.io/unschedulable")):
        return ["node(s) were unschedulable"]
    if pod.node_name and pod.node_name != node.name:
        return ["node(s) didn't match the requested node name"]
    for t in node.taints:
        if t.effect != "PreferNoSchedule" and not pod.tolerates(t):
            return [f"node(s) had untolerated taint {{{t.key}: {t.value}}}"]
    if any(labels.get(k) != v for k, v in pod.node_selector) or (
        pod.required is not None and not any(ref_term(t, node) for t in pod.required)
    ):
        return ["node(s) didn't match Pod's node affinity/selector"]
    out = []
    if node.pods < 1:
        out.append("Too many pods")
    if pod.cpu and pod.cpu > node.cpu:
        out.append("Insufficient cpu")
    if pod.memory and pod.memory > node.memory:
        out.append("Insufficient memory")
    return out


@settings(max_examples=150, deadline=None)
@given(cluster=nodes(), pod=pods())
def test_failure_reasons_count_every_node_like_kube_scheduler(cluster, pod):
    t = table_of(*cluster)
    d = schedule_one(t, pod, np.random.default_rng(0))
    per_node = [ref_reasons(pod, n) for n in cluster]
    if d.node_name is not None:
        assert per_node[int(d.node_name[1:])] == []
        return
    assert all(per_node), "a node that fits was passed over"
    assert d.reasons == Counter(r for reasons in per_node for r in reasons)
    # every node is counted once, plus once more per extra resource it lacks
    assert sum(d.reasons.values()) == len(cluster) + sum(len(r) - 1 for r in per_node)
    assert d.message.startswith(f"0/{len(cluster)} nodes are available: ") and d.message.endswith(".")


@settings(max_examples=150, deadline=None)
@given(cluster=nodes(), pod=pods(), perm_seed=st.integers(0, 2**16))
def test_decision_does_not_depend_on_node_order(cluster, pod, perm_seed):
    """Same feasible set, same best score, same reasons whatever order nodes arrive in."""
    order = np.random.default_rng(perm_seed).permutation(len(cluster))
    a, b = table_of(*cluster), table_of(*[cluster[i] for i in order])
    fa, fb = filters.feasible(a, pod), filters.feasible(b, pod)
    assert {a.names[i] for i in np.flatnonzero(fa)} == {b.names[i] for i in np.flatnonzero(fb)}
    da, db = schedule_one(a, pod, np.random.default_rng(0)), schedule_one(b, pod, np.random.default_rng(0))
    assert da.reasons == db.reasons
    if da.node_name is not None:
        rows_a, rows_b = np.flatnonzero(fa), np.flatnonzero(fb)
        sa = dict(zip([a.names[i] for i in rows_a], scores.scores(a, pod, rows_a).tolist(), strict=True))
        sb = dict(zip([b.names[i] for i in rows_b], scores.scores(b, pod, rows_b).tolist(), strict=True))
        assert sa == sb
        assert sa[da.node_name] == max(sa.values()) == sb[db.node_name]


# ---- examples ---------------------------------------------------------------------------------


def test_fit_error_message_is_kube_schedulers():
    t = table_of(
        NodeInfo(name="a", cpu=500, memory=GiB),
        NodeInfo(name="b", cpu=500, memory=GiB),
        NodeInfo(name="c", cpu=8000, memory=GiB, taints=(Taint(key="key", value="value"),)),
    )
    d = schedule_one(t, PodRequest(key="default.big", cpu=1000), np.random.default_rng(0))
    assert d.node_name is None
    assert d.message == "0/3 nodes are available: 1 node(s) had untolerated taint {key: value}, 2 Insufficient cpu."


@pytest.mark.parametrize(
    ("node", "pod", "reason"),
    [
        pytest.param(NodeInfo(name="a", cpu=1000, memory=GiB, ready=False), PodRequest(key="d.p"), "node(s) were not ready", id="not-ready"),
        pytest.param(NodeInfo(name="a", cpu=1000, memory=GiB, unschedulable=True), PodRequest(key="d.p"), "node(s) were unschedulable", id="cordoned"),
        pytest.param(NodeInfo(name="a", cpu=1000, memory=GiB), PodRequest(key="d.p", node_name="b"), "node(s) didn't match the requested node name", id="node-name"),
        pytest.param(
            NodeInfo(name="a", cpu=1000, memory=GiB, labels=(("disk", "hdd"),)),
            PodRequest(key="d.p", node_selector=(("disk", "ssd"),)),
            "node(s) didn't match Pod's node affinity/selector",
            id="node-selector",
        ),
        pytest.param(NodeInfo(name="a", cpu=1000, memory=GiB, pods=0), PodRequest(key="d.p"), "Too many pods", id="pods"),
        pytest.param(NodeInfo(name="a", cpu=1000, memory=GiB), PodRequest(key="d.p", memory=2 * GiB), "Insufficient memory", id="memory"),
        pytest.param(
            NodeInfo(name="a", cpu=1000, memory=GiB, taints=(Taint(key="t", value="v", effect="NoExecute"),)),
            PodRequest(key="d.p", tolerations=(Toleration(key="t", value="v", effect="NoSchedule"),)),
            "node(s) had untolerated taint {t: v}",
            id="noexecute-needs-its-own-toleration",
        ),
    ],
)
def test_each_filter_reports_its_reason(node, pod, reason):
    d = schedule_one(table_of(node), pod, np.random.default_rng(0))
    assert d.node_name is None
    assert d.reasons == Counter({reason: 1})


def test_cordon_is_tolerable_and_exists_with_empty_key_tolerates_every_taint():
    t = table_of(NodeInfo(name="a", cpu=1000, memory=GiB, unschedulable=True, taints=(Taint(key="x", value="y"),)))
    pod = PodRequest(key="d.p", tolerations=(Toleration(operator="Exists"),))
    assert schedule_one(t, pod, np.random.default_rng(0)).node_name == "a"


def test_host_port_conflicts_only_after_a_pod_uses_it():
    t = table_of(NodeInfo(name="a", cpu=1000, memory=GiB))
    web = PodRequest(key="d.web", host_ports=(HostPort(port=80),))
    assert schedule_one(t, web, np.random.default_rng(0)).node_name == "a"
    t.assume(web, "a")
    other = PodRequest(key="d.web2", host_ports=(HostPort(port=80, host_ip="127.0.0.5"),))
    assert schedule_one(t, other, np.random.default_rng(0)).reasons == Counter({"node(s) didn't have free ports for the requested pod ports": 1})
    t.forget("d.web")
    assert schedule_one(t, other, np.random.default_rng(0)).node_name == "a"


def test_spreads_one_owners_pods_and_prefers_least_allocated():
    t = table_of(*[NodeInfo(name=f"n{i}", cpu=4000, memory=8 * GiB) for i in range(3)])
    placed = Counter()
    for i in range(6):
        pod = PodRequest(key=f"d.p{i}", cpu=100, memory=GiB // 8, owner_uid="rs")
        d = schedule_one(t, pod, np.random.default_rng(0))
        t.assume(pod, d.node_name)
        placed[d.node_name] += 1
    assert sorted(placed.values()) == [2, 2, 2]


def test_preferred_affinity_and_prefer_no_schedule_steer_placement():
    t = table_of(
        NodeInfo(name="plain", cpu=1000, memory=GiB),
        NodeInfo(name="ssd", cpu=1000, memory=GiB, labels=(("disk", "ssd"),)),
        NodeInfo(name="spot", cpu=1000, memory=GiB, labels=(("disk", "ssd"),), taints=(Taint(key="spot", effect="PreferNoSchedule"),)),
    )
    pod = PodRequest(key="d.p", preferred=(PreferredTerm(weight=50, term=Term(match_expressions=(Requirement(key="disk", operator="In", values=("ssd",)),))),))
    assert {schedule_one(t, pod, np.random.default_rng(0)).node_name for _ in range(20)} == {"ssd"}


def test_required_affinity_gt_and_match_fields():
    t = table_of(
        NodeInfo(name="small", cpu=1000, memory=GiB, labels=(("cores", "2"),)),
        NodeInfo(name="big", cpu=1000, memory=GiB, labels=(("cores", "64"),)),
        NodeInfo(name="other", cpu=1000, memory=GiB, labels=(("cores", "64"),)),
    )
    pod = PodRequest(
        key="d.p",
        required=(Term(match_expressions=(Requirement(key="cores", operator="Gt", values=("8",)),), match_fields=(Requirement(key="metadata.name", operator="NotIn", values=("other",)),)),),
    )
    assert schedule_one(t, pod, np.random.default_rng(0)).node_name == "big"


def test_node_changes_update_rows_and_keep_bound_pods_accounted():
    t = table_of(NodeInfo(name="a", cpu=1000, memory=GiB))
    pod = PodRequest(key="d.p", cpu=800)
    t.assume(pod, "a")
    t.remove_node("a")
    assert schedule_one(t, PodRequest(key="d.q", cpu=800), np.random.default_rng(0)).message == "no nodes available to schedule pods"
    t.set_node(NodeInfo(name="a", cpu=1000, memory=GiB))
    assert schedule_one(t, PodRequest(key="d.q", cpu=800), np.random.default_rng(0)).reasons == Counter({"Insufficient cpu": 1})
    t.set_node(NodeInfo(name="a", cpu=2000, memory=GiB))  # resized
    assert schedule_one(t, PodRequest(key="d.q", cpu=800), np.random.default_rng(0)).node_name == "a"


# ---- partial scoring on large clusters (kube-scheduler's percentageOfNodesToScore) ---------------


@pytest.mark.parametrize(
    ("nodes_", "percentage", "expected"),
    [
        pytest.param(50, 0, 50, id="under-100-nodes-all"),
        pytest.param(100, 0, 100, id="100-nodes-at-least-100"),
        pytest.param(1000, 0, 420, id="1000-nodes-42pct"),
        pytest.param(5000, 0, 500, id="5000-nodes-10pct"),
        pytest.param(6000, 0, 300, id="6000-nodes-floor-5pct"),
        pytest.param(5000, 30, 1500, id="configured-30pct"),
        pytest.param(5000, 100, 5000, id="configured-all"),
    ],
)
def test_nodes_to_find_follow_kube_scheduler(nodes_, percentage, expected):
    assert num_feasible_nodes_to_find(nodes_, percentage) == expected


@st.composite
def big_clusters(draw) -> list[NodeInfo]:
    k = draw(st.integers(100, 400))
    cpus = draw(st.lists(st.sampled_from([0, 500, 4000]), min_size=k, max_size=k))
    return [NodeInfo(name=f"n{i}", cpu=c, memory=8 * GiB, pods=draw(st.integers(0, 3)) if i % 7 == 0 else 110) for i, c in enumerate(cpus)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cluster=big_clusters(),
    cpus=st.lists(st.sampled_from([0, 100, 600]), min_size=1, max_size=40),
    percentage=st.sampled_from([0, 5, 30]),
    seed=st.integers(0, 2**16),
)
def test_partial_scoring_binds_only_where_it_fits_and_walks_on(cluster, cpus, percentage, seed):
    t = NodeTable(percentage_of_nodes_to_score=percentage)
    rng = np.random.default_rng(seed)
    for n in cluster:
        t.set_node(n)
    bound: dict[str, list[PodRequest]] = {n.name: [] for n in cluster}
    want = num_feasible_nodes_to_find(len(cluster), percentage)
    for i, cpu in enumerate(cpus):
        pod = PodRequest(key=f"d.p{i}", cpu=cpu, memory=GiB // 8, owner_uid="rs")
        fits = {n.name for n in cluster if ref_fits(pod, n, bound[n.name])}
        start = t.next_start
        rows, walked = filters.find_feasible(t, pod, want, start)
        found = [t.names[r] for r in rows]
        # as many feasible nodes as asked for (or every one), each once, each one that fits
        assert len(found) == len(set(found)) == min(want, len(fits))
        assert set(found) <= fits
        # the walk starts where the previous pod stopped and ends at the last node found
        if found and len(fits) > want:
            assert int(rows[-1]) == (start + walked - 1) % t.n
        d = schedule_one(t, pod, rng)
        assert t.next_start == start  # the decision says where to go on; the table stays as it was
        assert d.next_start == (start + walked) % t.n
        t.next_start = d.next_start
        if d.node_name is None:
            assert fits == set(), d.message
            continue
        assert d.node_name in found
        t.assume(pod, d.node_name)
        bound[d.node_name].append(pod)
    for n in cluster:
        assert sum(p.cpu for p in bound[n.name]) <= n.cpu
        assert len(bound[n.name]) <= n.pods


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cluster=nodes(count=6),
    steps=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 5), st.booleans()), max_size=60),
    shape=st.tuples(st.sampled_from([0, 100, 250]), st.sampled_from([0, GiB // 3])),
)
def test_cached_resource_scores_equal_fresh_ones(cluster, steps, shape):
    """Scores kept per pod shape and refreshed row by row equal a full recomputation."""
    t = table_of(*cluster)
    probe = PodRequest(key="d.probe", cpu=shape[0], memory=shape[1])
    for k, node, add in steps:
        pod = PodRequest(key=f"d.p{k}", cpu=100 * (k + 1), memory=GiB // (k + 1))
        if add:
            t.assume(pod, f"n{node}")
        else:
            t.forget(pod.key)
        cached = scores.resource_row_scores(t, probe)
        fresh = scores.resource_scores(t, probe.score_cpu, probe.score_memory, slice(0, t.n))
        assert cached.tolist() == fresh.tolist()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cluster=nodes(count=6),
    steps=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 6), st.sampled_from(["assume", "forget", "node"])), max_size=60),
    probe=pods(),
)
def test_cached_feasibility_equals_fresh_filters(cluster, steps, probe):
    """The feasibility kept per pod shape and refreshed row by row equals the filters run afresh."""
    t = table_of(*cluster)
    for k, node, what in steps:
        pod = PodRequest(key=f"d.p{k}", cpu=300 * k, memory=GiB // (k + 1), host_ports=(HostPort(port=80),) if k % 3 == 0 else ())
        if what == "assume":
            t.assume(pod, f"n{node}")
        elif what == "forget":
            t.forget(pod.key)
        elif node < len(cluster):
            t.set_node(msgspec.structs.replace(cluster[node], cpu=cluster[node].cpu // 2 + 100 * k))
        else:
            t.remove_node(f"n{k % len(cluster)}")
        assert filters.fits(t, probe).tolist() == filters.feasible(t, probe).tolist()


def _state(t: NodeTable) -> tuple:
    arrays = ("alloc_cpu", "alloc_mem", "alloc_pods", "req_cpu", "req_mem", "req_pods", "score_cpu", "score_mem", "alive")
    return (
        t.next_start, t.n, list(t.names), dict(t.pods), tuple(getattr(t, a)[: t.n].tolist() for a in arrays),
        {uid: c[: t.n].tolist() for uid, c in t.owners.items()},
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster=big_clusters(), cpus=st.lists(st.sampled_from([0, 100, 600]), min_size=1, max_size=10), seed=st.integers(0, 2**16))
def test_schedule_one_changes_nothing_and_its_randomness_is_the_generator_passed(cluster, cpus, seed):
    t = table_of(*cluster)
    for i, cpu in enumerate(cpus):
        pod = PodRequest(key=f"d.p{i}", cpu=cpu, memory=GiB // 8, owner_uid="rs")
        before = _state(t)
        d = schedule_one(t, pod, np.random.default_rng(seed))
        assert _state(t) == before
        # the same table, pod and generator seed: the same decision
        assert schedule_one(t, pod, np.random.default_rng(seed)) == d
        t.next_start = d.next_start
        if d.node_name is not None:
            t.assume(pod, d.node_name)
