"""The nftables proxy's pure rules (services.proxy.nftplan): an incremental update applied to
the table of the old state gives exactly the table of the new one; every jump, goto and @set
names something the table holds; spreading, rejection, traffic policies, terminating
endpoints and UDP conntrack flushing as Kubernetes documents them."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.core import Service
from schemas.discovery import EndpointSlice
from services.proxy.nftplan import Flush, Settings, conntrack_flushes, full_script, ruleset, update_script

S = Settings(node_name="a", cluster_cidr="10.244.0.0/16", service_cidr="10.96.0.0/12")


def svc(name: str, ip: str, type: str = "ClusterIP", protocol: str = "TCP", node_port: int | None = None,
        lb: str = "", **spec: Any) -> Service:
    port: dict[str, Any] = {"name": "p", "port": 80, "protocol": protocol}
    if type != "ClusterIP":
        port["nodePort"] = node_port or 30000 + int(ip.rsplit(".", 1)[1])
    status = {"loadBalancer": {"ingress": [{"ip": lb}]}} if lb else {}
    return msgspec.convert({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
                            "spec": {"type": type, "clusterIP": ip, "ports": [port], **spec}, "status": status}, Service)


def slice_of(name: str, eps: list[tuple[str, str, dict[str, bool]]], protocol: str = "TCP") -> EndpointSlice:
    return msgspec.convert({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{name}-1", "namespace": "default", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4", "ports": [{"name": "p", "port": 8080, "protocol": protocol}],
        "endpoints": [{"addresses": [ip], "nodeName": node, "conditions": cond} for ip, node, cond in eps],
    }, EndpointSlice)


class Table:
    """A model of what the kernel holds after a script (enough of nft's semantics for ours)."""

    def __init__(self) -> None:
        self.chains: dict[str, list[str]] = {}
        self.sets: set[str] = set()
        self.elements: dict[tuple[str, str], str] = {}

    def apply(self, script: str) -> None:
        for line in script.splitlines():
            words = line.split(" ")
            verb, what = words[0], words[1]
            if what == "table":
                if verb == "delete":
                    self.__init__()  # type: ignore[misc]
                continue
            name = words[4] if what != "rule" else words[4]
            if what == "chain":
                if verb == "add":
                    assert name not in self.chains, f"chain {name} exists"
                    self.chains[name] = []
                elif verb == "flush":
                    self.chains[name] = []
                else:
                    assert not self.chains[name], f"deleting non-empty chain {name}"
                    assert not any(re.search(rf"(goto|jump) {re.escape(name)}(\s|,|$)", r)
                                   for rules in self.chains.values() for r in rules), f"{name} still referenced"
                    assert not any(v.endswith(f" {name}") for v in self.elements.values())
                    del self.chains[name]
            elif what == "rule":
                self.chains[name].append(" ".join(words[5:]))
            elif what in ("set", "map"):
                if verb == "add":
                    self.sets.add(name)
                else:
                    self.sets.discard(name)
            elif what == "element":
                body = line.split("{ ", 1)[1].rsplit(" }", 1)[0]
                key, _, value = body.partition(" : ")
                if verb == "add":
                    assert (name, key) not in self.elements, f"element {key} in {name} exists"
                    self.elements[(name, key)] = value
                else:
                    del self.elements[(name, key)]

    def dangling(self) -> list[str]:
        out = []
        for rules in self.chains.values():
            for r in rules:
                out += [t for t in re.findall(r"(?:goto|jump) ([^\s,}]+)", r) if t not in self.chains]
                out += [s for s in re.findall(r"@([^\s,}]+)", r) if s not in self.sets]
        out += [v.split(" ", 1)[1] for v in self.elements.values() if v.startswith("goto ")
                and v.split(" ", 1)[1] not in self.chains]
        return out


IPS = [f"10.244.{n}.{h}" for n in (0, 1) for h in (2, 3, 4)]
cond = st.sampled_from([{}, {"ready": True}, {"ready": False}, {"ready": False, "serving": True, "terminating": True},
                        {"ready": False, "serving": False, "terminating": True}])


@st.composite
def states(draw: Any) -> tuple[list[Service], list[EndpointSlice]]:
    services, slices = [], []
    for i in draw(st.sets(st.integers(1, 4), max_size=4)):
        name = f"s{i}"
        kind = draw(st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer"]))
        spec: dict[str, Any] = {}
        if draw(st.booleans()):
            spec["sessionAffinity"] = "ClientIP"
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": draw(st.sampled_from([10, 60]))}}
        if kind != "ClusterIP":
            spec["externalTrafficPolicy"] = draw(st.sampled_from(["Cluster", "Local"]))
        spec["internalTrafficPolicy"] = draw(st.sampled_from(["Cluster", "Local"]))
        protocol = draw(st.sampled_from(["TCP", "UDP"]))
        services.append(svc(name, f"10.96.0.{i}", kind, protocol, lb=f"10.252.0.{i}" if kind == "LoadBalancer" else "",
                            **spec))
        eps = draw(st.lists(st.tuples(st.sampled_from(IPS), st.sampled_from(["a", "b"]), cond), max_size=4))
        slices.append(slice_of(name, eps, protocol))
    return services, slices


@settings(max_examples=150, deadline=None)
@given(states(), states())
def test_an_update_takes_the_table_exactly_to_the_new_state(old: Any, new: Any) -> None:
    before, after = ruleset(*old, S), ruleset(*new, S)
    table = Table()
    table.apply(full_script(before, S))
    assert table.dangling() == []
    table.apply(update_script(before, after, S))
    fresh = Table()
    fresh.apply(full_script(after, S))
    assert table.chains == fresh.chains
    assert table.elements == fresh.elements
    assert table.sets == fresh.sets
    assert table.dangling() == []
    assert update_script(after, ruleset(*new, S), S) == ""


@settings(max_examples=100, deadline=None)
@given(states())
def test_spread_over_usable_endpoints_or_reject(state: Any) -> None:
    rs = ruleset(*state, S)
    table = Table()
    table.apply(full_script(rs, S))
    services, slices = state
    for service, sl in zip(services, slices, strict=True):
        ready = {e.addresses[0] for e in sl.endpoints if e.conditions.ready is not False}
        fallback = {e.addresses[0] for e in sl.endpoints if e.conditions.serving and e.conditions.terminating}
        usable = ready or fallback
        pid = f"default/{service.metadata.name}/{service.spec.ports[0].protocol.lower()}/p"
        chain = table.chains.get(f"svc-{pid}")
        if not usable:
            assert chain is None
            key = f"{service.spec.clusterIP} . {service.spec.ports[0].protocol.lower()} . 80"
            assert table.elements[("no-endpoint-services", key)] == "goto reject-chain"
            continue
        assert chain is not None
        targets = {m for r in chain for m in re.findall(r"goto ep-\S+__([\d.]+)/8080", r)}
        assert targets == usable
        dispatch = chain[-1]
        if len(usable) > 1:
            assert dispatch.startswith(f"numgen random mod {len(usable)} vmap")


def test_local_policies_use_this_node_only_and_keep_the_client() -> None:
    services = [svc("web", "10.96.0.5", "LoadBalancer", lb="10.252.0.1", externalTrafficPolicy="Local",
                    internalTrafficPolicy="Local", healthCheckNodePort=31000)]
    slices = [slice_of("web", [("10.244.0.2", "a", {}), ("10.244.1.2", "b", {})])]
    rs = ruleset(services, slices, S)
    t = Table()
    t.apply(full_script(rs, S))
    pid = "default/web/tcp/p"
    assert t.elements[("service-ips", "10.96.0.5 . tcp . 80")] == f"goto local-{pid}"
    assert t.chains[f"local-{pid}"][-1] == f"goto ep-{pid}__10.244.0.2/8080"
    ext = t.chains[f"ext-{pid}"]
    assert ext[-1] == f"goto local-{pid}" and "jump mark-for-masquerade" not in ext  # outside: client kept
    assert rs.health[31000].local_endpoints == 1
    # the other node: no local endpoint -> external traffic dropped, health 503 (0 local)
    other = ruleset(services, slices, Settings(node_name="c"))
    t2 = Table()
    t2.apply(full_script(other, Settings(node_name="c")))
    assert t2.chains[f"ext-{pid}"][-1].startswith("drop")
    assert t2.elements[("no-endpoint-services", "10.96.0.5 . tcp . 80")] == "drop"
    assert other.health[31000].local_endpoints == 0
    # several nodes in one namespace (kyb up --nodes N): the endpoints of all of them are local
    both = Settings(node_name="a", node_names=("a", "b"))
    assert ruleset(services, slices, both).health[31000].local_endpoints == 2


def test_cluster_policy_masquerades_external_traffic_and_hairpin() -> None:
    rs = ruleset([svc("web", "10.96.0.5", "NodePort", node_port=30080)],
                 [slice_of("web", [("10.244.0.2", "a", {})])], S)
    t = Table()
    t.apply(full_script(rs, S))
    pid = "default/web/tcp/p"
    assert t.chains[f"ext-{pid}"] == ["jump mark-for-masquerade", f"goto svc-{pid}"]
    assert t.elements[("service-nodeports", "tcp . 30080")] == f"goto ext-{pid}"
    ep = t.chains[f"ep-{pid}__10.244.0.2/8080"]
    assert ep[0] == "ip saddr 10.244.0.2 jump mark-for-masquerade"  # a pod reaching itself
    assert ep[-1] == "meta l4proto tcp dnat to 10.244.0.2:8080"
    assert t.chains[f"svc-{pid}"][0].endswith("ip saddr != 10.244.0.0/16 jump mark-for-masquerade")


def test_affinity_records_the_client_with_the_timeout() -> None:
    rs = ruleset([svc("web", "10.96.0.5", sessionAffinity="ClientIP",
                      sessionAffinityConfig={"clientIP": {"timeoutSeconds": 30}})],
                 [slice_of("web", [("10.244.0.2", "a", {}), ("10.244.1.2", "b", {})])], S)
    script = full_script(rs, S)
    assert "flags dynamic,timeout; timeout 30s;" in script
    assert "update @aff-default/web/tcp/p__10.244.0.2/8080/30 { ip saddr }" in script
    assert "ip saddr @aff-default/web/tcp/p__10.244.1.2/8080/30 goto ep-default/web/tcp/p__10.244.1.2/8080" in script


@pytest.mark.parametrize("headless", [pytest.param("None", id="headless"), pytest.param("", id="no-ip")])
def test_headless_services_get_nothing(headless: str) -> None:
    rs = ruleset([svc("web", headless)], [slice_of("web", [("10.244.0.2", "a", {})])], S)
    assert set(rs.fragments) == {"_base"}


def test_udp_conntrack_flushed_for_endpoints_that_left_and_services_that_got_one() -> None:
    services = [svc("dns", "10.96.0.10", "NodePort", "UDP", node_port=30053)]
    two = ruleset(services, [slice_of("dns", [("10.244.0.2", "a", {}), ("10.244.1.2", "b", {})], "UDP")], S)
    one = ruleset(services, [slice_of("dns", [("10.244.0.2", "a", {})], "UDP")], S)
    none = ruleset(services, [], S)
    assert conntrack_flushes(two, one) == [Flush("", 30053, "10.244.1.2"), Flush("10.96.0.10", 80, "10.244.1.2")]
    assert conntrack_flushes(none, one) == [Flush("", 30053, ""), Flush("10.96.0.10", 80, "")]
    tcp = [svc("web", "10.96.0.5")]
    assert conntrack_flushes(ruleset(tcp, [slice_of("web", [("10.244.0.2", "a", {})])], S), ruleset(tcp, [], S)) == []
