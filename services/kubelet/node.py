"""The Node object a kubelet registers and the Lease it renews, built from its settings.

Registration writes capacity, allocatable, the four conditions (Ready, MemoryPressure,
DiskPressure, PIDPressure), addresses, nodeInfo, labels, podCIDR and taints; the status is
written again when it changed or every ``status_interval`` seconds (nodeStatusUpdateFrequency),
and the Lease ``kube-node-lease/<node>`` is renewed every ``lease_interval`` seconds.
Pure: the caller reads the host and the clock.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from datetime import datetime
from typing import get_args

import msgspec

from schemas.coordination import NODE_LEASE_NAMESPACE, Lease, node_lease
from schemas.core import Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, Taint
from schemas.helpers import format_time
from schemas.meta import ConditionStatus, ObjectMeta
from schemas.pod import TaintEffect

KUBELET_VERSION = "v1.2.0-kyb"
LEASE_NAMESPACE = NODE_LEASE_NAMESPACE



@dataclass(frozen=True, slots=True)
class NodeSettings:
    name: str  # node name (default: the hostname)
    cpu: str  # capacity cpu, e.g. "4"
    memory: str  # capacity memory, e.g. "16314312Ki"
    pods: str = "110"  # capacity pods
    labels: dict[str, str] = field(default_factory=dict)  # extra node labels
    taints: tuple[Taint, ...] = ()  # spec.taints
    pod_cidr: str = ""  # spec.podCIDR ("" keeps what the Node has: nodeipam's)
    internal_ip: str = "127.0.0.1"  # status.addresses InternalIP
    hostname: str = ""  # the Hostname address
    runtime_version: str = ""  # nodeInfo.containerRuntimeVersion, e.g. docker://27.0.3


_EFFECTS: dict[str, TaintEffect] = {e: e for e in get_args(TaintEffect)}


def parse_taint(text: str) -> Taint:
    """``key=value:Effect`` or ``key:Effect`` (as kubectl taint writes them)."""
    head, sep, written = text.rpartition(":")
    effect = _EFFECTS.get(written) if sep else None
    if effect is None:
        raise ValueError(f"taint {text!r}: expected key=value:Effect with Effect NoSchedule|PreferNoSchedule|NoExecute")
    key, _, value = head.partition("=")
    if not key:
        raise ValueError(f"taint {text!r}: the key is empty")
    return Taint(key=key, value=value, effect=effect)


def _conditions(previous: list[NodeCondition], now: datetime) -> list[NodeCondition]:
    wanted: list[tuple[str, ConditionStatus, str, str]] = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]
    out = []
    for type_, status, reason, message in wanted:
        before = next((c for c in previous if c.type == type_), None)
        since = before.lastTransitionTime if before is not None and before.status == status else format_time(now)
        out.append(
            NodeCondition(
                type=type_,
                status=status,
                lastHeartbeatTime=format_time(now),
                lastTransitionTime=since,
                reason=reason,
                message=message,
            )
        )
    return out


def node_object(settings: NodeSettings, existing: Node | None, now: datetime) -> Node:
    """The Node to write: ``existing`` (for its metadata and spec fields others own) with this
    kubelet's status, labels, podCIDR and taints."""
    capacity = {"cpu": settings.cpu, "memory": settings.memory, "pods": settings.pods}
    labels = {
        "kubernetes.io/hostname": settings.name,
        "kubernetes.io/os": platform.system().lower() or "linux",
        "kubernetes.io/arch": _arch(),
        **settings.labels,
    }
    info = NodeSystemInfo(
        kernelVersion=platform.release(),
        osImage=platform.platform(),
        containerRuntimeVersion=settings.runtime_version,
        kubeletVersion=KUBELET_VERSION,
        kubeProxyVersion=KUBELET_VERSION,
        operatingSystem=platform.system().lower() or "linux",
        architecture=_arch(),
    )
    previous = existing.status.conditions if existing is not None else []
    status = NodeStatus(
        capacity=capacity,
        allocatable=dict(capacity),
        conditions=_conditions(list(previous), now),
        addresses=[
            NodeAddress(type="InternalIP", address=settings.internal_ip),
            NodeAddress(type="Hostname", address=settings.hostname or settings.name),
        ],
        nodeInfo=info,
        images=existing.status.images if existing is not None else [],
    )
    if existing is None:
        meta = ObjectMeta(name=settings.name, labels=labels)
        spec = NodeSpec(
            podCIDR=settings.pod_cidr,
            podCIDRs=[settings.pod_cidr] if settings.pod_cidr else [],
            taints=list(settings.taints),
        )
        return Node(metadata=meta, spec=spec, status=status)
    meta = msgspec.structs.replace(existing.metadata, labels={**existing.metadata.labels, **labels})
    taints = list(existing.spec.taints)
    for t in settings.taints:
        if not any(o.key == t.key and o.effect == t.effect for o in taints):
            taints.append(t)
    cidr = settings.pod_cidr or existing.spec.podCIDR
    spec = msgspec.structs.replace(
        existing.spec,
        podCIDR=cidr,
        podCIDRs=[settings.pod_cidr] if settings.pod_cidr else list(existing.spec.podCIDRs),
        taints=taints,
    )
    return msgspec.structs.replace(existing, metadata=meta, spec=spec, status=status)


def differs_beyond_heartbeat(a: Node, b: Node) -> bool:
    """True when two nodes differ in more than their conditions' heartbeat times."""

    def strip(n: Node) -> bytes:
        conds = [msgspec.structs.replace(c, lastHeartbeatTime=None) for c in n.status.conditions]
        n = msgspec.structs.replace(
            n,
            metadata=msgspec.structs.replace(n.metadata, resourceVersion=None),
            status=msgspec.structs.replace(n.status, conditions=conds),
        )
        return msgspec.json.encode(n)

    return strip(a) != strip(b)


def lease_object(node_name: str, existing: Lease | None, now: datetime) -> Lease:
    return node_lease(node_name, existing, now)


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine or "amd64")
