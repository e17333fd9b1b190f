"""Cluster DNS answers as pure functions: the zone is built from Services and EndpointSlices,
and each query is answered from it with dnslib's record types (no sockets here).

Names (``<domain>`` defaults to ``cluster.local``):
- ``<svc>.<ns>.svc.<domain>``  A: the ClusterIP; headless: every ready endpoint IP;
  ExternalName: a CNAME to ``spec.externalName``.
- ``<hostname>.<svc>.<ns>.svc.<domain>``  A: a headless Service's endpoint with a hostname.
- ``_<port>._<proto>.<svc>.<ns>.svc.<domain>``  SRV for each named port: the Service name
  (ClusterIP) or one record per ready endpoint (headless).
- ``<a-b-c-d>.<ns>.pod.<domain>``  A: the dashed address itself, as Kubernetes answers.
Anything else under the domain is NXDOMAIN (with the zone's SOA); names outside it are REFUSED
here (the server forwards them upstream when it has upstreams: :func:`forwardable`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import msgspec
from dnslib import CNAME, QTYPE, RCODE, RR, SOA, SRV, A, DNSLabel, DNSRecord

from schemas.core import Service
from schemas.discovery import SERVICE_NAME_LABEL, EndpointSlice

DEFAULT_DOMAIN = "cluster.local"
DEFAULT_TTL = 5


class SrvTarget(msgspec.Struct, frozen=True):
    port: int
    target: str


class Zone(msgspec.Struct, frozen=True, kw_only=True):
    """Every name the cluster answers, lower-case without the trailing dot."""

    domain: str = DEFAULT_DOMAIN
    a: dict[str, tuple[str, ...]] = {}
    cname: dict[str, str] = {}
    srv: dict[str, tuple[SrvTarget, ...]] = {}
    names: frozenset[str] = frozenset()  # every existing name, with the empty non-terminals


def _ready(slices: Iterable[EndpointSlice]) -> list[tuple[str, str | None, dict[tuple[str, str], int]]]:
    """(ip, hostname, {(port name, protocol): port}) of each ready endpoint."""
    out: list[tuple[str, str | None, dict[tuple[str, str], int]]] = []
    for s in slices:
        if s.addressType != "IPv4":
            continue
        ports: dict[tuple[str, str], int] = {(p.name or "", p.protocol): p.port for p in s.ports if p.port}
        for ep in s.endpoints:
            if ep.conditions.ready is False:
                continue
            for ip in ep.addresses:
                out.append((ip, ep.hostname, ports))
    return sorted(out, key=lambda t: t[0])


def build_zone(services: Iterable[Service], slices: Iterable[EndpointSlice], domain: str = DEFAULT_DOMAIN) -> Zone:
    domain = domain.strip(".").lower()
    by_service: dict[tuple[str, str], list[EndpointSlice]] = {}
    for s in slices:
        name = s.metadata.labels.get(SERVICE_NAME_LABEL)
        if name:
            by_service.setdefault((s.metadata.namespace or "default", name), []).append(s)
    a: dict[str, list[str]] = {}
    cname: dict[str, str] = {}
    srv: dict[str, list[SrvTarget]] = {}
    for svc in services:
        ns = svc.metadata.namespace or "default"
        base = f"{svc.metadata.name}.{ns}.svc.{domain}".lower()
        spec = svc.spec
        if spec.type == "ExternalName":
            if spec.externalName:
                cname[base] = spec.externalName.strip(".").lower()
            continue
        headless = spec.clusterIP == "None"
        ready = _ready(by_service.get((ns, svc.metadata.name), []))
        if headless:
            a[base] = sorted({ip for ip, _, _ in ready})
            for ip, hostname, _ in ready:
                if hostname:
                    a.setdefault(f"{hostname}.{base}".lower(), []).append(ip)
        elif spec.clusterIP:
            a[base] = [spec.clusterIP]
        else:
            continue
        for p in spec.ports:
            if not p.name:
                continue
            name = f"_{p.name}._{p.protocol.lower()}.{base}".lower()
            if not headless:
                srv[name] = [SrvTarget(p.port, base)]
                continue
            targets = []
            for ip, hostname, ports in ready:
                port = ports.get((p.name, p.protocol))
                if port is None:
                    continue
                host = f"{hostname or ip.replace('.', '-')}.{base}".lower()
                a.setdefault(host, [])
                if ip not in a[host]:
                    a[host].append(ip)
                targets.append(SrvTarget(port, host))
            srv[name] = targets
    names: set[str] = set()
    for name in [*a, *cname, *srv]:
        labels = name.split(".")
        for i in range(len(labels)):
            names.add(".".join(labels[i:]))
    return Zone(
        domain=domain,
        a={k: tuple(v) for k, v in a.items()},
        cname=cname,
        srv={k: tuple(v) for k, v in srv.items()},
        names=frozenset(names),
    )


def _pod_address(qname: str, domain: str) -> str | None:
    suffix = f".pod.{domain}"
    if not qname.endswith(suffix):
        return None
    head = qname[: -len(suffix)].split(".")
    if len(head) != 2:
        return None
    try:
        return str(ipaddress.IPv4Address(head[0].replace("-", ".")))
    except ValueError:
        return None


def _soa(zone: Zone, ttl: int) -> RR:
    return RR(
        zone.domain + ".",
        QTYPE.SOA,
        ttl=ttl,
        rdata=SOA(f"ns.dns.{zone.domain}.", f"hostmaster.{zone.domain}.", (1, 7200, 1800, 86400, ttl)),
    )


def answer(request: DNSRecord, zone: Zone, ttl: int = DEFAULT_TTL) -> DNSRecord:
    """The reply to ``request`` from ``zone`` (authoritative, no recursion)."""
    reply = request.reply(ra=0, aa=1)
    if not request.questions:
        reply.header.rcode = RCODE.FORMERR
        return reply
    q = request.q
    qname = str(q.qname).rstrip(".").lower()
    qtype = q.qtype
    label = DNSLabel(str(q.qname))
    if qname != zone.domain and not qname.endswith("." + zone.domain):
        reply.header.aa = 0
        reply.header.rcode = RCODE.REFUSED
        return reply
    pod_ip = _pod_address(qname, zone.domain)
    if pod_ip is not None:
        if qtype in (QTYPE.A, QTYPE.ANY):
            reply.add_answer(RR(label, QTYPE.A, ttl=ttl, rdata=A(pod_ip)))
        else:
            reply.add_auth(_soa(zone, ttl))
        return reply
    if qname == zone.domain and qtype == QTYPE.SOA:
        reply.add_answer(_soa(zone, ttl))
        return reply
    if qname not in zone.names and qname != zone.domain:
        reply.header.rcode = RCODE.NXDOMAIN
        reply.add_auth(_soa(zone, ttl))
        return reply
    if qname in zone.cname:
        reply.add_answer(RR(label, QTYPE.CNAME, ttl=ttl, rdata=CNAME(zone.cname[qname] + ".")))
        return reply
    if qtype in (QTYPE.A, QTYPE.ANY):
        for ip in zone.a.get(qname, ()):
            reply.add_answer(RR(label, QTYPE.A, ttl=ttl, rdata=A(ip)))
    if qtype in (QTYPE.SRV, QTYPE.ANY):
        for t in zone.srv.get(qname, ()):
            reply.add_answer(RR(label, QTYPE.SRV, ttl=ttl, rdata=SRV(priority=0, weight=100, port=t.port, target=t.target + ".")))
            for ip in zone.a.get(t.target, ()):
                reply.add_ar(RR(t.target + ".", QTYPE.A, ttl=ttl, rdata=A(ip)))
    if not reply.rr:
        reply.add_auth(_soa(zone, ttl))  # the name exists, just not with this type (NODATA)
    return reply


def forwardable(packet: bytes, domain: str) -> bool:
    """A query for a name outside the cluster domain (what a forwarding server sends upstream)."""
    try:
        request = DNSRecord.parse(packet)
    except Exception:  # garbage is answer_bytes' business
        return False
    if request.header.qr or not request.questions:
        return False
    qname = str(request.q.qname).rstrip(".").lower()
    return qname != domain and not qname.endswith("." + domain)


def answer_bytes(packet: bytes, zone: Zone, ttl: int = DEFAULT_TTL) -> bytes | None:
    """Wire in, wire out; None for a packet that is not a DNS query at all."""
    try:
        request = DNSRecord.parse(packet)
    except Exception:  # dnslib raises its own DNSError and struct errors on garbage
        return None
    if request.header.qr:  # a response, not a query
        return None
    reply: bytes = answer(request, zone, ttl).pack()
    return reply
