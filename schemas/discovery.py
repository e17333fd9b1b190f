"""discovery.k8s.io/v1 EndpointSlice: the scalable form of a Service's endpoints, which the
proxy reads."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from schemas.meta import Base, Object, ObjectReference


class EndpointConditions(Base, kw_only=True, frozen=True):
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None


class Endpoint(Base, kw_only=True, frozen=True):
    addresses: list[str]
    conditions: EndpointConditions = EndpointConditions()
    hostname: str | None = None
    targetRef: ObjectReference | None = None
    nodeName: str | None = None
    zone: str | None = None


class EndpointSlicePort(Base, kw_only=True, frozen=True):
    name: str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    port: int | None = None
    appProtocol: str | None = None


class EndpointSlice(Object, kw_only=True, frozen=True):
    API_VERSION = "discovery.k8s.io/v1"
    KIND = "EndpointSlice"

    addressType: Literal["IPv4", "IPv6", "FQDN"] = "IPv4"
    endpoints: list[Endpoint] = []
    ports: list[EndpointSlicePort] = []


# The label that ties an EndpointSlice to its Service (Kubernetes' discovery.LabelServiceName).
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def slices_by_service(slices: Iterable[EndpointSlice]) -> dict[tuple[str, str], list[EndpointSlice]]:
    """The slices of each Service, keyed by (namespace, service name)."""
    out: dict[tuple[str, str], list[EndpointSlice]] = {}
    for s in slices:
        name = s.metadata.labels.get(SERVICE_NAME_LABEL)
        if name:
            out.setdefault((s.metadata.namespace or "default", name), []).append(s)
    return out
