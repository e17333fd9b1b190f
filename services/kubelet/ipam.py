"""Pod IPs: each node owns a /16 inside 127.0.0.0/8 and hands every pod its own address.

Loopback addresses need no privileges and no bridge, so a pod's ports can be published on
its own 127.x.y.z on one machine. The default range comes from a hash of the node name
(127.16.0.0/16 .. 127.250.0.0/16, never 127.0.0.0/16 where the host's own services live).
The allocations live in the pods' ``status.podIP``; a restarted kubelet rebuilds the
allocator from the pods bound to it. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import ipaddress

LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


def default_cidr(node_name: str) -> str:
    """A stable /16 of 127.0.0.0/8 for ``node_name`` (second octet 16..250)."""
    digest = hashlib.sha256(node_name.encode()).digest()
    octet = 16 + int.from_bytes(digest[:4], "big") % (250 - 16 + 1)
    return f"127.{octet}.0.0/16"


def check_cidr(cidr: str) -> ipaddress.IPv4Network:
    """The network of ``cidr``; it must lie inside 127.0.0.0/8 and not be 127.0.0.0/16."""
    net = ipaddress.IPv4Network(cidr, strict=False)
    if not net.subnet_of(LOOPBACK):
        raise ValueError(f"pod CIDR {cidr} is not inside 127.0.0.0/8")
    if net.overlaps(ipaddress.IPv4Network("127.0.0.0/16")):
        raise ValueError(f"pod CIDR {cidr} overlaps 127.0.0.0/16, the host's own loopback range")
    if net.num_addresses < 4:
        raise ValueError(f"pod CIDR {cidr} is too small")
    return net


class PodIPAllocator:
    """Hands out addresses of one network, one per pod uid.
    The network address, the first host address (the node's) and the broadcast address are
    never given out. Addresses are handed out round the range, so a released one is not reused at once."""

    def __init__(self, cidr: str) -> None:
        self.network = check_cidr(cidr)
        self._first = int(self.network.network_address) + 2
        self._last = int(self.network.broadcast_address) - 1
        self._by_uid: dict[str, int] = {}
        self._taken: set[int] = set()
        self._next = self._first

    def __contains__(self, ip: str) -> bool:
        try:
            return ipaddress.IPv4Address(ip) in self.network
        except ValueError:
            return False

    def reserve(self, uid: str, ip: str) -> bool:
        """Record that ``uid`` holds ``ip`` (from its stored status). False when the address is
        outside the range or held by another pod."""
        if ip not in self:
            return False
        value = int(ipaddress.IPv4Address(ip))
        if not self._first <= value <= self._last:
            return False
        held = self._by_uid.get(uid)
        if held == value:
            return True
        if value in self._taken:
            return False
        if held is not None:
            self._taken.discard(held)
        self._by_uid[uid] = value
        self._taken.add(value)
        return True

    def allocate(self, uid: str) -> str:
        """The address of ``uid``, allocating one when it has none (ValueError when full)."""
        held = self._by_uid.get(uid)
        if held is not None:
            return str(ipaddress.IPv4Address(held))
        size = self._last - self._first + 1
        if len(self._taken) >= size:
            raise ValueError(f"no free pod IP left in {self.network}")
        candidate = self._next
        while candidate in self._taken:
            candidate = self._first + (candidate - self._first + 1) % size
        self._by_uid[uid] = candidate
        self._taken.add(candidate)
        self._next = self._first + (candidate - self._first + 1) % size
        return str(ipaddress.IPv4Address(candidate))

    def release(self, uid: str) -> None:
        held = self._by_uid.pop(uid, None)
        if held is not None:
            self._taken.discard(held)

    def held(self) -> dict[str, str]:
        return {uid: str(ipaddress.IPv4Address(v)) for uid, v in self._by_uid.items()}
