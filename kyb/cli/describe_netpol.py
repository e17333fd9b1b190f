"""``kyb describe networkpolicy``: the layout of kubectl's NetworkPolicy describer (pure).

The spec reads as sentences: the pods it selects, what ingress and egress it allows (each rule's
ports and peers, rules separated by ``----------``) or that it does not affect a direction, and
its policy types.
"""

from __future__ import annotations

from typing import Any

from kyb.cli.printers import format_label_selector

Obj = dict[str, Any]


def _pairs(mapping: Obj | None, label: str) -> list[str]:
    if not mapping:
        return [f"{label}<none>"]
    items = [f"{k}={v}" for k, v in sorted(mapping.items())]
    pad = " " * len(label)
    return [f"{label}{items[0]}"] + [f"{pad}{i}" for i in items[1:]]


def _ports(rule: Obj, indent: str, any_text: str) -> list[str]:
    ports = rule.get("ports") or []
    if not ports:
        return [f"{indent}{any_text}"]
    out = []
    for p in ports:
        port = p.get("port")
        shown = "<any>" if port is None else str(port)
        if p.get("endPort") is not None:
            shown = f"{shown}-{p['endPort']}"
        out.append(f"{indent}To Port: {shown}/{p.get('protocol') or 'TCP'}")
    return out


def _peers(peers: list[Obj], indent: str, word: str, any_text: str) -> list[str]:
    if not peers:
        return [f"{indent}{any_text}"]
    out = []
    for peer in peers:
        out.append(f"{indent}{word}:")
        pods, namespaces, block = peer.get("podSelector"), peer.get("namespaceSelector"), peer.get("ipBlock")
        if namespaces is not None:
            out.append(f"  {indent}NamespaceSelector: {format_label_selector(namespaces)}")
        if pods is not None:
            out.append(f"  {indent}PodSelector: {format_label_selector(pods)}")
        if block is not None and pods is None and namespaces is None:
            out.append(f"  {indent}IPBlock:")
            out.append(f"    {indent}CIDR: {block.get('cidr', '')}")
            out.append(f"    {indent}Except: {', '.join(block.get('except') or [])}")
    return out


def _rules(rules: list[Obj], peers_key: str, word: str, direction: str, source: str) -> list[str]:
    indent = "    "
    if not rules:
        return [f"{indent}<none> (Selected pods are isolated for {direction} connectivity)"]
    out: list[str] = []
    for i, rule in enumerate(rules):
        out += _ports(rule, indent, "To Port: <any> (traffic allowed to all ports)")
        out += _peers(rule.get(peers_key) or [], indent, word, f"{word}: <any> (traffic not restricted by {source})")
        if i != len(rules) - 1:
            out.append(f"{indent}----------")
    return out


def describe_network_policy(np: Obj) -> str:
    meta, spec = np.get("metadata") or {}, np.get("spec") or {}
    lines = [f"Name:         {meta.get('name', '')}", f"Namespace:    {meta.get('namespace', '')}",
             f"Created on:   {meta.get('creationTimestamp', '')}"]
    lines += _pairs(meta.get("labels"), "Labels:       ")
    lines += _pairs(meta.get("annotations"), "Annotations:  ")
    lines.append("Spec:")
    selector = spec.get("podSelector") or {}
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        lines.append("  PodSelector:     <none> (Allowing the specific traffic to all pods in this namespace)")
    else:
        lines.append(f"  PodSelector:     {format_label_selector(selector)}")
    types = spec.get("policyTypes") or ["Ingress", *(["Egress"] if spec.get("egress") else [])]
    if "Ingress" in types:
        lines.append("  Allowing ingress traffic:")
        lines += _rules(spec.get("ingress") or [], "from", "From", "ingress", "source")
    else:
        lines.append("  Not affecting ingress traffic")
    if "Egress" in types:
        lines.append("  Allowing egress traffic:")
        lines += _rules(spec.get("egress") or [], "to", "To", "egress", "destination")
    else:
        lines.append("  Not affecting egress traffic")
    lines.append(f"  Policy Types: {', '.join(types)}")
    return "\n".join(lines) + "\n"
