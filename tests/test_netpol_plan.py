"""NetworkPolicy rules of one node (services.netpol.plan) and the NetworkPolicy schema: defaults,
validation, the docs' examples as allowed flows, and hypothesis properties (a pod no policy
selects is never filtered; adding a policy never takes a flow away from an isolated pod)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.core import Namespace
from schemas.networking import NetworkPolicy
from schemas.pod import Pod
from schemas.validation import SchemaError, decode
from services.netpol.plan import allowed, chain_name, permits, ruleset

NODE = "n1"


def make_pod(name: str, ip: str, labels: dict, ns: str = "default", node: str = NODE, ports: dict | None = None) -> Pod:
    container = {"name": "c", "image": "x",
                 "ports": [{"name": k, "containerPort": v} for k, v in (ports or {}).items()]}
    p = decode({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": {"nodeName": node, "containers": [container]}})
    return msgspec.structs.replace(p, status=msgspec.structs.replace(p.status, podIP=ip, phase="Running"))


def make_ns(name: str, labels: dict | None = None) -> Namespace:
    return decode({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}})


def policy(name: str, spec: dict, ns: str = "default") -> NetworkPolicy:
    return decode({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                   "metadata": {"name": name, "namespace": ns}, "spec": spec})


DB = make_pod("db", "10.250.0.2", {"role": "db"}, ports={"http": 8080})
FRONTEND = make_pod("frontend", "10.250.1.2", {"role": "frontend"}, node="n2")
OTHER = make_pod("other", "10.250.0.3", {})
PROJ = make_pod("proj", "10.250.1.3", {}, ns="myproject", node="n2")
PODS = [DB, FRONTEND, OTHER, PROJ]
NAMESPACES = [make_ns("default"), make_ns("myproject", {"project": "myproject"})]

DOCS_EXAMPLE = {  # "test-network-policy" of the Kubernetes documentation
    "podSelector": {"matchLabels": {"role": "db"}},
    "policyTypes": ["Ingress", "Egress"],
    "ingress": [{"from": [{"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}},
                          {"namespaceSelector": {"matchLabels": {"project": "myproject"}}},
                          {"podSelector": {"matchLabels": {"role": "frontend"}}}],
                 "ports": [{"protocol": "TCP", "port": 6379}]}],
    "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}], "ports": [{"protocol": "TCP", "port": 5978}]}],
}


def rules(*policies: NetworkPolicy, pods: list[Pod] = PODS):
    return allowed(list(policies), pods, NAMESPACES, NODE)


def test_defaults_and_validation() -> None:
    assert policy("a", {"podSelector": {}}).spec.policyTypes == ["Ingress"]
    assert policy("a", {"podSelector": {}, "egress": [{}]}).spec.policyTypes == ["Ingress", "Egress"]
    assert policy("a", {"podSelector": {}, "policyTypes": ["Egress"]}).spec.policyTypes == ["Egress"]
    assert policy("a", {"ingress": [{"ports": [{"port": 80}]}]}).spec.ingress[0].ports[0].protocol == "TCP"
    bad = {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]},
           "ingress": [{"from": [{}, {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}},
                                 {"ipBlock": {"cidr": "nope"}}, {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/8"]}}],
                        "ports": [{"endPort": 90}, {"port": "http", "endPort": 90}, {"port": 100, "endPort": 90},
                                  {"port": 70000}]}]}
    with pytest.raises(SchemaError) as e:
        policy("bad", bad)
    fields = [f for f, _ in e.value.details]
    assert "spec.podSelector" in fields
    assert {"spec.ingress[0].from[0]", "spec.ingress[0].from[1]", "spec.ingress[0].from[2].ipBlock.cidr",
            "spec.ingress[0].from[3].ipBlock.except[0]", "spec.ingress[0].ports[0].endPort",
            "spec.ingress[0].ports[1].endPort", "spec.ingress[0].ports[2].endPort",
            "spec.ingress[0].ports[3].port"} <= set(fields)
    with pytest.raises(SchemaError):
        policy("bad", {"policyTypes": ["Sideways"]})


def test_the_docs_example() -> None:
    r = rules(policy("test-network-policy", DOCS_EXAMPLE))
    assert {x.ip for x in r} == {DB.status.podIP, OTHER.status.podIP}  # the node's pods
    db = DB.status.podIP
    assert permits(r, FRONTEND.status.podIP, db, "tcp", 6379)
    assert permits(r, PROJ.status.podIP, db, "tcp", 6379)  # namespaceSelector
    assert permits(r, "172.17.0.9", db, "tcp", 6379) and not permits(r, "172.17.1.9", db, "tcp", 6379)
    assert not permits(r, OTHER.status.podIP, db, "tcp", 6379)
    assert not permits(r, FRONTEND.status.podIP, db, "tcp", 6380)
    assert not permits(r, FRONTEND.status.podIP, db, "udp", 6379)
    assert permits(r, db, "10.0.0.7", "tcp", 5978) and not permits(r, db, "10.0.0.7", "tcp", 5979)
    assert not permits(r, db, "10.0.1.7", "tcp", 5978)
    assert permits(r, OTHER.status.podIP, FRONTEND.status.podIP, "udp", 53)  # selected by nothing
    text = ruleset(r)
    assert text.startswith("table inet kyb-netpol\ndelete table inet kyb-netpol\ntable inet kyb-netpol {")
    assert "ct state established,related accept" in text
    assert f"ip daddr {db} jump {chain_name('ingress', db)}" in text
    assert "ip saddr 172.17.0.0/16 ip saddr != 172.17.1.0/24 meta l4proto tcp th dport 6379 return" in text


@pytest.mark.parametrize(("spec", "flows"), [
    pytest.param({"podSelector": {}, "policyTypes": ["Ingress"]},
                 [("frontend", "db", False), ("db", "frontend", True)], id="default-deny-ingress"),
    pytest.param({"podSelector": {}, "ingress": [{}], "policyTypes": ["Ingress"]},
                 [("frontend", "db", True)], id="allow-all-ingress"),
    pytest.param({"podSelector": {}, "policyTypes": ["Egress"]},
                 [("db", "frontend", False), ("frontend", "db", True)], id="default-deny-egress"),
    pytest.param({"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]},
                 [("db", "frontend", True)], id="allow-all-egress"),
    pytest.param({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
                 [("db", "frontend", False), ("frontend", "db", False), ("other", "db", False)], id="default-deny-all"),
])
def test_the_docs_defaults(spec: dict, flows: list) -> None:
    ips = {p.metadata.name: p.status.podIP for p in PODS}
    r = rules(policy("p", spec))
    for src, dst, ok in flows:
        assert permits(r, ips[src], ips[dst], "tcp", 8080) is ok, (src, dst)


def test_named_ports_and_end_ports() -> None:
    ingress = policy("named", {"podSelector": {"matchLabels": {"role": "db"}},
                               "ingress": [{"ports": [{"port": "http"}, {"port": "nope"}]}]})
    r = rules(ingress)
    assert permits(r, OTHER.status.podIP, DB.status.podIP, "tcp", 8080)
    assert not permits(r, OTHER.status.podIP, DB.status.podIP, "tcp", 8081)
    egress = policy("multi-port-egress", {"podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Egress"],
                                          "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
                                                      "ports": [{"protocol": "TCP", "port": 32000, "endPort": 32768}]},
                                                     {"ports": [{"port": "http"}]}]})
    r = rules(egress)
    db = DB.status.podIP
    assert all(permits(r, db, "10.0.0.1", "tcp", p) for p in (32000, 32500, 32768))
    assert not permits(r, db, "10.0.0.1", "tcp", 31999) and not permits(r, db, "10.0.0.1", "tcp", 32769)
    assert permits(r, db, db, "tcp", 8080)  # a named port of the destination pod
    assert not permits(r, db, OTHER.status.podIP, "tcp", 8080)  # OTHER has no port named http
    assert "th dport 32000-32768" in ruleset(r)
    assert f"ip daddr . meta l4proto . th dport {db} . tcp . 8080 return" in ruleset(r)


def test_pod_and_namespace_selectors_together() -> None:
    both = policy("both", {"podSelector": {}, "ingress": [{"from": [{
        "namespaceSelector": {"matchLabels": {"project": "myproject"}}, "podSelector": {"matchLabels": {"x": "y"}}}]}]})
    proj_xy = make_pod("proj-xy", "10.250.1.4", {"x": "y"}, ns="myproject", node="n2")
    default_xy = make_pod("def-xy", "10.250.1.5", {"x": "y"}, node="n2")
    r = rules(both, pods=[*PODS, proj_xy, default_xy])
    assert permits(r, proj_xy.status.podIP, DB.status.podIP, "tcp", 1)
    assert not permits(r, default_xy.status.podIP, DB.status.podIP, "tcp", 1)
    assert not permits(r, PROJ.status.podIP, DB.status.podIP, "tcp", 1)
    by_name = policy("by-name", {"podSelector": {}, "ingress": [{"from": [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "myproject"}}}]}]})
    assert permits(rules(by_name), PROJ.status.podIP, DB.status.podIP, "tcp", 1)


# --- properties ------------------------------------------------------------------------------

LABELS = st.dictionaries(st.sampled_from(["app", "role", "tier"]), st.sampled_from(["a", "b"]), max_size=2)
SELECTOR = st.builds(lambda m: {"matchLabels": m}, LABELS)
PEER = st.one_of(
    st.builds(lambda s: {"podSelector": s}, SELECTOR),
    st.builds(lambda s: {"namespaceSelector": s}, st.builds(lambda m: {"matchLabels": m},
                                                            st.dictionaries(st.just("project"), st.just("myproject")))),
    st.builds(lambda n: {"ipBlock": {"cidr": f"10.250.{n}.0/24"}}, st.integers(0, 1)),
)
PORT = st.one_of(st.builds(lambda p: {"port": p}, st.sampled_from([80, 8080])),
                 st.just({"port": "http"}), st.just({"port": 8000, "endPort": 8100}), st.just({"protocol": "UDP"}))
RULE = st.fixed_dictionaries({}, optional={"ports": st.lists(PORT, max_size=2), "peers": st.lists(PEER, max_size=2)})
SPEC = st.builds(
    lambda sel, types, ing, egr: {"podSelector": sel, "policyTypes": types,
                                  "ingress": [{"from": r.get("peers", []), "ports": r.get("ports", [])} for r in ing],
                                  "egress": [{"to": r.get("peers", []), "ports": r.get("ports", [])} for r in egr]},
    SELECTOR, st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]]), st.lists(RULE, max_size=2),
    st.lists(RULE, max_size=2))
PODSET = st.lists(st.tuples(LABELS, st.sampled_from(["default", "myproject"]), st.sampled_from([NODE, "n2"])),
                  min_size=1, max_size=5)


def _pods(spec: list) -> list[Pod]:
    return [make_pod(f"p{i}", f"10.250.{0 if node == NODE else 1}.{i + 2}", labels, ns, node, {"http": 8080})
            for i, (labels, ns, node) in enumerate(spec)]


FLOWS = [("tcp", 80), ("tcp", 8080), ("tcp", 8050), ("udp", 53)]


@settings(max_examples=150, deadline=None)
@given(specs=st.lists(SPEC, max_size=3), podset=PODSET)
def test_a_pod_selected_by_no_policy_is_never_filtered(specs: list, podset: list) -> None:
    pods = _pods(podset)
    policies = [policy(f"np{i}", s, ns) for i, s in enumerate(specs) for ns in ("default",)]
    r = rules(*policies, pods=pods)
    text = ruleset(r)
    for pod in pods:
        selected = any(p.metadata.namespace == pod.metadata.namespace and
                       all(pod.metadata.labels.get(k) == v for k, v in p.spec.podSelector.matchLabels.items())
                       for p in policies)
        if pod.spec.nodeName == NODE and not selected:
            ip = pod.status.podIP
            assert f"saddr {ip} jump" not in text and f"daddr {ip} jump" not in text
            for other in pods:
                for proto, port in FLOWS:
                    if not any(x.ip == other.status.podIP for x in r):
                        assert permits(r, pod.status.podIP, other.status.podIP, proto, port)
                        assert permits(r, other.status.podIP, pod.status.podIP, proto, port)


@settings(max_examples=150, deadline=None)
@given(specs=st.lists(SPEC, min_size=1, max_size=3), extra=SPEC, podset=PODSET)
def test_adding_a_policy_never_removes_an_allowed_flow_of_an_isolated_pod(specs: list, extra: dict,
                                                                         podset: list) -> None:
    pods = _pods(podset)
    before_policies = [policy(f"np{i}", s) for i, s in enumerate(specs)]
    before = rules(*before_policies, pods=pods)
    after = rules(*before_policies, policy("extra", extra), pods=pods)
    by_ip = {r.ip: r for r in before}
    for src in pods:
        for dst in pods:
            s, d = by_ip.get(src.status.podIP), by_ip.get(dst.status.podIP)
            # only pods isolated before in every direction that applies to the flow
            if (s is not None and s.egress is None) or (d is not None and d.ingress is None):
                continue
            for proto, port in FLOWS:
                if permits(before, src.status.podIP, dst.status.podIP, proto, port):
                    assert permits(after, src.status.podIP, dst.status.podIP, proto, port)


@settings(max_examples=60, deadline=None)
@given(specs=st.lists(SPEC, max_size=3), podset=PODSET)
def test_one_table_for_two_nodes_of_one_namespace_decides_as_two_hosts_would(specs: list, podset: list) -> None:
    # `kyb up --nodes 2`: both nodes' pods in the host's namespace, one agent, one table
    pods = _pods(podset)
    policies = [policy(f"np{i}", s) for i, s in enumerate(specs)]
    both = allowed(policies, pods, NAMESPACES, (NODE, "n2"))
    one, two = allowed(policies, pods, NAMESPACES, NODE), allowed(policies, pods, NAMESPACES, "n2")
    assert sorted(both, key=lambda r: r.ip) == sorted([*one, *two], key=lambda r: r.ip)
    for src in pods:
        for dst in pods:
            for proto, port in FLOWS:
                s, d = src.status.podIP, dst.status.podIP
                assert permits(both, s, d, proto, port) == (permits(one, s, d, proto, port) and
                                                            permits(two, s, d, proto, port))


def test_a_node_name_is_one_name_not_a_set_of_letters() -> None:
    assert allowed([], [make_pod("x", "10.250.0.9", {}, node="n")], NAMESPACES, "n1") == []
