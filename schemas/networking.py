"""networking.k8s.io/v1: Ingress (host and path rules to Service backends), IngressClass and
NetworkPolicy (which traffic the pods it selects may receive and send)."""

from __future__ import annotations

from typing import Literal

import msgspec

from schemas.core import LoadBalancerStatus
from schemas.meta import Base, LabelSelector, Object


class ServiceBackendPort(Base, kw_only=True, frozen=True):
    name: str = ""
    number: int | None = None


class IngressServiceBackend(Base, kw_only=True, frozen=True):
    name: str
    port: ServiceBackendPort = ServiceBackendPort()


class TypedLocalObjectReference(Base, kw_only=True, frozen=True):
    kind: str
    name: str
    apiGroup: str | None = None


class IngressBackend(Base, kw_only=True, frozen=True):
    service: IngressServiceBackend | None = None
    resource: TypedLocalObjectReference | None = None


class HTTPIngressPath(Base, kw_only=True, frozen=True):
    pathType: Literal["Exact", "Prefix", "ImplementationSpecific"]
    backend: IngressBackend
    path: str = ""


class HTTPIngressRuleValue(Base, kw_only=True, frozen=True):
    paths: list[HTTPIngressPath] = []


class IngressRule(Base, kw_only=True, frozen=True):
    host: str = ""
    http: HTTPIngressRuleValue | None = None


class IngressTLS(Base, kw_only=True, frozen=True):
    hosts: list[str] = []
    secretName: str = ""


class IngressSpec(Base, kw_only=True, frozen=True):
    ingressClassName: str | None = None
    defaultBackend: IngressBackend | None = None
    tls: list[IngressTLS] = []
    rules: list[IngressRule] = []


class IngressStatus(Base, kw_only=True, frozen=True):
    loadBalancer: LoadBalancerStatus = LoadBalancerStatus()


class Ingress(Object, kw_only=True, frozen=True):
    API_VERSION = "networking.k8s.io/v1"
    KIND = "Ingress"

    spec: IngressSpec = IngressSpec()
    status: IngressStatus = IngressStatus()


class IngressClassParametersReference(Base, kw_only=True, frozen=True):
    kind: str
    name: str
    apiGroup: str | None = None
    scope: Literal["Cluster", "Namespace"] | None = None
    namespace: str | None = None


class IngressClassSpec(Base, kw_only=True, frozen=True):
    controller: str = ""
    parameters: IngressClassParametersReference | None = None


class IngressClass(Object, kw_only=True, frozen=True):
    API_VERSION = "networking.k8s.io/v1"
    KIND = "IngressClass"

    spec: IngressClassSpec = IngressClassSpec()


# --- NetworkPolicy ---------------------------------------------------------------------------


class IPBlock(Base, kw_only=True, frozen=True):
    """A CIDR, minus the ``except`` ranges inside it."""

    cidr: str
    except_: list[str] = msgspec.field(default_factory=list, name="except")


class NetworkPolicyPeer(Base, kw_only=True, frozen=True):
    """Pods (``podSelector`` in the policy's namespace, ``namespaceSelector`` in the namespaces it
    selects, both: those pods in those namespaces) or an ``ipBlock``."""

    podSelector: LabelSelector | None = None
    namespaceSelector: LabelSelector | None = None
    ipBlock: IPBlock | None = None


class NetworkPolicyPort(Base, kw_only=True, frozen=True):
    """A port number or a named container port (unset: every port), up to ``endPort``."""

    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    port: int | str | None = None
    endPort: int | None = None


class NetworkPolicyIngressRule(Base, kw_only=True, frozen=True):
    ports: list[NetworkPolicyPort] = []
    from_: list[NetworkPolicyPeer] = msgspec.field(default_factory=list, name="from")


class NetworkPolicyEgressRule(Base, kw_only=True, frozen=True):
    ports: list[NetworkPolicyPort] = []
    to: list[NetworkPolicyPeer] = []


class NetworkPolicySpec(Base, kw_only=True, frozen=True):
    podSelector: LabelSelector = LabelSelector()
    ingress: list[NetworkPolicyIngressRule] = []
    egress: list[NetworkPolicyEgressRule] = []
    policyTypes: list[Literal["Ingress", "Egress"]] = []


class NetworkPolicy(Object, kw_only=True, frozen=True):
    API_VERSION = "networking.k8s.io/v1"
    KIND = "NetworkPolicy"

    spec: NetworkPolicySpec = NetworkPolicySpec()
