"""What the node lifecycle controller decides about one node, without touching anything.

Kubernetes' node lifecycle controller, taint manager and pod GC, as pure functions of the node,
what this controller last saw of its heartbeats, the pods bound to it and ``now``:

- **Heartbeats.** A kubelet renews its Lease ``kube-node-lease/<node>`` every few seconds and
  posts the node's status now and then. :func:`observe` remembers when *this controller* last
  saw either change (its own clock; clocks of different machines are never compared), so a
  controller that starts, or wins leadership, gives every node a full grace period.
- **Unreachable.** No heartbeat for ``node_monitor_grace_period``: every condition the kubelet
  posts becomes Unknown (reason ``NodeStatusUnknown``, "Kubelet stopped posting node status.")
  and the node gets ``node.kubernetes.io/unreachable`` with effects NoExecute (``timeAdded``)
  and NoSchedule. A fresh heartbeat takes both away again; Ready is then what the kubelet
  reports (a kubelet reporting Ready=False gets ``node.kubernetes.io/not-ready`` instead).
  Pods on an unreachable node stop being Ready, so services stop sending them traffic.
- **Taint-based eviction.** For each NoExecute taint, a pod without a matching toleration is
  deleted ``pod_eviction_timeout`` after the taint's ``timeAdded``; a pod tolerating it with
  ``tolerationSeconds`` after that many seconds (the most permissive matching toleration
  counts); a pod tolerating it without ``tolerationSeconds`` stays. Pods that finished
  (Succeeded/Failed) are left for their owners.
- **Force deletion.** The node's kubelet is gone, so nobody would finish a graceful deletion:
  evicted pods are deleted with grace period 0, and pods already terminating on an unreachable
  node are force-deleted once their grace period is over. Pods bound to a Node that does not
  exist are force-deleted after ``orphan_quarantine`` (pod GC).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import msgspec

from schemas import tolerations
from schemas.coordination import Lease
from schemas.core import Node, NodeCondition, Taint
from schemas.helpers import format_time, parse_time
from schemas.pod import Pod

UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"
LIFECYCLE_TAINT_KEYS = (UNREACHABLE, NOT_READY)
KUBELET_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
REASON_UNKNOWN = "NodeStatusUnknown"
MESSAGE_UNKNOWN = "Kubelet stopped posting node status."
REASON_NEVER = "NodeStatusNeverUpdated"
MESSAGE_NEVER = "Kubelet never posted node status."


@dataclass(frozen=True, slots=True)
class Settings:
    node_monitor_grace_period: float = 50.0  # seconds without a heartbeat before a node is Unknown
    pod_eviction_timeout: float = 300.0  # seconds a pod without a toleration stays on a NoExecute-tainted node
    orphan_quarantine: float = 40.0  # seconds a pod bound to a missing Node is kept before it is force-deleted


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """The last heartbeat this controller saw of a node, and when it saw it change."""

    lease_renew: str | None = None  # the Lease's spec.renewTime
    status_heartbeat: str | None = None  # the Ready condition's lastHeartbeatTime
    probed_at: datetime  # this controller's clock when either last changed


@dataclass(frozen=True, slots=True)
class Eviction:
    pod: Pod
    reason: str  # "TaintManagerEviction" | "NodeLost" | "PodGC"
    message: str


@dataclass(frozen=True, slots=True)
class NodePlan:
    """What to write for one node; ``node`` is None when it stays as it is."""

    node: Node | None = None
    became: str | None = None  # "NodeNotReady" | "NodeReady": the transition to record as an event
    evict: list[Eviction] = field(default_factory=list)  # delete with grace period 0, now
    not_ready: list[Pod] = field(default_factory=list)  # pods whose Ready condition becomes False
    requeue_after: float | None = None  # seconds until something here is due


# -- heartbeats ----------------------------------------------------------------------------------


def _ready(node: Node) -> NodeCondition | None:
    return next((c for c in node.status.conditions if c.type == "Ready"), None)


def observe(previous: Health | None, lease: Lease | None, node: Node | None, now: datetime) -> Health:
    """The node's Health after looking at its Lease and status at ``now``."""
    renew = lease.spec.renewTime if lease is not None else None
    ready = _ready(node) if node is not None else None
    beat = ready.lastHeartbeatTime if ready is not None else None
    if previous is None or previous.lease_renew != renew or previous.status_heartbeat != beat:
        return Health(lease_renew=renew, status_heartbeat=beat, probed_at=now)
    return previous


def is_stale(health: Health, now: datetime, settings: Settings) -> bool:
    return now - health.probed_at > timedelta(seconds=settings.node_monitor_grace_period)


# -- the node ------------------------------------------------------------------------------------


def _unknown(conditions: Sequence[NodeCondition], now: datetime) -> list[NodeCondition]:
    stamp = format_time(now)
    out = []
    for c in conditions:
        if c.type in KUBELET_CONDITIONS and c.status != "Unknown":
            c = msgspec.structs.replace(
                c, status="Unknown", reason=REASON_UNKNOWN, message=MESSAGE_UNKNOWN, lastTransitionTime=stamp
            )
        out.append(c)
    if not any(c.type == "Ready" for c in out):
        out.append(
            NodeCondition(
                type="Ready",
                status="Unknown",
                reason=REASON_NEVER,
                message=MESSAGE_NEVER,
                lastTransitionTime=stamp,
            )
        )
    return out


def _with_taints(taints: Sequence[Taint], key: str | None, now: datetime) -> list[Taint]:
    """``taints`` with the lifecycle taints other than ``key`` (NoExecute, NoSchedule) removed and
    those present; NoExecute taints get a timeAdded if they lack one."""
    stamp = format_time(now)
    out = [
        t for t in taints if t.key not in LIFECYCLE_TAINT_KEYS or (t.key == key and t.effect in ("NoExecute", "NoSchedule"))
    ]
    if key is not None:
        for effect in ("NoExecute", "NoSchedule"):
            if not any(t.key == key and t.effect == effect for t in out):
                out.append(Taint(key=key, effect=effect, timeAdded=stamp if effect == "NoExecute" else None))
    return [
        msgspec.structs.replace(t, timeAdded=stamp) if t.effect == "NoExecute" and t.timeAdded is None else t
        for t in out
    ]


def desired_node(node: Node, stale: bool, now: datetime) -> Node:
    """The node as it should be: conditions Unknown and unreachable-tainted when ``stale``,
    else tainted after the Ready status its kubelet reports."""
    conditions = node.status.conditions
    if stale:
        conditions = _unknown(conditions, now)
        key: str | None = UNREACHABLE
    else:
        ready = _ready(node)
        key = NOT_READY if ready is not None and ready.status == "False" else None
    taints = _with_taints(node.spec.taints, key, now)
    if conditions == node.status.conditions and taints == node.spec.taints:
        return node
    return msgspec.structs.replace(
        node,
        spec=msgspec.structs.replace(node.spec, taints=taints),
        status=msgspec.structs.replace(node.status, conditions=list(conditions)),
    )


def is_unreachable(node: Node) -> bool:
    return any(t.key == UNREACHABLE and t.effect == "NoExecute" for t in node.spec.taints)


# -- pods ----------------------------------------------------------------------------------------


def eviction_time(pod: Pod, taints: Iterable[Taint], now: datetime, settings: Settings) -> datetime | None:
    """When the node's NoExecute taints evict ``pod`` (None: never)."""
    due: datetime | None = None
    for taint in taints:
        if taint.effect != "NoExecute":
            continue
        since = parse_time(taint.timeAdded) if taint.timeAdded else now
        matching = tolerations.matching(pod.spec.tolerations, taint)
        if not matching:
            at = since + timedelta(seconds=settings.pod_eviction_timeout)
        elif any(t.tolerationSeconds is None for t in matching):
            continue  # tolerated forever
        else:
            at = since + timedelta(seconds=max(0, max(t.tolerationSeconds or 0 for t in matching)))
        due = at if due is None else min(due, at)
    return due


def _grace_over(pod: Pod) -> datetime:
    meta = pod.metadata
    return parse_time(meta.deletionTimestamp or "") + timedelta(seconds=meta.deletionGracePeriodSeconds or 0)


def _terminal(pod: Pod) -> bool:
    return pod.status.phase in ("Succeeded", "Failed")


def _pod_ref(pod: Pod) -> str:
    return f"{pod.metadata.namespace or 'default'}/{pod.metadata.name}"


def not_ready_pod(pod: Pod, now: datetime) -> Pod | None:
    """``pod`` with its Ready condition False (its node is unreachable), or None if it is not Ready."""
    conditions = pod.status.conditions
    if not any(c.type == "Ready" and c.status == "True" for c in conditions):
        return None
    stamp = format_time(now)
    updated = [
        msgspec.structs.replace(c, status="False", reason="NodeNotReady", message="Node is not ready", lastTransitionTime=stamp)
        if c.type == "Ready"
        else c
        for c in conditions
    ]
    return msgspec.structs.replace(pod, status=msgspec.structs.replace(pod.status, conditions=updated))


def _after(due: datetime, now: datetime) -> float:
    return max((due - now).total_seconds(), 0.0) + 0.05


def plan_node(node: Node, health: Health, pods: Sequence[Pod], now: datetime, settings: Settings) -> NodePlan:
    """Everything to do about ``node`` and the ``pods`` bound to it at ``now``."""
    stale = is_stale(health, now, settings)
    desired = desired_node(node, stale, now)
    waits: list[float] = []
    if not stale:
        waits.append(_after(health.probed_at + timedelta(seconds=settings.node_monitor_grace_period), now))
    became = None
    if stale != is_unreachable(node):
        became = "NodeNotReady" if stale else "NodeReady"
    evict: list[Eviction] = []
    not_ready: list[Pod] = []
    unreachable = is_unreachable(desired)
    for pod in pods:
        if pod.metadata.deletionTimestamp:
            if unreachable:
                over = _grace_over(pod)
                if over <= now:
                    evict.append(Eviction(pod, "NodeLost", f"Deleting terminating Pod {_pod_ref(pod)} from unreachable Node {node.metadata.name}"))
                else:
                    waits.append(_after(over, now))
            continue
        if _terminal(pod):
            continue
        at = eviction_time(pod, desired.spec.taints, now, settings)
        if at is not None and at <= now:
            evict.append(Eviction(pod, "TaintManagerEviction", f"Marking for deletion Pod {_pod_ref(pod)}"))
            continue
        if at is not None:
            waits.append(_after(at, now))
        if unreachable and (p := not_ready_pod(pod, now)) is not None:
            not_ready.append(p)
    return NodePlan(
        node=None if desired is node else desired,
        became=became,
        evict=evict,
        not_ready=not_ready,
        requeue_after=min(waits) if waits else None,
    )


def plan_orphans(
    pods: Sequence[Pod], first_seen: Mapping[str, datetime], now: datetime, settings: Settings
) -> tuple[list[Eviction], float | None]:
    """Pods bound to a Node that does not exist, given when each (by uid) was first seen so:
    those past the quarantine to force-delete, and when to look again."""
    evict: list[Eviction] = []
    waits: list[float] = []
    for pod in pods:
        seen = first_seen.get(pod.metadata.uid or "", now)
        due = seen + timedelta(seconds=settings.orphan_quarantine)
        if due <= now:
            evict.append(
                Eviction(pod, "PodGC", f"Deleting Pod {_pod_ref(pod)} bound to missing Node {pod.spec.nodeName}")
            )
        else:
            waits.append(_after(due, now))
    return evict, (min(waits) if waits else None)

