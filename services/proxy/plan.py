"""Which sockets the proxy should listen on and where each one's traffic may go, as pure
functions of the Services and EndpointSlices (no I/O).

A :class:`Frontend` is one listening address: ``(protocol, ip, port)``. Every Service port
gets one on its ClusterIP; NodePort and LoadBalancer Services add the node address at the
nodePort; LoadBalancer Services add each ``status.loadBalancer.ingress[].ip`` and every
``externalIPs`` entry at the Service port. Headless and ExternalName Services get none.
Its :class:`Backends` are the ready endpoints of the Service's slices for that port.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from schemas.core import Service
from schemas.discovery import SERVICE_NAME_LABEL, EndpointSlice
from schemas.helpers import affinity_seconds

Address = tuple[str, int]


class Frontend(msgspec.Struct, frozen=True, order=True):
    protocol: str
    ip: str
    port: int


class Route(msgspec.Struct, frozen=True, kw_only=True):
    """What one frontend serves: a Service port and its ready backends."""

    service: str  # <namespace>/<name>
    port_name: str
    backends: tuple[Address, ...]
    affinity_seconds: int | None  # ClientIP affinity timeout, None without affinity


def ready_backends(slices: Iterable[EndpointSlice], port_name: str, protocol: str) -> tuple[Address, ...]:
    """The ready endpoint addresses of the slices' port named ``port_name``, sorted, unique."""
    out: set[Address] = set()
    for s in slices:
        if s.addressType != "IPv4":
            continue
        number = next(
            (p.port for p in s.ports if (p.name or "") == port_name and p.protocol == protocol and p.port),
            None,
        )
        if number is None:
            continue
        for ep in s.endpoints:
            if ep.conditions.ready is False:  # unset means ready, as in Kubernetes
                continue
            out.update((ip, number) for ip in ep.addresses)
    return tuple(sorted(out))


def frontends_of(service: Service, node_address: str) -> list[tuple[Frontend, str]]:
    """(frontend, service port name) for every address the Service is reachable on here."""
    spec = service.spec
    if spec.type == "ExternalName" or not spec.clusterIP or spec.clusterIP == "None":
        return []
    out: list[tuple[Frontend, str]] = []
    lb_ips = [i.ip for i in service.status.loadBalancer.ingress if i.ip] if spec.type == "LoadBalancer" else []
    for p in spec.ports:
        for ip in [spec.clusterIP, *spec.externalIPs, *lb_ips]:
            out.append((Frontend(p.protocol, ip, p.port), p.name))
        if spec.type in ("NodePort", "LoadBalancer") and p.nodePort:
            out.append((Frontend(p.protocol, node_address, p.nodePort), p.name))
    return out


def routes(
    services: Iterable[Service], slices: Iterable[EndpointSlice], node_address: str
) -> dict[Frontend, Route]:
    """Every frontend the proxy should serve, with its backends. The first Service to claim
    a frontend keeps it (the api's allocator makes clashes impossible in practice)."""
    by_service: dict[tuple[str, str], list[EndpointSlice]] = {}
    for s in slices:
        name = s.metadata.labels.get(SERVICE_NAME_LABEL)
        if name:
            by_service.setdefault((s.metadata.namespace or "default", name), []).append(s)
    out: dict[Frontend, Route] = {}
    for svc in sorted(services, key=lambda s: (s.metadata.namespace or "", s.metadata.name)):
        ns = svc.metadata.namespace or "default"
        mine = by_service.get((ns, svc.metadata.name), [])
        for frontend, port_name in frontends_of(svc, node_address):
            if frontend in out:
                continue
            out[frontend] = Route(
                service=f"{ns}/{svc.metadata.name}",
                port_name=port_name,
                backends=ready_backends(mine, port_name, frontend.protocol),
                affinity_seconds=affinity_seconds(svc),
            )
    return out


class Changes(msgspec.Struct, frozen=True, kw_only=True):
    open: list[Frontend]
    close: list[Frontend]
    retarget: list[Frontend]  # still served, with other backends or affinity


def diff(current: dict[Frontend, Route], desired: dict[Frontend, Route]) -> Changes:
    return Changes(
        open=sorted(f for f in desired if f not in current),
        close=sorted(f for f in current if f not in desired),
        retarget=sorted(f for f in desired if f in current and current[f] != desired[f]),
    )
