"""Node pod CIDRs, the pure part: which /24 (by default) of the cluster CIDR each Node gets.

Kubernetes' range allocator: the cluster CIDR (default 10.244.0.0/16) is cut into ranges of
``node_mask`` bits (/24: 256 ranges, 254 pod addresses each). :class:`CidrSet` knows which are
taken; it is rebuilt from the Nodes' ``spec.podCIDR`` when the controller starts leading, takes
what it hands out at once (the informer may lag behind its own writes) and gets a range back
when its Node is gone. Ranges are handed out round the set, so a released one is not reused at
once. No I/O, no asyncio.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import msgspec

from schemas.core import Node

DEFAULT_CLUSTER_CIDR = "10.244.0.0/16"
DEFAULT_NODE_MASK = 24


class CidrExhausted(Exception):
    """Every range of the cluster CIDR is taken."""


@dataclass(frozen=True)
class Settings:
    cluster_cidr: str = DEFAULT_CLUSTER_CIDR  # pod addresses of the whole cluster
    node_mask: int = DEFAULT_NODE_MASK  # prefix length of each node's range


class CidrSet:
    """The ranges of one cluster CIDR, each free or taken."""

    def __init__(self, cluster_cidr: str, node_mask: int) -> None:
        self.cluster = ipaddress.ip_network(cluster_cidr, strict=True)
        if not self.cluster.prefixlen <= node_mask <= self.cluster.max_prefixlen - 2:
            raise ValueError(
                f"node mask /{node_mask} does not fit the cluster CIDR {cluster_cidr} "
                f"(between /{self.cluster.prefixlen} and /{self.cluster.max_prefixlen - 2})"
            )
        self.mask = node_mask
        self.size = 1 << (node_mask - self.cluster.prefixlen)
        self._step = 1 << (self.cluster.max_prefixlen - node_mask)
        self._taken: set[int] = set()
        self._next = 0

    def _index(self, cidr: str) -> int | None:
        """The index of ``cidr`` when it is exactly one of this set's ranges."""
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return None
        if net.version != self.cluster.version or net.prefixlen != self.mask or not net.subnet_of(self.cluster):  # type: ignore[arg-type]
            return None
        return (int(net.network_address) - int(self.cluster.network_address)) // self._step

    def cidr(self, index: int) -> str:
        base = int(self.cluster.network_address) + index * self._step
        return f"{ipaddress.ip_address(base)}/{self.mask}"

    def contains(self, cidr: str) -> bool:
        return self._index(cidr) is not None

    def occupy(self, cidr: str) -> bool:
        """Take ``cidr`` (a Node's existing range). False when it is not one of this set's
        ranges or is taken already."""
        index = self._index(cidr)
        if index is None or index in self._taken:
            return False
        self._taken.add(index)
        return True

    def release(self, cidr: str) -> None:
        index = self._index(cidr)
        if index is not None:
            self._taken.discard(index)

    def allocate(self) -> str:
        if len(self._taken) >= self.size:
            raise CidrExhausted(f"no free /{self.mask} left in the cluster CIDR {self.cluster}")
        index = self._next
        while index in self._taken:
            index = (index + 1) % self.size
        self._taken.add(index)
        self._next = (index + 1) % self.size
        return self.cidr(index)

    def taken(self) -> list[str]:
        return [self.cidr(i) for i in sorted(self._taken)]


def node_cidr(node: Node) -> str:
    """The range a Node holds (``spec.podCIDRs[0]``, else ``spec.podCIDR``), or ""."""
    return (node.spec.podCIDRs[0] if node.spec.podCIDRs else "") or node.spec.podCIDR


def rebuild(nodes: list[Node], settings: Settings) -> tuple[CidrSet, dict[str, str]]:
    """The set as the Nodes have it, and which node holds which range. Nodes holding a range
    outside the cluster CIDR (a loopback-mode kubelet's own) are left out; of two nodes
    claiming the same range, the older one keeps it."""
    cidrs = CidrSet(settings.cluster_cidr, settings.node_mask)
    held: dict[str, str] = {}
    for node in sorted(nodes, key=lambda n: (n.metadata.creationTimestamp or "", n.metadata.name)):
        cidr = node_cidr(node)
        if cidr and cidrs.occupy(cidr):
            held[node.metadata.name] = cidr
    return cidrs, held


def wants_cidr(node: Node) -> bool:
    """A Node needs a range when it names none (a range once given is never changed, as in
    Kubernetes; a duplicate is left for a person to resolve)."""
    return not node_cidr(node) and not node.metadata.deletionTimestamp


def with_cidr(node: Node, cidr: str) -> Node:
    return msgspec.structs.replace(node, spec=msgspec.structs.replace(node.spec, podCIDR=cidr, podCIDRs=[cidr]))
