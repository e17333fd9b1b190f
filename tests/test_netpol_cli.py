"""`kyb get netpol` columns and `kyb describe netpol` in kubectl's layout."""

from __future__ import annotations

import datetime as _dt

from kyb.cli.describe import describe
from kyb.cli.printers import columns_for
from schemas.registry import resolve

NOW = _dt.datetime(2025, 1, 1, 12, 0, tzinfo=_dt.UTC)
DOCS = {
    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
    "metadata": {"name": "test-network-policy", "namespace": "default", "creationTimestamp": "2025-01-01T11:55:00Z"},
    "spec": {
        "podSelector": {"matchLabels": {"role": "db"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}},
                              {"namespaceSelector": {"matchLabels": {"project": "myproject"}}},
                              {"podSelector": {"matchLabels": {"role": "frontend"}}}],
                     "ports": [{"protocol": "TCP", "port": 6379}]}],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}], "ports": [{"protocol": "TCP", "port": 32000,
                                                                              "endPort": 32768}]}],
    },
}


def test_kind_and_columns() -> None:
    assert resolve("netpol").kind == resolve("networkpolicies.networking.k8s.io").kind == "NetworkPolicy"
    headers, row = columns_for("NetworkPolicy")
    assert headers == ["POD-SELECTOR", "AGE"]
    assert row(DOCS, NOW) == ["role=db", "5m"]
    assert row({"metadata": {}, "spec": {"podSelector": {}}}, NOW)[0] == "<none>"


def test_describe_as_kubectl() -> None:
    assert describe(DOCS, [], NOW) == """Name:         test-network-policy
Namespace:    default
Created on:   2025-01-01T11:55:00Z
Labels:       <none>
Annotations:  <none>
Spec:
  PodSelector:     role=db
  Allowing ingress traffic:
    To Port: 6379/TCP
    From:
      IPBlock:
        CIDR: 172.17.0.0/16
        Except: 172.17.1.0/24
    From:
      NamespaceSelector: project=myproject
    From:
      PodSelector: role=frontend
  Allowing egress traffic:
    To Port: 32000-32768/TCP
    To:
      IPBlock:
        CIDR: 10.0.0.0/24
        Except: 
  Policy Types: Ingress, Egress
"""  # noqa: W291 (kubectl prints "Except: " with its trailing space)
    deny = {"kind": "NetworkPolicy", "metadata": {"name": "d", "namespace": "default"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    text = describe(deny, [], NOW)
    assert "  PodSelector:     <none> (Allowing the specific traffic to all pods in this namespace)\n" in text
    assert "    <none> (Selected pods are isolated for ingress connectivity)\n  Not affecting egress traffic\n" in text
