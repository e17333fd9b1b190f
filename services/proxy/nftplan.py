"""The nftables proxy's rules as a pure function of Services and EndpointSlices: what table
``ip kyb-proxy`` should hold, and the ``nft -f`` script that moves the kernel from one
state to the next in one transaction. No I/O.

The layout follows kube-proxy's nftables mode. Base chains hook prerouting and output (DNAT,
priority dstnat), postrouting (masquerade) and input/forward/output (filter, before and after
DNAT). ``services`` looks each new connection up in the verdict map ``service-ips``
(``daddr . l4proto . dport``: ClusterIPs, externalIPs, LoadBalancer ingress IPs) and, for any
local address but 127/8, in ``service-nodeports`` (``l4proto . dport``). A Service port gets:

- ``svc-<id>``: masquerade ClusterIP traffic from outside the cluster CIDR, affinity lookups,
  then ``numgen random mod N vmap`` over its endpoint chains (``local-<id>`` the same over
  this node's endpoints, for ``Local`` traffic policies);
- ``ext-<id>``: NodePort/LoadBalancer/externalIP traffic: masquerade then ``svc-<id>``
  (policy Cluster); or, with ``externalTrafficPolicy: Local``, pods and the node itself to
  ``svc-<id>`` and everything else to ``local-<id>`` unmasqueraded (client address kept),
  dropped when this node has no endpoint;
- ``ep-<id>__<ip>/<port>``: masquerade hairpin traffic (an endpoint reaching itself), record
  the client in its affinity set (``update @aff-...``, timeout = ``timeoutSeconds``), DNAT.

A Service port without usable endpoints is in ``no-endpoint-services``/``-nodeports`` and
new connections are rejected (ICMP port unreachable) by the filter chains; anything else
still addressed to a ClusterIP or the service CIDR after DNAT is rejected too
(``cluster-ips-check``). Terminating endpoints that still serve are used only while no
endpoint is ready.

A :class:`Ruleset` is a dict of :class:`Fragment` (one per Service port, plus the static
base): :func:`update_script` diffs fragment by fragment, so an EndpointSlice change costs
the chains of one Service, whatever the table's size.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from schemas.core import Service, ServicePort
from schemas.discovery import EndpointSlice, slices_by_service
from schemas.helpers import affinity_seconds

TABLE = "kyb-proxy"
FAMILY = "ip"
MASQUERADE_MARK = 0x4000
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
BASE = "_base"  # the fragment key of the static chains


@dataclass(frozen=True)
class Settings:
    node_name: str = ""                 # endpoints with this nodeName are local
    node_names: tuple[str, ...] = ()    # ... and with these (several nodes in one namespace)
    cluster_cidr: str = "10.244.0.0/16"  # pod addresses (not masqueraded towards ClusterIPs)
    service_cidr: str = "10.96.0.0/12"   # unallocated addresses of it are rejected
    table: str = TABLE


@dataclass(frozen=True, order=True)
class Target:
    """One endpoint of a Service port."""

    ip: str
    port: int


@dataclass(frozen=True)
class SetDecl:
    type: str
    flags: tuple[str, ...] = ()
    timeout: int | None = None  # seconds


@dataclass(frozen=True)
class Fragment:
    """What one Service port (or the base) adds to the table."""

    chains: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    sets: Mapping[str, SetDecl] = field(default_factory=dict)   # declared by this fragment
    elements: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (map or set, key) -> value ("" for sets)


@dataclass(frozen=True)
class Frontend:
    """Where a Service port is reachable: ``ip`` "" is a NodePort on every node address."""

    protocol: str
    ip: str
    port: int


@dataclass(frozen=True)
class PortState:
    """What the shell needs beside the rules: UDP conntrack flushing and health checks."""

    protocol: str
    frontends: tuple[Frontend, ...]
    targets: frozenset[Target]  # every endpoint any chain may DNAT to


@dataclass(frozen=True)
class HealthCheck:
    service: str  # <namespace>/<name>
    port: int     # spec.healthCheckNodePort
    local_endpoints: int


@dataclass(frozen=True)
class Ruleset:
    fragments: Mapping[str, Fragment]
    ports: Mapping[str, PortState]
    health: Mapping[int, HealthCheck]


MAP_TYPES = {
    "service-ips": "ipv4_addr . inet_proto . inet_service : verdict",
    "service-nodeports": "inet_proto . inet_service : verdict",
    "no-endpoint-services": "ipv4_addr . inet_proto . inet_service : verdict",
    "no-endpoint-nodeports": "inet_proto . inet_service : verdict",
}
SET_TYPES = {"cluster-ips": SetDecl("ipv4_addr")}

BASE_CHAINS = {
    "filter-input": "type filter hook input priority -110; policy accept;",
    "filter-forward": "type filter hook forward priority -110; policy accept;",
    "filter-output": "type filter hook output priority -110; policy accept;",
    "filter-output-post-dnat": "type filter hook output priority -90; policy accept;",
    "nat-prerouting": "type nat hook prerouting priority dstnat; policy accept;",
    "nat-output": "type nat hook output priority -100; policy accept;",
    "nat-postrouting": "type nat hook postrouting priority srcnat; policy accept;",
}

NOT_LOOPBACK = "ip daddr != 127.0.0.0/8"


def base_fragment(settings: Settings) -> Fragment:
    mark = hex(MASQUERADE_MARK)
    chains: dict[str, tuple[str, ...]] = {
        "filter-input": ("ct state new jump nodeport-endpoints-check", "ct state new jump service-endpoints-check"),
        "filter-forward": ("ct state new jump service-endpoints-check", "ct state new jump cluster-ips-check"),
        "filter-output": ("ct state new jump service-endpoints-check",),
        "filter-output-post-dnat": ("ct state new jump cluster-ips-check",),
        "nat-prerouting": ("jump services",),
        "nat-output": ("jump services",),
        "nat-postrouting": ("jump masquerading",),
        "services": (
            "ip daddr . meta l4proto . th dport vmap @service-ips",
            f"fib daddr type local {NOT_LOOPBACK} meta l4proto . th dport vmap @service-nodeports",
        ),
        "service-endpoints-check": ("ip daddr . meta l4proto . th dport vmap @no-endpoint-services",),
        "nodeport-endpoints-check": (
            f"fib daddr type local {NOT_LOOPBACK} meta l4proto . th dport vmap @no-endpoint-nodeports",
        ),
        "cluster-ips-check": (
            'ip daddr @cluster-ips reject comment "a ClusterIP on a port it does not serve"',
            f'ip daddr {settings.service_cidr} reject comment "an unallocated ClusterIP"',
        ),
        "mark-for-masquerade": (f"meta mark set meta mark | {mark}",),
        "masquerading": (
            f"meta mark & {mark} == 0 return",
            f"meta mark set meta mark ^ {mark}",
            "masquerade fully-random",
        ),
        "reject-chain": ("reject",),
    }
    return Fragment(chains=chains, sets=dict(SET_TYPES))


# -- endpoints ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Endpoint:
    target: Target
    node: str
    ready: bool
    serving: bool
    terminating: bool


def _endpoints(slices: Iterable[EndpointSlice], port: ServicePort) -> list[_Endpoint]:
    out: dict[Target, _Endpoint] = {}
    for s in slices:
        if s.addressType != "IPv4":
            continue
        number = next((p.port for p in s.ports if (p.name or "") == (port.name or "")
                       and p.protocol == port.protocol and p.port), None)
        if number is None:
            continue
        for ep in s.endpoints:
            c = ep.conditions
            ready = c.ready is not False  # unset means ready, as in Kubernetes
            serving = c.serving if c.serving is not None else ready
            for ip in ep.addresses:
                t = Target(ip, number)
                e = _Endpoint(t, ep.nodeName or "", ready, serving, bool(c.terminating))
                held = out.get(t)  # listed twice (slices in transition): the readier listing counts
                if held is None or (e.ready, e.serving) > (held.ready, held.serving):
                    out[t] = e
    return [out[t] for t in sorted(out)]


def usable(endpoints: list[_Endpoint]) -> tuple[Target, ...]:
    """Ready endpoints; else those terminating but still serving (kube-proxy's fallback)."""
    ready = tuple(e.target for e in endpoints if e.ready)
    if ready:
        return ready
    return tuple(e.target for e in endpoints if e.serving and e.terminating)


# -- one Service port -----------------------------------------------------------------------

def port_id(service: Service, port: ServicePort) -> str:
    ns = service.metadata.namespace or "default"
    return f"{ns}/{service.metadata.name}/{PROTOCOLS[port.protocol]}/{port.name or port.port}"


def _ep_chain(pid: str, t: Target) -> str:
    return f"ep-{pid}__{t.ip}/{t.port}"


def _aff_set(pid: str, t: Target, seconds: int) -> str:
    return f"aff-{pid}__{t.ip}/{t.port}/{seconds}"


def _dispatch(pid: str, targets: tuple[Target, ...], affinity: int | None) -> list[str]:
    rules = []
    if affinity is not None:
        rules += [f"ip saddr @{_aff_set(pid, t, affinity)} goto {_ep_chain(pid, t)}" for t in targets]
    if len(targets) == 1:
        rules.append(f"goto {_ep_chain(pid, targets[0])}")
    else:
        arms = ", ".join(f"{i} : goto {_ep_chain(pid, t)}" for i, t in enumerate(targets))
        rules.append(f"numgen random mod {len(targets)} vmap {{ {arms} }}")
    return rules


def service_port_fragment(
    service: Service, port: ServicePort, slices: Iterable[EndpointSlice], settings: Settings
) -> tuple[Fragment, PortState, HealthCheck | None]:
    spec = service.spec
    pid = port_id(service, port)
    proto = PROTOCOLS[port.protocol]
    cip = spec.clusterIP
    eps = _endpoints(slices, port)
    cluster = usable(eps)
    mine = {settings.node_name, *settings.node_names} - {""}
    local = usable([e for e in eps if e.node in mine]) if mine else ()
    internal_local = spec.internalTrafficPolicy == "Local"
    internal = local if internal_local else cluster
    external_local = spec.externalTrafficPolicy == "Local" and spec.type in ("NodePort", "LoadBalancer")
    affinity = affinity_seconds(service)
    lb_ips = [i.ip for i in service.status.loadBalancer.ingress if i.ip] if spec.type == "LoadBalancer" else []
    external_ips = [*spec.externalIPs, *lb_ips]
    node_port = port.nodePort if spec.type in ("NodePort", "LoadBalancer") and port.nodePort else None

    chains: dict[str, tuple[str, ...]] = {}
    sets: dict[str, SetDecl] = {}
    elements: dict[tuple[str, str], str] = {("cluster-ips", cip): ""}
    masq_cluster_ip = (f"ip daddr {cip} {proto} dport {port.port} ip saddr != {settings.cluster_cidr} "
                       "jump mark-for-masquerade")
    svc, loc, ext = f"svc-{pid}", f"local-{pid}", f"ext-{pid}"
    targets = set(cluster) | set(local)
    for t in sorted(targets):
        rules = [f"ip saddr {t.ip} jump mark-for-masquerade"]
        if affinity is not None:
            name = _aff_set(pid, t, affinity)
            sets[name] = SetDecl("ipv4_addr", ("dynamic", "timeout"), affinity)
            rules.append(f"update @{name} {{ ip saddr }}")
        rules.append(f"meta l4proto {proto} dnat to {t.ip}:{t.port}")
        chains[_ep_chain(pid, t)] = tuple(rules)
    if cluster:
        chains[svc] = (masq_cluster_ip, *_dispatch(pid, cluster, affinity))
    if local and (internal_local or external_local):
        chains[loc] = (masq_cluster_ip, *_dispatch(pid, local, affinity))

    key = f"{cip} . {proto} . {port.port}"
    if internal:
        elements[("service-ips", key)] = f"goto {loc if internal_local else svc}"
    else:
        elements[("no-endpoint-services", key)] = "goto reject-chain" if not cluster else "drop"

    has_external = bool(external_ips) or node_port is not None
    if has_external and cluster:
        if external_local:
            rules = [f"ip saddr {settings.cluster_cidr} goto {svc}",
                     "fib saddr type local jump mark-for-masquerade", f"fib saddr type local goto {svc}"]
            rules.append(f"goto {loc}" if local else 'drop comment "no local endpoint"')
        else:
            rules = ["jump mark-for-masquerade", f"goto {svc}"]
        chains[ext] = tuple(rules)
    for ip in external_ips:
        k = f"{ip} . {proto} . {port.port}"
        if cluster:
            elements[("service-ips", k)] = f"goto {ext}"
        else:
            elements[("no-endpoint-services", k)] = "goto reject-chain"
    if node_port is not None:
        k = f"{proto} . {node_port}"
        if cluster:
            elements[("service-nodeports", k)] = f"goto {ext}"
        else:
            elements[("no-endpoint-nodeports", k)] = "goto reject-chain"

    frontends = [Frontend(port.protocol, cip, port.port), *(Frontend(port.protocol, ip, port.port) for ip in external_ips)]
    if node_port is not None:
        frontends.append(Frontend(port.protocol, "", node_port))
    health = None
    if spec.type == "LoadBalancer" and spec.externalTrafficPolicy == "Local" and spec.healthCheckNodePort:
        health = HealthCheck(f"{service.metadata.namespace or 'default'}/{service.metadata.name}",
                             spec.healthCheckNodePort, len(local))
    state = PortState(port.protocol, tuple(frontends), frozenset(targets))
    return Fragment(chains=chains, sets=sets, elements=elements), state, health


def proxied(service: Service) -> bool:
    """Whether the proxy serves this Service at all (headless and ExternalName: DNS only)."""
    spec = service.spec
    if spec.type == "ExternalName" or not spec.clusterIP or spec.clusterIP == "None":
        return False
    try:
        return ipaddress.ip_address(spec.clusterIP).version == 4
    except ValueError:
        return False


def service_fragments(
    service: Service, slices: Iterable[EndpointSlice], settings: Settings
) -> dict[str, tuple[Fragment, PortState, HealthCheck | None]]:
    """The fragments of one Service, keyed by port id."""
    if not proxied(service):
        return {}
    mine = list(slices)
    return {port_id(service, p): service_port_fragment(service, p, mine, settings)
            for p in service.spec.ports if p.protocol in PROTOCOLS}


def ruleset(services: Iterable[Service], slices: Iterable[EndpointSlice], settings: Settings) -> Ruleset:
    """The whole table for these Services and slices. Where two Service ports claim one
    address and port, the first by namespace/name keeps it."""
    by_service = group_slices(slices)
    parts: dict[str, tuple[Fragment, PortState, HealthCheck | None]] = {}
    for svc in sorted(services, key=lambda s: (s.metadata.namespace or "default", s.metadata.name)):
        parts.update(service_fragments(svc, by_service.get((svc.metadata.namespace or "default", svc.metadata.name), []),
                                       settings))
    return assemble(parts, settings)


def assemble(parts: Mapping[str, tuple[Fragment, PortState, HealthCheck | None]], settings: Settings) -> Ruleset:
    fragments: dict[str, Fragment] = {BASE: base_fragment(settings)}
    ports: dict[str, PortState] = {}
    health: dict[int, HealthCheck] = {}
    claimed: set[tuple[str, str]] = set()
    for pid in sorted(parts):
        frag, state, hc = parts[pid]
        clash = {k for k in frag.elements if k[0] != "cluster-ips"} & claimed
        if clash:
            frag = Fragment(chains=frag.chains, sets=frag.sets,
                            elements={k: v for k, v in frag.elements.items() if k not in clash})
        claimed.update(k for k in frag.elements if k[0] != "cluster-ips")
        fragments[pid] = frag
        ports[pid] = state
        if hc is not None:
            held = health.get(hc.port)
            if held is None or (held.service == hc.service and held.local_endpoints < hc.local_endpoints):
                health[hc.port] = hc  # a Service's count: its port with the most local endpoints
    return Ruleset(fragments=fragments, ports=ports, health=health)


# -- scripts --------------------------------------------------------------------------------

def _set_decl(table: str, name: str, decl: SetDecl, kind: str = "set") -> str:
    parts = [f"type {decl.type};"]
    if decl.flags:
        parts.append(f"flags {','.join(decl.flags)};")
    if decl.timeout is not None:
        parts.append(f"timeout {decl.timeout}s;")
    return f"add {kind} {FAMILY} {table} {name} {{ {' '.join(parts)} }}"


def _element(table: str, container: str, key: str, value: str, verb: str = "add") -> str:
    body = key if container in SET_TYPES or value == "" or verb == "delete" else f"{key} : {value}"
    return f"{verb} element {FAMILY} {table} {container} {{ {body} }}"


def _chain_decl(table: str, name: str) -> str:
    head = BASE_CHAINS.get(name)
    return f"add chain {FAMILY} {table} {name}" + (f" {{ {head} }}" if head else "")


def full_script(rs: Ruleset, settings: Settings) -> str:
    """Replace the whole table in one transaction (a proxy's first sync)."""
    t = settings.table
    out = [f"add table {FAMILY} {t}", f"delete table {FAMILY} {t}", f"add table {FAMILY} {t}"]
    frags = list(rs.fragments.values())
    for f in frags:
        out += [_set_decl(t, n, d) for n, d in f.sets.items()]
    out += [_set_decl(t, n, SetDecl(ty), "map") for n, ty in MAP_TYPES.items()]
    for f in frags:
        out += [_chain_decl(t, n) for n in f.chains]
    for f in frags:
        for n, rules in f.chains.items():
            out += [f"add rule {FAMILY} {t} {n} {r}" for r in rules]
    for f in frags:
        out += [_element(t, c, k, v) for (c, k), v in f.elements.items()]
    return "\n".join(out) + "\n"


def _merge(frags: Iterable[Fragment]) -> Fragment:
    chains: dict[str, tuple[str, ...]] = {}
    sets: dict[str, SetDecl] = {}
    elements: dict[tuple[str, str], str] = {}
    for f in frags:
        chains.update(f.chains)
        sets.update(f.sets)
        elements.update(f.elements)
    return Fragment(chains=chains, sets=sets, elements=elements)


def update_script(old: Ruleset, new: Ruleset, settings: Settings) -> str:
    """The transaction moving the table from ``old`` to ``new`` ("" when nothing changes):
    only the fragments that differ are looked at. Order inside it: new chains and sets,
    element deletions, flushes, rules, element additions, then chain and set deletions
    (nothing refers to them any more)."""
    t = settings.table
    changed = [k for k in {*old.fragments, *new.fragments}
               if old.fragments.get(k) is not new.fragments.get(k) and old.fragments.get(k) != new.fragments.get(k)]
    if not changed:
        return ""
    before = _merge(old.fragments[k] for k in changed if k in old.fragments)
    after = _merge(new.fragments[k] for k in changed if k in new.fragments)
    # An address moving between Service ports: the element is in both merges; fine either way.
    out: list[str] = []
    out += [_set_decl(t, n, d) for n, d in after.sets.items() if n not in before.sets]
    out += [_chain_decl(t, n) for n in after.chains if n not in before.chains]
    out += [_element(t, c, k, "", "delete") for (c, k), v in before.elements.items()
            if after.elements.get((c, k)) != v]
    rewrite = [n for n in after.chains if n in before.chains and before.chains[n] != after.chains[n]]
    gone = [n for n in before.chains if n not in after.chains]
    out += [f"flush chain {FAMILY} {t} {n}" for n in (*rewrite, *gone)]
    for n, rules in after.chains.items():
        if n not in before.chains or n in rewrite:
            out += [f"add rule {FAMILY} {t} {n} {r}" for r in rules]
    out += [_element(t, c, k, v) for (c, k), v in after.elements.items() if before.elements.get((c, k)) != v]
    out += [f"delete chain {FAMILY} {t} {n}" for n in gone]
    out += [f"delete set {FAMILY} {t} {n}" for n in before.sets if n not in after.sets]
    return "\n".join(out) + "\n" if out else ""


# -- conntrack ------------------------------------------------------------------------------

@dataclass(frozen=True, order=True)
class Flush:
    """``conntrack -D -p udp`` with these filters (``orig_dst`` "" = any: a NodePort)."""

    orig_dst: str
    orig_port: int
    dst_nat: str  # "" = every entry of the frontend


def conntrack_flushes(old: Ruleset, new: Ruleset) -> list[Flush]:
    """UDP has no connection end: entries DNATed to an endpoint that left would keep sending
    there, and entries made while a Service had no endpoint would keep failing. Flush both."""
    out: set[Flush] = set()
    for pid, was in old.ports.items():
        if was.protocol != "UDP":
            continue
        now = new.ports.get(pid)
        left = was.targets - (now.targets if now is not None else frozenset())
        for fe in was.frontends:
            out.update(Flush(fe.ip, fe.port, t.ip) for t in left)
    for pid, state in new.ports.items():
        before = old.ports.get(pid)
        if state.protocol == "UDP" and state.targets and (before is None or not before.targets):
            out.update(Flush(fe.ip, fe.port, "") for fe in state.frontends)
    return sorted(out)


group_slices = slices_by_service  # the name the kernel shell uses
