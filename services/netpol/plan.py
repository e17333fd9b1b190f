"""NetworkPolicy as nftables rules for the pods of one network namespace's nodes (pure): one
node, or several that share the namespace (`kyb up --nodes 3`; one table serves them all).

``allowed(policies, pods, namespaces, node)`` decides, per pod of the node(s), whether it is
isolated for ingress and for egress (some policy of its namespace selects it with that policy
type) and which peers and ports each direction allows (the union of every selecting policy's
rules: policies add up). ``ruleset(...)`` renders that as one ``nft -f`` transaction that
replaces the table ``inet kyb-netpol`` and nothing else:

- base chain ``forward`` (hook forward, priority filter, policy accept): replies of accepted
  connections pass (``ct state established,related accept``); traffic from an egress-isolated
  pod jumps to its ``egress-<ip>`` chain, traffic to an ingress-isolated pod to its
  ``ingress-<ip>`` chain. Each such chain ``return``s what a rule allows and drops the rest,
  so a packet between two isolated pods of the node passes both checks. :func:`permits`
  decides a flow the same way, without a kernel.
- Peers: ``podSelector`` (pods of the policy's namespace), ``namespaceSelector`` (pods of the
  namespaces it selects), both (those pods in those namespaces), ``ipBlock`` (``cidr`` minus
  ``except``); no peers: anyone. Ports: number, named port (ingress: the selected pod's
  containerPort of that name and protocol; egress: each destination pod's), ``endPort`` ranges;
  no ports: every port.
- A pod selected by no policy gets no chain: it is never filtered. Pods without an IP and
  hostNetwork pods are neither filtered nor matched by selectors; traffic between a pod and its
  own node (INPUT/OUTPUT, e.g. kubelet probes and the node's DNS) is not filtered, as
  Kubernetes documents.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from schemas.core import Namespace
from schemas.meta import LabelSelector
from schemas.networking import NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort
from schemas.pod import Pod
from schemas.selector import SelectorError, from_label_selector

TABLE = "kyb-netpol"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # the label every namespace carries
DENY = "reject with icmpx admin-prohibited"  # the sender learns at once, as from an iptables REJECT


@dataclass(frozen=True, order=True)
class PortRange:
    protocol: str  # tcp | udp | sctp
    first: int
    last: int


@dataclass(frozen=True, order=True)
class Allow:
    """One allowing rule: a peer (any, a set of addresses, or a CIDR minus exceptions) and ports."""

    addresses: tuple[str, ...] = ()  # pod IPs or CIDRs; empty with any_peer False: nobody
    excepts: tuple[str, ...] = ()
    any_peer: bool = False
    ports: tuple[PortRange, ...] = ()  # empty with any_port: every port
    any_port: bool = True
    pairs: tuple[tuple[str, str, int], ...] = ()  # egress named ports: (ip, protocol, port)


@dataclass(frozen=True)
class PodRules:
    ip: str
    ingress: tuple[Allow, ...] | None  # None: not isolated for ingress
    egress: tuple[Allow, ...] | None


def _live(pod: Pod) -> bool:
    return bool(pod.status.podIP) and not pod.spec.hostNetwork and pod.status.phase not in ("Succeeded", "Failed")


def _matches(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    try:
        return from_label_selector(selector).matches(labels)
    except SelectorError:
        return False  # admission rejects bad selectors; a stored one selects nothing


def namespace_labels(namespaces: Iterable[Namespace]) -> dict[str, dict[str, str]]:
    return {ns.metadata.name: {**ns.metadata.labels, NAMESPACE_NAME_LABEL: ns.metadata.name} for ns in namespaces}


class _View:
    def __init__(self, pods: Iterable[Pod], namespaces: Iterable[Namespace]) -> None:
        self.pods = sorted((p for p in pods if _live(p)), key=lambda p: p.status.podIP)
        self.ns_labels = namespace_labels(namespaces)

    def ns_of(self, pod: Pod) -> str:
        return pod.metadata.namespace or "default"

    def labels_of_ns(self, ns: str) -> dict[str, str]:
        return self.ns_labels.get(ns, {NAMESPACE_NAME_LABEL: ns})

    def peer_pods(self, peer: NetworkPolicyPeer, policy_ns: str) -> list[Pod]:
        out = []
        for p in self.pods:
            ns = self.ns_of(p)
            if peer.namespaceSelector is not None:
                if not _matches(peer.namespaceSelector, self.labels_of_ns(ns)):
                    continue
            elif ns != policy_ns:
                continue
            if peer.podSelector is not None and not _matches(peer.podSelector, p.metadata.labels):
                continue
            out.append(p)
        return out


def _protocol(p: NetworkPolicyPort) -> str:
    return p.protocol.lower()


def _named(pod: Pod, name: str, protocol: str) -> int | None:
    for c in pod.spec.containers:
        for cp in c.ports:
            if cp.name == name and cp.protocol == protocol:
                return cp.containerPort
    return None


def _numeric(ports: list[NetworkPolicyPort], target: Pod | None) -> tuple[tuple[PortRange, ...], bool]:
    """Numeric ranges of ``ports`` (named ones resolved on ``target``); (ranges, any port)."""
    if not ports:
        return (), True
    out = []
    for p in ports:
        if p.port is None:
            out.append(PortRange(_protocol(p), 0, 65535))
        elif isinstance(p.port, int):
            out.append(PortRange(_protocol(p), p.port, p.endPort if p.endPort is not None else p.port))
        elif target is not None:
            number = _named(target, p.port, p.protocol)
            if number is not None:
                out.append(PortRange(_protocol(p), number, number))
    return tuple(sorted(set(out))), False


def _in_block(ip: str, cidr: str, excepts: list[str]) -> bool:
    addr = ipaddress.ip_address(ip)
    try:
        if addr not in ipaddress.ip_network(cidr, strict=False):
            return False
        return not any(addr in ipaddress.ip_network(e, strict=False) for e in excepts)
    except ValueError:
        return False


def _peer_allows(view: _View, peers: list[NetworkPolicyPeer], policy_ns: str,
                 ports: list[NetworkPolicyPort], target: Pod | None) -> list[Allow]:
    """The rules of one ingress (``target`` = the selected pod) or egress (``target`` None) rule."""
    named = any(isinstance(p.port, str) for p in ports)
    if target is not None or not named:
        ranges, any_port = _numeric(ports, target)
        if not any_port and not ranges:
            return []  # only named ports, none of which the pod has
        if not peers:
            return [Allow(any_peer=True, ports=ranges, any_port=any_port)]
        out = []
        for peer in peers:
            if peer.ipBlock is not None:
                block = peer.ipBlock
                out.append(Allow(addresses=(block.cidr,), excepts=tuple(block.except_), ports=ranges,
                                 any_port=any_port))
            else:
                ips = tuple(sorted({p.status.podIP for p in view.peer_pods(peer, policy_ns)}))
                if ips:
                    out.append(Allow(addresses=ips, ports=ranges, any_port=any_port))
        return out
    # egress with named ports: numeric ones as above, named ones per destination pod
    numeric = [p for p in ports if not isinstance(p.port, str)]
    out = _peer_allows(view, peers, policy_ns, numeric, None) if numeric else []
    destinations: list[Pod] = []
    if not peers:
        destinations = list(view.pods)
    for peer in peers:
        if peer.ipBlock is not None:
            destinations += [p for p in view.pods if _in_block(p.status.podIP, peer.ipBlock.cidr, peer.ipBlock.except_)]
        else:
            destinations += view.peer_pods(peer, policy_ns)
    pairs = set()
    for dest in destinations:
        for p in ports:
            if isinstance(p.port, str):
                number = _named(dest, p.port, p.protocol)
                if number is not None:
                    pairs.add((dest.status.podIP, _protocol(p), number))
    if pairs:
        out.append(Allow(any_port=False, pairs=tuple(sorted(pairs))))
    return out


def allowed(policies: Iterable[NetworkPolicy], pods: Iterable[Pod], namespaces: Iterable[Namespace],
            node: str | Iterable[str]) -> list[PodRules]:
    """For each live pod of ``node`` (or of each of several nodes sharing one network namespace):
    what its ingress and egress may be (None: not isolated)."""
    nodes = {node} if isinstance(node, str) else set(node)
    pods = list(pods)
    view = _View(pods, namespaces)
    by_ns: dict[str, list[NetworkPolicy]] = {}
    for np in policies:
        by_ns.setdefault(np.metadata.namespace or "default", []).append(np)
    out = []
    for pod in view.pods:
        if pod.spec.nodeName not in nodes:
            continue
        ns = view.ns_of(pod)
        ingress: list[Allow] | None = None
        egress: list[Allow] | None = None
        for np in sorted(by_ns.get(ns, []), key=lambda n: n.metadata.name):
            if not _matches(np.spec.podSelector, pod.metadata.labels):
                continue
            types: list[str] = list(np.spec.policyTypes) or ["Ingress", *(["Egress"] if np.spec.egress else [])]
            if "Ingress" in types:
                ingress = ingress or []
                for rule in np.spec.ingress:
                    ingress += _peer_allows(view, rule.from_, ns, rule.ports, pod)
            if "Egress" in types:
                egress = egress or []
                for erule in np.spec.egress:
                    egress += _peer_allows(view, erule.to, ns, erule.ports, None)
        out.append(PodRules(pod.status.podIP,
                            None if ingress is None else tuple(dict.fromkeys(ingress)),
                            None if egress is None else tuple(dict.fromkeys(egress))))
    return out


# --- rendering -------------------------------------------------------------------------------


def _set(items: Iterable[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _family(address: str) -> str:
    return "ip6" if ":" in address else "ip"


def _render(allow: Allow, peer_field: str) -> list[str]:
    """nft rule bodies (without the verdict) for one Allow; peer_field is saddr or daddr."""
    if allow.pairs:
        by_family: dict[str, list[str]] = {}
        for ip, proto, port in allow.pairs:
            by_family.setdefault(_family(ip), []).append(f"{ip} . {proto} . {port}")
        return [f"{fam} {peer_field} . meta l4proto . th dport {_set(items)}" for fam, items in sorted(by_family.items())]
    peers: list[str] = []
    if allow.any_peer:
        peers = [""]
    else:
        by_family = {}
        for a in allow.addresses:
            by_family.setdefault(_family(a), []).append(a)
        for fam, addrs in sorted(by_family.items()):
            cond = f"{fam} {peer_field} {_set(addrs)}"
            excepts = [e for e in allow.excepts if _family(e) == fam]
            if excepts:
                cond += f" {fam} {peer_field} != {_set(excepts)}"
            peers.append(cond + " ")
    if allow.any_port:
        return [p.rstrip() or "meta nfproto { ipv4, ipv6 }" for p in peers]
    by_proto: dict[str, list[str]] = {}
    for r in allow.ports:
        by_proto.setdefault(r.protocol, []).append(
            "" if (r.first, r.last) == (0, 65535) else (str(r.first) if r.first == r.last else f"{r.first}-{r.last}"))
    out = []
    for peer in peers:
        for proto, ranges in sorted(by_proto.items()):
            if "" in ranges:
                out.append(f"{peer}meta l4proto {proto}")
            else:
                out.append(f"{peer}meta l4proto {proto} th dport {_set(sorted(set(ranges), key=_range_key))}")
    return out


def _range_key(r: str) -> int:
    return int(r.split("-", 1)[0])


def chain_name(direction: str, ip: str) -> str:
    return f"{direction}-{ip.replace('.', '-').replace(':', '-')}"


def ruleset(rules: Iterable[PodRules]) -> str:
    """One transaction: create-if-missing, delete and re-create the table ``inet kyb-netpol``."""
    rules = sorted(rules, key=lambda r: r.ip)
    jumps: list[str] = []
    chains: list[str] = []
    for r in rules:
        fam = _family(r.ip)
        for direction, allows, field in (("egress", r.egress, "saddr"), ("ingress", r.ingress, "daddr")):
            if allows is None:
                continue
            name = chain_name(direction, r.ip)
            jumps.append(f"\t\t{fam} {field} {r.ip} jump {name}")
            peer_field = "daddr" if direction == "egress" else "saddr"
            body = [f"\t\t{line} return" for a in allows for line in _render(a, peer_field)]
            chains.append("\n".join([f"\tchain {name} {{", *body, f"\t\t{DENY}", "\t}"]))
    forward = "\n".join([
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        "\t\tct state established,related accept",
        *jumps,
        "\t}",
    ])
    table = "\n".join([f"table inet {TABLE} {{", forward, *chains, "}"])
    return f"table inet {TABLE}\ndelete table inet {TABLE}\n{table}\n"


# --- what the rules decide (the same semantics, for tests and explanations) --------------------


def _allows(allow: Allow, peer: str, protocol: str, port: int) -> bool:
    if allow.pairs:
        return (peer, protocol, port) in allow.pairs
    if not allow.any_peer:
        if not any(_in_block(peer, a if "/" in a else f"{a}/{32 if ':' not in a else 128}", list(allow.excepts))
                   for a in allow.addresses):
            return False
    if allow.any_port:
        return True
    return any(r.protocol == protocol and r.first <= port <= r.last for r in allow.ports)


def permits(rules: Iterable[PodRules], src: str, dst: str, protocol: str, port: int) -> bool:
    """Whether a new connection src -> dst:port/protocol passes this node's rules."""
    by_ip = {r.ip: r for r in rules}
    s, d = by_ip.get(src), by_ip.get(dst)
    if s is not None and s.egress is not None and not any(_allows(a, dst, protocol, port) for a in s.egress):
        return False
    if d is not None and d.ingress is not None and not any(_allows(a, src, protocol, port) for a in d.ingress):
        return False
    return True


def delete_ruleset() -> str:
    return f"table inet {TABLE}\ndelete table inet {TABLE}\n"
