"""netagent's plan: routes to the other nodes, never to its own range, unreachable beneath."""

from __future__ import annotations

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
