"""What the Endpoints and EndpointSlices of one Service should hold, as pure functions.

``reconcile(service, pods, endpoints, slices)`` compares the objects a Service's selector
implies with the stored ones and returns a :class:`Plan` of writes. Kubernetes' rules:

- only pods with a pod IP that are not Succeeded/Failed count;
- a pod whose Ready condition is not True goes to ``notReadyAddresses`` (slices:
  ``conditions.ready=false``), unless ``publishNotReadyAddresses`` is set;
- a terminating pod is never ready: Endpoints leave it out, slices list it with
  ``terminating=true`` (again: ``publishNotReadyAddresses`` keeps it as a ready address);
- a named ``targetPort`` is resolved per pod against its containers' named ports (same
  protocol); a pod that lacks the name is left out of that port only;
- pods with the same resolved port set share one subset / one slice;
- Services without a selector (and ExternalName Services) are user-managed: nothing is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import msgspec

from schemas.core import EndpointAddress, EndpointPort, Endpoints, EndpointSubset, Service, ServicePort
from schemas.discovery import (
    SERVICE_NAME_LABEL,
    Endpoint,
    EndpointConditions,
    EndpointSlice,
    EndpointSlicePort,
)
from schemas.helpers import owner_reference, pod_is_ready, pod_is_terminal
from schemas.meta import ObjectMeta, ObjectReference
from schemas.pod import Pod, Protocol

SLICE_MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
SLICE_MANAGER = "endpointslice-controller.k8s.io"
ENDPOINTS_MANAGED_BY_LABEL = "endpoints.kubernetes.io/managed-by"
ENDPOINTS_MANAGER = "endpoint-controller"

# (name, port, protocol, appProtocol) of one resolved port.
PortTuple = tuple[str, int, Protocol, str | None]


class Plan(msgspec.Struct, kw_only=True, frozen=True):
    """The writes that bring one Service's endpoint objects to the desired state."""

    create_endpoints: Endpoints | None = None
    update_endpoints: Endpoints | None = None
    delete_endpoints: bool = False
    create_slices: list[EndpointSlice] = []
    update_slices: list[EndpointSlice] = []
    delete_slices: list[str] = []

    @property
    def empty(self) -> bool:
        return not (
            self.create_endpoints
            or self.update_endpoints
            or self.delete_endpoints
            or self.create_slices
            or self.update_slices
            or self.delete_slices
        )


class PodEndpoint(msgspec.Struct, kw_only=True, frozen=True):
    """One pod as seen through one Service."""

    ip: str
    ready: bool
    serving: bool
    terminating: bool
    ports: tuple[PortTuple, ...]
    hostname: str
    node_name: str | None
    ref: ObjectReference


def manages(service: Service) -> bool:
    """True when the controller owns this Service's endpoints (it has a selector)."""
    return bool(service.spec.selector) and service.spec.type != "ExternalName"


def selects(service: Service, pod: Pod) -> bool:
    if not manages(service) or pod.metadata.namespace != service.metadata.namespace:
        return False
    labels = pod.metadata.labels
    return all(labels.get(k) == v for k, v in service.spec.selector.items())


def resolve_target_port(port: ServicePort, pod: Pod) -> int | None:
    """The pod's port number for a service port; None when a named targetPort is missing."""
    target = port.targetPort
    if target is None:
        return port.port
    if isinstance(target, int):
        return target
    if target.isdigit():
        return int(target)
    for container in pod.spec.containers:
        for cp in container.ports:
            if cp.name == target and cp.protocol == port.protocol:
                return cp.containerPort
    return None


def pod_endpoint(service: Service, pod: Pod) -> PodEndpoint | None:
    """How ``pod`` appears in ``service``'s endpoints, or None when it does not."""
    if not pod.status.podIP or pod_is_terminal(pod):
        return None
    publish = service.spec.publishNotReadyAddresses
    terminating = pod.metadata.deletionTimestamp is not None
    serving = pod_is_ready(pod)
    ready = publish or (serving and not terminating)
    ports: list[PortTuple] = []
    for sp in service.spec.ports:
        number = resolve_target_port(sp, pod)
        if number is not None:
            ports.append((sp.name, number, sp.protocol, sp.appProtocol))
    hostname = ""
    if pod.spec.hostname and pod.spec.subdomain == service.metadata.name:
        hostname = pod.spec.hostname
    ref = ObjectReference(
        kind="Pod",
        namespace=pod.metadata.namespace or "default",
        name=pod.metadata.name,
        uid=pod.metadata.uid or "",
    )
    return PodEndpoint(
        ip=pod.status.podIP,
        ready=ready,
        serving=serving or publish,
        terminating=terminating,
        ports=tuple(sorted(ports)),
        hostname=hostname,
        node_name=pod.spec.nodeName or None,
        ref=ref,
    )


def pod_endpoints(service: Service, pods: Iterable[Pod]) -> list[PodEndpoint]:
    out = [pe for pod in pods if selects(service, pod) and (pe := pod_endpoint(service, pod)) is not None]
    return sorted(out, key=lambda pe: (pe.ip, pe.ref.name))


def _groups(eps: Iterable[PodEndpoint]) -> dict[tuple[PortTuple, ...], list[PodEndpoint]]:
    groups: dict[tuple[PortTuple, ...], list[PodEndpoint]] = {}
    for pe in eps:
        groups.setdefault(pe.ports, []).append(pe)
    return dict(sorted(groups.items()))


def desired_subsets(service: Service, pods: Iterable[Pod]) -> list[EndpointSubset]:
    """Endpoints subsets: pods grouped by resolved port set; terminating pods left out."""
    publish = service.spec.publishNotReadyAddresses
    eps = [pe for pe in pod_endpoints(service, pods) if pe.ports and (publish or not pe.terminating)]
    subsets = []
    for ports, members in _groups(eps).items():
        def addr(pe: PodEndpoint) -> EndpointAddress:
            return EndpointAddress(ip=pe.ip, hostname=pe.hostname, nodeName=pe.node_name, targetRef=pe.ref)

        subsets.append(
            EndpointSubset(
                addresses=[addr(pe) for pe in members if pe.ready],
                notReadyAddresses=[addr(pe) for pe in members if not pe.ready],
                ports=[EndpointPort(name=n, port=p, protocol=proto, appProtocol=app) for n, p, proto, app in ports],
            )
        )
    return subsets


def slice_name(service_name: str, ports: tuple[PortTuple, ...]) -> str:
    """A stable slice name per port set: ``<service>-<hash>`` (fits a DNS subdomain)."""
    digest = hashlib.sha256(repr(ports).encode()).hexdigest()[:8]
    return f"{service_name[:54]}-{digest}"


def desired_slices(service: Service, pods: Iterable[Pod]) -> list[EndpointSlice]:
    """EndpointSlices: one per resolved port set, every pod with its conditions."""
    eps = pod_endpoints(service, pods)
    groups = _groups(eps)
    if not groups:
        groups = {(): []}  # Kubernetes keeps one empty slice per Service
    out = []
    for ports, members in groups.items():
        endpoints = [
            Endpoint(
                addresses=[pe.ip],
                conditions=EndpointConditions(ready=pe.ready, serving=pe.serving, terminating=pe.terminating),
                hostname=pe.hostname or None,
                targetRef=pe.ref,
                nodeName=pe.node_name,
            )
            for pe in members
        ]
        out.append(
            EndpointSlice(
                metadata=ObjectMeta(
                    name=slice_name(service.metadata.name, ports),
                    namespace=service.metadata.namespace,
                    labels={SERVICE_NAME_LABEL: service.metadata.name, SLICE_MANAGED_BY_LABEL: SLICE_MANAGER},
                    ownerReferences=[owner_reference(service)],
                ),
                addressType="IPv4",
                endpoints=endpoints,
                ports=[
                    EndpointSlicePort(name=n, port=p, protocol=proto, appProtocol=app)
                    for n, p, proto, app in ports
                ],
            )
        )
    return out


def _same_slice(a: EndpointSlice, b: EndpointSlice) -> bool:
    return (
        a.endpoints == b.endpoints
        and a.ports == b.ports
        and a.addressType == b.addressType
        and all(b.metadata.labels.get(k) == v for k, v in a.metadata.labels.items())
        and a.metadata.ownerReferences == b.metadata.ownerReferences
    )


def reconcile(
    service: Service | None,
    pods: Iterable[Pod],
    endpoints: Endpoints | None,
    slices: Iterable[EndpointSlice],
) -> Plan:
    """The writes for one Service key. ``service`` None means it was deleted; ``slices`` are
    the stored slices labelled with this Service's name."""
    managed_slices = {s.metadata.name: s for s in slices if s.metadata.labels.get(SLICE_MANAGED_BY_LABEL) == SLICE_MANAGER}
    ours = endpoints is not None and endpoints.metadata.labels.get(ENDPOINTS_MANAGED_BY_LABEL) == ENDPOINTS_MANAGER
    gone = service is None or service.metadata.deletionTimestamp is not None
    if service is None or gone or not manages(service):
        # A user-managed Endpoints (no managed-by label) is never touched.
        return Plan(delete_endpoints=ours and gone, delete_slices=sorted(managed_slices))
    pods = list(pods)
    subsets = desired_subsets(service, pods)
    labels = {**service.metadata.labels, ENDPOINTS_MANAGED_BY_LABEL: ENDPOINTS_MANAGER}
    create_ep = update_ep = None
    if endpoints is None:
        create_ep = Endpoints(
            metadata=ObjectMeta(name=service.metadata.name, namespace=service.metadata.namespace, labels=labels),
            subsets=subsets,
        )
    elif endpoints.subsets != subsets or endpoints.metadata.labels != labels:
        update_ep = msgspec.structs.replace(
            endpoints, subsets=subsets, metadata=msgspec.structs.replace(endpoints.metadata, labels=labels)
        )
    create, update = [], []
    wanted = desired_slices(service, pods)
    for want in wanted:
        have = managed_slices.get(want.metadata.name)
        if have is None:
            create.append(want)
        elif not _same_slice(want, have):
            meta = msgspec.structs.replace(
                have.metadata,
                labels={**have.metadata.labels, **want.metadata.labels},
                ownerReferences=want.metadata.ownerReferences,
            )
            update.append(msgspec.structs.replace(want, metadata=meta))
    wanted_names = {w.metadata.name for w in wanted}
    return Plan(
        create_endpoints=create_ep,
        update_endpoints=update_ep,
        create_slices=create,
        update_slices=update,
        delete_slices=sorted(n for n in managed_slices if n not in wanted_names),
    )
