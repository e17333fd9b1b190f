"""Routes between nodes, the pure part: what the kernel of one node should hold for the others.

Like flannel. Every other Node's ``spec.podCIDR`` is reached through that Node:

- ``host-gw``: a route ``<podCIDR> via <InternalIP>`` (the nodes share an L2 segment);
- ``vxlan``: a kernel vxlan device (``kyb-vxlan``) carries pod traffic across any L3 network.
  Each node's tunnel end (VTEP) has the first address of its podCIDR's network (``.0``) and a
  MAC derived from it (``0a:58`` + the address, so no node has to publish it); for every other
  node: a route ``<podCIDR> via <its VTEP> dev kyb-vxlan onlink``, a permanent neighbour entry
  (VTEP -> MAC) and an FDB entry (MAC -> InternalIP).

Beneath the specific routes, the whole cluster CIDR and service CIDR are ``unreachable``, so
traffic meant for a pod or Service that no node holds is refused here and never leaves by the
default route. This node's own range is never routed away (its bridge holds it).

Several Nodes may share this host's network namespace (`kyb up --nodes 3`: one bridge per
kubelet, one agent for all of them). A Node whose InternalIP is one of this host's addresses
(``local_addresses``, or any loopback address) is served by its bridge's connected route: it
gets no route "via" ourselves, no FDB entry towards ourselves, and its range counts as local,
so no other Node's overlapping range is routed over it. No I/O.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from schemas.core import Node

Backend = Literal["host-gw", "vxlan"]
VXLAN_DEVICE = "kyb-vxlan"
ROUTE_PROTO = "77"  # routes this agent owns carry this protocol number (ip route ... proto 77)
UNREACHABLE_METRIC = 4000  # beneath everything else for the same prefix


@dataclass(frozen=True)
class Settings:
    node_name: str
    backend: Backend = "host-gw"
    cluster_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/12"


@dataclass(frozen=True, order=True)
class Route:
    dst: str
    via: str = ""  # gateway ("" for an unreachable route)
    dev: str = ""
    onlink: bool = False
    unreachable: bool = False


@dataclass(frozen=True, order=True)
class Neighbour:
    ip: str
    mac: str


@dataclass(frozen=True, order=True)
class Fdb:
    mac: str
    dst: str  # the node's InternalIP


@dataclass(frozen=True)
class Vtep:
    ip: str  # the device's own address (/32)
    mac: str
    local: str  # this node's InternalIP


@dataclass(frozen=True)
class Desired:
    routes: frozenset[Route] = frozenset()
    neighbours: frozenset[Neighbour] = frozenset()
    fdb: frozenset[Fdb] = frozenset()
    vtep: Vtep | None = None  # vxlan: this node's device
    waiting: tuple[str, ...] = field(default=())  # why some nodes are not routed yet


def node_cidr(node: Node) -> str:
    return (node.spec.podCIDRs[0] if node.spec.podCIDRs else "") or node.spec.podCIDR


def internal_ip(node: Node) -> str:
    return next((a.address for a in node.status.addresses if a.type == "InternalIP"), "")


def vtep_ip(pod_cidr: str) -> str:
    return str(ipaddress.ip_network(pod_cidr, strict=False).network_address)


def vtep_mac(ip: str) -> str:
    return "0a:58:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


def is_local(address: str, local_addresses: frozenset[str]) -> bool:
    """Whether ``address`` is this host's own: one of its addresses, or a loopback address."""
    try:
        return address in local_addresses or ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def desired(nodes: list[Node], settings: Settings, local_addresses: Iterable[str] = ()) -> Desired:
    """What the kernel should hold; ``local_addresses`` are this host's own (``ip addr``)."""
    cluster = ipaddress.ip_network(settings.cluster_cidr)
    me = next((n for n in nodes if n.metadata.name == settings.node_name), None)
    mine = node_cidr(me) if me is not None else ""
    own = ipaddress.ip_network(mine, strict=False) if mine else None
    ours = frozenset(local_addresses) | ({internal_ip(me)} if me is not None and internal_ip(me) else set())
    local: dict[str, str] = {}  # ranges of Nodes on this host (their bridges hold them) -> node
    for node in nodes:
        cidr, address = node_cidr(node), internal_ip(node)
        if (node.metadata.name != settings.node_name and not node.metadata.deletionTimestamp and cidr and address
                and is_local(address, ours)):
            with contextlib.suppress(ValueError):
                local[str(ipaddress.ip_network(cidr, strict=False))] = node.metadata.name
    routes = {
        Route(dst=str(cluster), unreachable=True),
        Route(dst=str(ipaddress.ip_network(settings.service_cidr)), unreachable=True),
    }
    neighbours: set[Neighbour] = set()
    fdb: set[Fdb] = set()
    waiting: list[str] = []
    vtep = None
    if settings.backend == "vxlan":
        if own is None or me is None or not internal_ip(me):
            return Desired(routes=frozenset(routes), waiting=(f"this node {settings.node_name} has no podCIDR or InternalIP yet",))
        vtep = Vtep(ip=vtep_ip(mine), mac=vtep_mac(vtep_ip(mine)), local=internal_ip(me))
    routed: dict[str, str] = {}  # range -> the node it is routed to
    for node in sorted(nodes, key=lambda n: n.metadata.name):
        name = node.metadata.name
        if name == settings.node_name or node.metadata.deletionTimestamp:
            continue
        cidr, address = node_cidr(node), internal_ip(node)
        if not cidr or not address:
            waiting.append(f"node {name}: no podCIDR or InternalIP yet")
            continue
        net = ipaddress.ip_network(cidr, strict=False)
        if net.version != 4 or not net.subnet_of(cluster):  # type: ignore[arg-type]
            continue  # not a range of this cluster's pod network (a loopback-mode node)
        if is_local(address, ours):
            continue  # a Node of this host: its bridge's connected route serves its range
        if own is not None and net.overlaps(own):
            waiting.append(f"node {name}: its podCIDR {cidr} overlaps this node's {mine}; not routed")
            continue
        clash = next((n for r, n in local.items() if net.overlaps(ipaddress.ip_network(r))), None)
        if clash is not None:
            waiting.append(f"node {name}: its podCIDR {cidr} overlaps the range of {clash} on this host; not routed")
            continue
        if any(net.overlaps(ipaddress.ip_network(other)) for other in routed):
            waiting.append(f"node {name}: its podCIDR {cidr} overlaps another node's; not routed")
            continue
        routed[str(net)] = name
        if settings.backend == "host-gw":
            routes.add(Route(dst=str(net), via=address))
        else:
            peer = vtep_ip(cidr)
            routes.add(Route(dst=str(net), via=peer, dev=VXLAN_DEVICE, onlink=True))
            neighbours.add(Neighbour(ip=peer, mac=vtep_mac(peer)))
            fdb.add(Fdb(mac=vtep_mac(peer), dst=address))
    return Desired(routes=frozenset(routes), neighbours=frozenset(neighbours), fdb=frozenset(fdb), vtep=vtep,
                   waiting=tuple(waiting))
