"""ClusterIPs, NodePorts and LoadBalancer addresses for Services: each handed out once.

Every address or port in use is a key of the KV bucket ``kyb-allocations``
(``clusterip.127-254-0-7``, ``nodeport.tcp.30080``, ``lb.127-253-0-4``) whose value names the
Service (``<namespace>/<name>``). A claim is a create-if-absent, so two api replicas allocating
at once can never hand out one address twice. An allocation follows the Service object:
``assign`` fills what the Service needs (keeping what it already has; ClusterIP is immutable),
``release`` frees what a deleted Service held, and ``repair`` frees what no Service holds
(an api that died between claiming and writing), as Kubernetes' repair controllers do.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import msgspec
from nats.js import JetStreamContext

from kyb import bus, errors
from schemas.core import LoadBalancerIngress, LoadBalancerStatus, Service, ServiceStatus

BUCKET = "kyb-allocations"

T = TypeVar("T")


@dataclass(frozen=True)
class Ranges:
    service_cidr: str = "127.254.0.0/16"       # ClusterIPs (pod IPs use 127.16-250.x.y)
    node_port_range: tuple[int, int] = (30000, 32767)
    lb_pool: str = "127.253.0.0/24"            # LoadBalancer addresses

    @classmethod
    def from_options(cls, options: dict) -> Ranges:
        ports = options.get("node_port_range") or cls.node_port_range
        if isinstance(ports, str):
            lo, _, hi = ports.partition("-")
            ports = (int(lo), int(hi))
        return cls(
            service_cidr=options.get("service_cidr") or cls.service_cidr,
            node_port_range=tuple(ports),
            lb_pool=options.get("lb_pool") or cls.lb_pool,
        )


def _invalid(field: str, msg: str) -> errors.Invalid:
    """The error a Service field that cannot be allocated answers with."""
    return errors.Invalid(f"{field}: {msg}", [errors.FieldError(field, msg)])


def _ip_key(kind: str, ip: str) -> str:
    return f"{kind}.{ip.replace('.', '-')}"


def _port_key(protocol: str, port: int) -> str:
    return f"nodeport.{protocol.lower()}.{port}"


def held_keys(svc: Service) -> set[str]:
    """The allocation keys a stored Service holds."""
    keys: set[str] = set()
    ip = svc.spec.clusterIP
    if ip and ip != "None":
        keys.add(_ip_key("clusterip", ip))
    for p in svc.spec.ports:
        if p.nodePort:
            keys.add(_port_key(p.protocol, p.nodePort))
    if svc.spec.healthCheckNodePort:
        keys.add(_port_key("TCP", svc.spec.healthCheckNodePort))
    for ing in svc.status.loadBalancer.ingress:
        if ing.ip:
            keys.add(_ip_key("lb", ing.ip))
    return keys


def owner_of(svc: Service) -> str:
    return f"{svc.metadata.namespace or 'default'}/{svc.metadata.name}"


class Allocator:
    def __init__(
        self, js: JetStreamContext, ranges: Ranges | None = None, *, rng: random.Random | None = None, replicas: int = 1
    ) -> None:
        self.js = js
        self.replicas = replicas
        self.ranges = ranges or Ranges()
        self.rng = rng or random.Random()
        self._kv: bus.Bucket | None = None
        self._net = ipaddress.ip_network(self.ranges.service_cidr)
        self._lb = ipaddress.ip_network(self.ranges.lb_pool)
        self._suspects: dict[str, float] = {}

    async def _bucket(self) -> bus.Bucket:
        if self._kv is None:
            self._kv = await bus.bucket(self.js, BUCKET, replicas=self.replicas)
        return self._kv

    async def _claim(self, key: str, owner: str) -> bool:
        kv = await self._bucket()
        try:
            await kv.create(key, owner.encode())
            return True
        except errors.AlreadyExists:
            with contextlib.suppress(errors.NotFound):
                entry = await kv.get(key)
                return entry.value == owner.encode()
            return False

    async def _first_claimed(self, candidates: Iterable[T], key: Callable[[T], str], owner: str) -> T | None:
        """The first candidate whose key ``owner`` holds once claimed (None when none could be)."""
        for candidate in candidates:
            if await self._claim(key(candidate), owner):
                return candidate
        return None

    async def _free(self, key: str, owner: str) -> None:
        kv = await self._bucket()
        with contextlib.suppress(errors.NotFound, errors.Conflict):
            entry = await kv.get(key)
            if entry.value == owner.encode():
                await kv.delete(key, last=entry.revision)

    async def _ip(self, kind: str, net: ipaddress.IPv4Network, owner: str, field: str, requested: str | None) -> str:
        if requested:
            try:
                ip = ipaddress.ip_address(requested)
            except ValueError:
                raise _invalid(field, f"Invalid value: {requested!r}: must be a valid IP address") from None
            if ip not in net:
                msg = f"Invalid value: {requested!r}: provided IP is not in the valid range {net}"
                raise _invalid(field, msg)
            if not await self._claim(_ip_key(kind, requested), owner):
                msg = f"Invalid value: {requested!r}: provided IP is already allocated"
                raise _invalid(field, msg)
            return requested
        first, size = int(net.network_address) + 1, net.num_addresses - 2

        def key(candidate: str) -> str:
            return _ip_key(kind, candidate)

        # random probes first: cheap while the range is mostly free
        probes = (str(ipaddress.ip_address(first + self.rng.randrange(size))) for _ in range(64))
        found = await self._first_claimed(probes, key, owner)
        if found is not None:
            return found
        taken = set(await (await self._bucket()).keys())
        every = (str(ipaddress.ip_address(first + offset)) for offset in range(size))
        found = await self._first_claimed((c for c in every if key(c) not in taken), key, owner)
        if found is not None:
            return found
        msg = f"range {net} is full"
        raise _invalid(field, msg)

    async def _port(self, protocol: str, owner: str, field: str, requested: int | None) -> int:
        lo, hi = self.ranges.node_port_range
        if requested:
            if not lo <= requested <= hi:
                msg = f"Invalid value: {requested}: provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                raise _invalid(field, msg)
            if not await self._claim(_port_key(protocol, requested), owner):
                msg = f"Invalid value: {requested}: provided port is already allocated"
                raise _invalid(field, msg)
            return requested

        def key(candidate: int) -> str:
            return _port_key(protocol, candidate)

        found = await self._first_claimed((self.rng.randint(lo, hi) for _ in range(64)), key, owner)
        if found is not None:
            return found
        found = await self._first_claimed(range(lo, hi + 1), key, owner)
        if found is not None:
            return found
        msg = f"no free node port in {lo}-{hi}"
        raise _invalid(field, msg)

    async def assign(self, svc: Service, current: Service | None) -> tuple[Service, set[str]]:
        """The Service with what it needs allocated; also the keys newly claimed (to free if
        the write that follows fails)."""
        owner = owner_of(svc)
        spec = svc.spec
        claimed: set[str] = set()
        before = held_keys(current) if current is not None else set()
        try:
            if spec.type == "ExternalName":
                cluster_ip = ""
            elif current is not None and current.spec.clusterIP and current.spec.type != "ExternalName":
                if spec.clusterIP and spec.clusterIP != current.spec.clusterIP:
                    msg = "field is immutable"
                    raise errors.Invalid(f"spec.clusterIP: Invalid value: {spec.clusterIP!r}: {msg}",
                                         [errors.FieldError("spec.clusterIP", msg)])
                cluster_ip = current.spec.clusterIP
            elif spec.clusterIP == "None":
                cluster_ip = "None"
            else:
                cluster_ip = await self._ip("clusterip", self._net, owner, "spec.clusterIP", spec.clusterIP or None)
            if cluster_ip and cluster_ip != "None":
                claimed.add(_ip_key("clusterip", cluster_ip))
            ports = []
            old_ports = {(p.name, p.port, p.protocol): p.nodePort for p in (current.spec.ports if current else [])}
            for i, p in enumerate(spec.ports):
                node_port = None
                if spec.type in ("NodePort", "LoadBalancer"):
                    keep = old_ports.get((p.name, p.port, p.protocol))
                    want = p.nodePort or keep
                    node_port = await self._port(p.protocol, owner, f"spec.ports[{i}].nodePort", want)
                    claimed.add(_port_key(p.protocol, node_port))
                elif p.nodePort:
                    msg = f"may not be used when `type` is '{spec.type}'"
                    raise errors.Invalid(f"spec.ports[{i}].nodePort: {msg}", [errors.FieldError(f"spec.ports[{i}].nodePort", msg)])
                ports.append(msgspec.structs.replace(p, nodePort=node_port))
            health_port = None  # kube-proxy's health check of a Local LoadBalancer, on TCP
            if spec.type == "LoadBalancer" and spec.externalTrafficPolicy == "Local":
                want = spec.healthCheckNodePort or (current.spec.healthCheckNodePort if current else None)
                health_port = await self._port("TCP", owner, "spec.healthCheckNodePort", want)
                claimed.add(_port_key("TCP", health_port))
            elif spec.healthCheckNodePort:
                msg = "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"
                raise errors.Invalid(f"spec.healthCheckNodePort: {msg}", [errors.FieldError("spec.healthCheckNodePort", msg)])
            status = current.status if current is not None else svc.status
            if spec.type == "LoadBalancer":
                have = [i.ip for i in (current.status.loadBalancer.ingress if current else []) if i.ip]
                lb_ip = have[0] if have else await self._ip("lb", self._lb, owner, "spec.loadBalancerIP", spec.loadBalancerIP or None)
                claimed.add(_ip_key("lb", lb_ip))
                status = msgspec.structs.replace(status, loadBalancer=LoadBalancerStatus(ingress=[LoadBalancerIngress(ip=lb_ip)]))
            else:
                status = msgspec.structs.replace(status or ServiceStatus(), loadBalancer=LoadBalancerStatus())
        except BaseException:
            for key in claimed - before:
                await self._free(key, owner)
            raise
        new_spec = msgspec.structs.replace(
            spec,
            clusterIP=cluster_ip,
            clusterIPs=[cluster_ip] if cluster_ip else [],
            ports=ports,
            healthCheckNodePort=health_port,
        )
        return msgspec.structs.replace(svc, spec=new_spec, status=status), claimed - before

    async def release_keys(self, keys: set[str], owner: str) -> None:
        for key in keys:
            await self._free(key, owner)

    async def release(self, svc: Service) -> None:
        await self.release_keys(held_keys(svc), owner_of(svc))

    async def repair(self, services: list[Service], *, older_than: float = 60.0, now: float | None = None) -> int:
        """Free allocations no Service holds, once they have been seen orphaned for
        ``older_than`` seconds (so a create in flight keeps what it just claimed)."""
        kv = await self._bucket()
        wanted = {key for s in services for key in held_keys(s)}
        keys = await kv.keys()
        now = time.monotonic() if now is None else now
        orphans = {k for k in keys if k not in wanted}
        self._suspects = {k: t for k, t in self._suspects.items() if k in orphans}
        freed = 0
        for key in orphans:
            first = self._suspects.setdefault(key, now)
            if now - first < older_than:
                continue
            with contextlib.suppress(errors.KybError):  # gone, changed meanwhile, or not reachable: next round
                entry = await kv.get(key)
                await kv.delete(key, last=entry.revision)
                freed += 1
            self._suspects.pop(key, None)
        return freed
