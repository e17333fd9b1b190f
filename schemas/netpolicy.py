"""NetworkPolicy defaulting and validation, as Kubernetes' API server does them.

Defaults: ``policyTypes`` empty becomes ``[Ingress]``, plus ``Egress`` when the policy has
egress rules; a port's protocol is TCP (a field default). Validation: selectors are valid
label selectors; a port is 1-65535 or an IANA service name; ``endPort`` needs a numeric
``port`` and is >= it; every peer names something, and an ``ipBlock`` stands alone; a block's
``cidr`` is a CIDR and each ``except`` a strict subset of it; at most two policyTypes.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from msgspec.structs import replace

from schemas import podchecks
from schemas.meta import LabelSelector
from schemas.networking import IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort
from schemas.selector import SelectorError, from_label_selector

Errors = list[tuple[str, str]]


def default(np: NetworkPolicy) -> NetworkPolicy:
    if np.spec.policyTypes:
        return np
    types: list[Literal["Ingress", "Egress"]] = ["Ingress", "Egress"] if np.spec.egress else ["Ingress"]
    return replace(np, spec=replace(np.spec, policyTypes=types))


def _selector(errs: Errors, path: str, sel: LabelSelector | None) -> None:
    if sel is None:
        return
    try:
        from_label_selector(sel)
    except SelectorError as e:
        errs.append((path, str(e)))


def _port(errs: Errors, path: str, p: NetworkPolicyPort) -> None:
    if p.port is not None:
        errs.extend((f"{path}.port", m) for m in podchecks.int_or_port(p.port))
    if p.endPort is None:
        return
    if p.port is None:
        errs.append((f"{path}.endPort", "may not be specified when `port` is not specified"))
    elif isinstance(p.port, str):
        errs.append((f"{path}.endPort", "may not be specified when `port` is non-numeric"))
    elif p.endPort < p.port:
        errs.append((f"{path}.endPort", f"Invalid value: {p.endPort}: must be greater than or equal to `port`"))
    errs.extend((f"{path}.endPort", m) for m in podchecks.port_number(p.endPort))


def _network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None


def _ip_block(errs: Errors, path: str, block: IPBlock) -> None:
    cidr = _network(block.cidr)
    if not block.cidr:
        errs.append((f"{path}.cidr", "Required value"))
        return
    if cidr is None:
        errs.append((f"{path}.cidr", f'Invalid value: "{block.cidr}": must be a valid CIDR (e.g. 10.0.0.0/16)'))
        return
    for i, ex in enumerate(block.except_):
        net = _network(ex)
        if net is None:
            errs.append((f"{path}.except[{i}]", f'Invalid value: "{ex}": must be a valid CIDR'))
        elif net.version != cidr.version or not net.subnet_of(cidr) or net == cidr:  # type: ignore[arg-type]
            errs.append((f"{path}.except[{i}]", f'Invalid value: "{ex}": must be a strict subset of `cidr`'))


def _peer(errs: Errors, path: str, peer: NetworkPolicyPeer) -> None:
    given = [s for s in (peer.podSelector, peer.namespaceSelector, peer.ipBlock) if s is not None]
    if not given:
        errs.append((path, "must specify a peer"))
    elif len(given) > 1 and peer.ipBlock is not None:
        errs.append((path, "may not specify both ipBlock and another peer"))
    _selector(errs, f"{path}.podSelector", peer.podSelector)
    _selector(errs, f"{path}.namespaceSelector", peer.namespaceSelector)
    if peer.ipBlock is not None:
        _ip_block(errs, f"{path}.ipBlock", peer.ipBlock)


def validate(errs: Errors, np: NetworkPolicy) -> None:
    spec = np.spec
    _selector(errs, "spec.podSelector", spec.podSelector)
    for i, rule in enumerate(spec.ingress):
        for j, p in enumerate(rule.ports):
            _port(errs, f"spec.ingress[{i}].ports[{j}]", p)
        for j, peer in enumerate(rule.from_):
            _peer(errs, f"spec.ingress[{i}].from[{j}]", peer)
    for i, erule in enumerate(spec.egress):
        for j, p in enumerate(erule.ports):
            _port(errs, f"spec.egress[{i}].ports[{j}]", p)
        for j, peer in enumerate(erule.to):
            _peer(errs, f"spec.egress[{i}].to[{j}]", peer)
    if len(spec.policyTypes) > 2:
        errs.append(("spec.policyTypes", "may not specify more than two policyTypes"))
