"""The core/v1 kinds other than Pod: Namespace, Node, ReplicationController, Service,
Endpoints, ConfigMap, Secret, PersistentVolume, PersistentVolumeClaim.

They share the empty API group (``apiVersion: v1``); Pod has its own module and Event lives in
``schemas.events``.
"""

from __future__ import annotations

from typing import Literal

from schemas.meta import (
    Base,
    Condition,
    ConditionStatus,
    LabelSelector,
    LocalObjectReference,
    Object,
    ObjectReference,
)
from schemas.pod import NodeSelector, PodTemplateSpec, Protocol, TaintEffect

# --- Namespace -------------------------------------------------------------------------------


class NamespaceSpec(Base, kw_only=True, frozen=True):
    finalizers: list[str] = []


class NamespaceStatus(Base, kw_only=True, frozen=True):
    phase: Literal["Active", "Terminating"] = "Active"
    conditions: list[Condition] = []


class Namespace(Object, kw_only=True, frozen=True):
    API_VERSION = "v1"
    KIND = "Namespace"

    spec: NamespaceSpec = NamespaceSpec()
    status: NamespaceStatus = NamespaceStatus()


# --- Node ------------------------------------------------------------------------------------


class Taint(Base, kw_only=True, frozen=True):
    key: str
    effect: TaintEffect
    value: str = ""
    timeAdded: str | None = None


class NodeSpec(Base, kw_only=True, frozen=True):
    podCIDR: str = ""
    podCIDRs: list[str] = []
    providerID: str = ""
    unschedulable: bool = False
    taints: list[Taint] = []


class NodeCondition(Base, kw_only=True, frozen=True):
    type: str  # Ready, MemoryPressure, DiskPressure, PIDPressure, NetworkUnavailable
    status: ConditionStatus
    lastHeartbeatTime: str | None = None
    lastTransitionTime: str | None = None
    reason: str = ""
    message: str = ""


class NodeAddress(Base, kw_only=True, frozen=True):
    type: Literal["Hostname", "InternalIP", "ExternalIP", "InternalDNS", "ExternalDNS"]
    address: str


class DaemonEndpoint(Base, kw_only=True, frozen=True):
    Port: int


class NodeDaemonEndpoints(Base, kw_only=True, frozen=True):
    kubeletEndpoint: DaemonEndpoint | None = None


class NodeSystemInfo(Base, kw_only=True, frozen=True):
    machineID: str = ""
    systemUUID: str = ""
    bootID: str = ""
    kernelVersion: str = ""
    osImage: str = ""
    containerRuntimeVersion: str = ""
    kubeletVersion: str = ""
    kubeProxyVersion: str = ""
    operatingSystem: str = ""
    architecture: str = ""


class ContainerImage(Base, kw_only=True, frozen=True):
    names: list[str] = []
    sizeBytes: int | None = None


class NodeStatus(Base, kw_only=True, frozen=True):
    capacity: dict[str, str] = {}
    allocatable: dict[str, str] = {}
    phase: str = ""
    conditions: list[NodeCondition] = []
    addresses: list[NodeAddress] = []
    daemonEndpoints: NodeDaemonEndpoints | None = None
    nodeInfo: NodeSystemInfo = NodeSystemInfo()
    images: list[ContainerImage] = []


class Node(Object, kw_only=True, frozen=True):
    API_VERSION = "v1"
    KIND = "Node"

    spec: NodeSpec = NodeSpec()
    status: NodeStatus = NodeStatus()


# --- ReplicationController -------------------------------------------------------------------


class ReplicationControllerSpec(Base, kw_only=True, frozen=True):
    replicas: int = 1
    minReadySeconds: int = 0
    selector: dict[str, str] = {}  # defaults to the template's labels
    template: PodTemplateSpec | None = None


class ReplicationControllerStatus(Base, kw_only=True, frozen=True):
    replicas: int = 0
    fullyLabeledReplicas: int = 0
    readyReplicas: int = 0
    availableReplicas: int = 0
    observedGeneration: int | None = None
    conditions: list[Condition] = []


class ReplicationController(Object, kw_only=True, frozen=True):
    API_VERSION = "v1"
    KIND = "ReplicationController"

    spec: ReplicationControllerSpec = ReplicationControllerSpec()
    status: ReplicationControllerStatus = ReplicationControllerStatus()


# --- Service and Endpoints -------------------------------------------------------------------


class ServicePort(Base, kw_only=True, frozen=True):
    port: int
    name: str = ""
    protocol: Protocol = "TCP"
    targetPort: int | str | None = None  # defaulted to port
    nodePort: int | None = None
    appProtocol: str | None = None


class ClientIPConfig(Base, kw_only=True, frozen=True):
    timeoutSeconds: int | None = None


class SessionAffinityConfig(Base, kw_only=True, frozen=True):
    clientIP: ClientIPConfig | None = None


class ServiceSpec(Base, kw_only=True, frozen=True):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] = "ClusterIP"
    selector: dict[str, str] = {}
    ports: list[ServicePort] = []
    clusterIP: str = ""
    clusterIPs: list[str] = []
    externalName: str = ""
    externalIPs: list[str] = []
    sessionAffinity: Literal["None", "ClientIP"] = "None"
    sessionAffinityConfig: SessionAffinityConfig | None = None
    loadBalancerIP: str = ""
    externalTrafficPolicy: Literal["", "Cluster", "Local"] = ""
    healthCheckNodePort: int | None = None  # LoadBalancer with externalTrafficPolicy Local
    internalTrafficPolicy: Literal["", "Cluster", "Local"] = ""
    publishNotReadyAddresses: bool = False
    ipFamilies: list[str] = []
    ipFamilyPolicy: str | None = None


class PortStatus(Base, kw_only=True, frozen=True):
    port: int
    protocol: Protocol = "TCP"
    error: str | None = None


class LoadBalancerIngress(Base, kw_only=True, frozen=True):
    ip: str = ""
    hostname: str = ""
    ports: list[PortStatus] = []


class LoadBalancerStatus(Base, kw_only=True, frozen=True):
    ingress: list[LoadBalancerIngress] = []


class ServiceStatus(Base, kw_only=True, frozen=True):
    loadBalancer: LoadBalancerStatus = LoadBalancerStatus()
    conditions: list[Condition] = []


class Service(Object, kw_only=True, frozen=True):
    API_VERSION = "v1"
    KIND = "Service"

    spec: ServiceSpec = ServiceSpec()
    status: ServiceStatus = ServiceStatus()


class EndpointAddress(Base, kw_only=True, frozen=True):
    ip: str
    hostname: str = ""
    nodeName: str | None = None
    targetRef: ObjectReference | None = None


class EndpointPort(Base, kw_only=True, frozen=True):
    port: int
    name: str = ""
    protocol: Protocol = "TCP"
    appProtocol: str | None = None


class EndpointSubset(Base, kw_only=True, frozen=True):
    addresses: list[EndpointAddress] = []
    notReadyAddresses: list[EndpointAddress] = []
    ports: list[EndpointPort] = []


class Endpoints(Object, kw_only=True, frozen=True):
    API_VERSION = "v1"
    KIND = "Endpoints"

    subsets: list[EndpointSubset] = []


# --- ConfigMap and Secret --------------------------------------------------------------------


class ConfigMap(Object, kw_only=True, frozen=True):
    API_VERSION = "v1"
    KIND = "ConfigMap"

    data: dict[str, str] = {}
    binaryData: dict[str, str] = {}  # base64, as on the wire
    immutable: bool | None = None


class ServiceAccount(Object, kw_only=True, frozen=True):
    """An identity for the processes of pods. Every namespace has one named ``default``, and a
    pod that names none runs as it; its pods get tokens of it (``schemas.serviceaccount``)."""

    API_VERSION = "v1"
    KIND = "ServiceAccount"

    secrets: list[ObjectReference] = []
    imagePullSecrets: list[LocalObjectReference] = []
    automountServiceAccountToken: bool | None = None


class Secret(Object, kw_only=True, frozen=True):
    """``data`` holds base64 strings as on the wire; ``stringData`` is write-only and is
    merged into ``data`` by the defaulter."""

    API_VERSION = "v1"
    KIND = "Secret"

    type: str = "Opaque"
    data: dict[str, str] = {}
    stringData: dict[str, str] = {}
    immutable: bool | None = None


# --- PersistentVolume and PersistentVolumeClaim ----------------------------------------------

AccessMode = Literal["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]


class HostPathPV(Base, kw_only=True, frozen=True):
    path: str
    type: str = ""


class LocalVolumeSource(Base, kw_only=True, frozen=True):
    path: str
    fsType: str | None = None


class NFSVolumeSource(Base, kw_only=True, frozen=True):
    server: str
    path: str
    readOnly: bool = False


class VolumeNodeAffinity(Base, kw_only=True, frozen=True):
    required: NodeSelector | None = None


class PersistentVolumeSpec(Base, kw_only=True, frozen=True):
    capacity: dict[str, str] = {}
    accessModes: list[AccessMode] = []
    persistentVolumeReclaimPolicy: Literal["Retain", "Delete", "Recycle"] = "Retain"
    storageClassName: str = ""
    volumeMode: Literal["Filesystem", "Block"] = "Filesystem"
    claimRef: ObjectReference | None = None
    mountOptions: list[str] = []
    hostPath: HostPathPV | None = None
    local: LocalVolumeSource | None = None
    nfs: NFSVolumeSource | None = None
    nodeAffinity: VolumeNodeAffinity | None = None


class PersistentVolumeStatus(Base, kw_only=True, frozen=True):
    phase: Literal["Pending", "Available", "Bound", "Released", "Failed"] = "Pending"
    message: str = ""
    reason: str = ""


class PersistentVolume(Object, kw_only=True, frozen=True):
    API_VERSION = "v1"
    KIND = "PersistentVolume"

    spec: PersistentVolumeSpec = PersistentVolumeSpec()
    status: PersistentVolumeStatus = PersistentVolumeStatus()


class VolumeResourceRequirements(Base, kw_only=True, frozen=True):
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}


class PersistentVolumeClaimSpec(Base, kw_only=True, frozen=True):
    accessModes: list[AccessMode] = []
    resources: VolumeResourceRequirements = VolumeResourceRequirements()
    selector: LabelSelector | None = None
    storageClassName: str | None = None  # unset means "the default class"; "" means none
    volumeMode: Literal["Filesystem", "Block"] = "Filesystem"
    volumeName: str = ""


class PersistentVolumeClaimStatus(Base, kw_only=True, frozen=True):
    phase: Literal["Pending", "Bound", "Lost"] = "Pending"
    accessModes: list[AccessMode] = []
    capacity: dict[str, str] = {}
    conditions: list[Condition] = []


class PersistentVolumeClaim(Object, kw_only=True, frozen=True):
    API_VERSION = "v1"
    KIND = "PersistentVolumeClaim"

    spec: PersistentVolumeClaimSpec = PersistentVolumeClaimSpec()
    status: PersistentVolumeClaimStatus = PersistentVolumeClaimStatus()
