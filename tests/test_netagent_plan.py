"""netagent's plan: routes to the other nodes, never to its own range, unreachable beneath."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.core import Node, NodeAddress, NodeSpec, NodeStatus
from schemas.meta import ObjectMeta
from services.netagent.plan import Route, Settings, desired, vtep_mac


def node(name: str, cidr: str, ip: str) -> Node:
    return Node(metadata=ObjectMeta(name=name), spec=NodeSpec(podCIDR=cidr, podCIDRs=[cidr] if cidr else []),
                status=NodeStatus(addresses=[NodeAddress(type="InternalIP", address=ip)] if ip else []))


def test_host_gw_routes_every_other_node() -> None:
    nodes = [node("a", "10.244.0.0/24", "192.0.2.1"), node("b", "10.244.1.0/24", "192.0.2.2"),
             node("c", "", "192.0.2.3"), node("d", "127.16.0.0/16", "127.0.0.1")]
    d = desired(nodes, Settings(node_name="a"))
    assert d.routes == {Route("10.244.1.0/24", via="192.0.2.2"), Route("10.244.0.0/16", unreachable=True),
                        Route("10.96.0.0/12", unreachable=True)}
    assert d.waiting == ("node c: no podCIDR or InternalIP yet",)


def test_vxlan_has_a_vtep_and_entries_per_peer() -> None:
    nodes = [node("a", "10.244.0.0/24", "192.0.2.1"), node("b", "10.244.1.0/24", "198.51.100.2")]
    d = desired(nodes, Settings(node_name="a", backend="vxlan"))
    assert d.vtep is not None and d.vtep.ip == "10.244.0.0" and d.vtep.local == "192.0.2.1"
    assert Route("10.244.1.0/24", via="10.244.1.0", dev="kyb-vxlan", onlink=True) in d.routes
    assert {(f.mac, f.dst) for f in d.fdb} == {(vtep_mac("10.244.1.0"), "198.51.100.2")}
    assert vtep_mac("10.244.1.0") == "0a:58:0a:f4:01:00"


@given(st.lists(st.tuples(st.integers(0, 7), st.integers(1, 9)), min_size=1, max_size=12),
       st.sampled_from(["host-gw", "vxlan"]))
def test_own_range_is_never_routed_away(specs: list[tuple[int, int]], backend: str) -> None:
    nodes = [node(f"n{i}", f"10.244.{third}.0/24", f"192.0.2.{host}") for i, (third, host) in enumerate(specs)]
    d = desired(nodes, Settings(node_name="n0", backend=backend))  # type: ignore[arg-type]
    own = nodes[0].spec.podCIDR
    assert not [r for r in d.routes if r.dst == own]
    assert Route("10.244.0.0/16", unreachable=True) in d.routes
    specific = [r for r in d.routes if not r.unreachable]
    assert len({r.dst for r in specific}) == len(specific)


@pytest.mark.parametrize("backend", [pytest.param("host-gw", id="host-gw"), pytest.param("vxlan", id="vxlan")])
def test_nodes_sharing_this_hosts_address_get_no_route_via_ourselves(backend: str) -> None:
    # `kyb up --nodes 3`: three kubelets on one host (InternalIP 127.0.0.1, or the host's address),
    # one agent; each node's bridge has the connected route to its range
    nodes = [node("a", "10.244.0.0/24", "192.0.2.1"), node("b", "10.244.1.0/24", "192.0.2.1"),
             node("c", "10.244.2.0/24", "127.0.0.1"), node("d", "10.244.3.0/24", "198.51.100.4"),
             node("e", "10.244.4.0/24", "192.0.2.9")]
    d = desired(nodes, Settings(node_name="a", backend=backend), local_addresses=["192.0.2.9", "127.0.0.1"])  # type: ignore[arg-type]
    assert {r.dst for r in d.routes if not r.unreachable} == {"10.244.3.0/24"}
    assert not [r for r in d.routes if r.via in ("192.0.2.1", "192.0.2.9", "127.0.0.1")]
    assert {f.dst for f in d.fdb} == ({"198.51.100.4"} if backend == "vxlan" else set())
    assert d.waiting == ()


def test_an_agent_of_no_node_routes_only_the_other_hosts() -> None:
    # the one agent of `kyb up --nodes 2` is named after the host, not after one of its nodes
    nodes = [node("node-1", "10.244.0.0/24", "127.0.0.1"), node("node-2", "10.244.1.0/24", "127.0.0.1")]
    d = desired(nodes, Settings(node_name="host"))
    assert d.routes == {Route("10.244.0.0/16", unreachable=True), Route("10.96.0.0/12", unreachable=True)}


def test_a_remote_range_overlapping_a_local_nodes_is_not_routed() -> None:
    nodes = [node("a", "10.244.0.0/24", "192.0.2.1"), node("b", "10.244.1.0/24", "192.0.2.1"),
             node("x", "10.244.1.0/25", "198.51.100.7")]
    d = desired(nodes, Settings(node_name="a"))
    assert {r.dst for r in d.routes if not r.unreachable} == set()
    assert d.waiting == ("node x: its podCIDR 10.244.1.0/25 overlaps the range of b on this host; not routed",)


@given(st.lists(st.tuples(st.integers(0, 7), st.integers(1, 9)), min_size=1, max_size=12),
       st.sets(st.integers(1, 9)), st.sampled_from(["host-gw", "vxlan"]))
def test_no_route_or_fdb_entry_ever_points_at_this_host(specs: list[tuple[int, int]], mine: set[int],
                                                         backend: str) -> None:
    nodes = [node(f"n{i}", f"10.244.{third}.0/24", f"192.0.2.{host}") for i, (third, host) in enumerate(specs)]
    local = {f"192.0.2.{h}" for h in mine}
    d = desired(nodes, Settings(node_name="n0", backend=backend), local)  # type: ignore[arg-type]
    ours = local | {nodes[0].status.addresses[0].address}
    assert not [r for r in d.routes if r.via in ours]
    assert not [f for f in d.fdb if f.dst in ours]
