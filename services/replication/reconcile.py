"""What a ReplicaSet or ReplicationController should do next, as pure functions.

``reconcile(owner, pods, expectations, now)`` looks at one owner (both kinds are seen through
the same :class:`Owner` view) and every pod of its namespace and returns a :class:`Plan`:
pods to adopt and release, how many pods to create, which pods to delete (least valuable
first), the status to report and when to look again. The service applies it.

Expectations are the guard against watch lag: after asking for N creates (or deletes) the
controller waits until its informer has seen them before it counts pods again, so a slow
watch never makes it create twice. They live in memory (:class:`kyb.expectations.Expectations`,
kept by the service; here they are the ``expectations_satisfied`` flag); after a restart the
informer is synced before the first reconcile, so the counts start right.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec

from kyb import controllerref
from schemas.apps import ReplicaSet, ReplicaSetStatus
from schemas.core import ReplicationController, ReplicationControllerStatus
from schemas.helpers import (
    format_time,
    parse_time,
    pod_is_available,
    pod_is_ready,
)
from schemas.meta import Condition, ObjectMeta, OwnerReference
from schemas.pod import Pod, PodTemplateSpec
from schemas.selector import Selector, from_label_selector, from_labels

BURST_REPLICAS = 500  # most creates or deletes asked for in one reconcile (Kubernetes' burstReplicas)

Workload = ReplicaSet | ReplicationController
Status = ReplicaSetStatus | ReplicationControllerStatus

_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


@dataclass(frozen=True, slots=True)
class Owner:
    """The fields of a ReplicaSet or ReplicationController the controller works with."""

    kind: str
    api_version: str
    namespace: str
    name: str
    uid: str
    generation: int
    replicas: int
    min_ready_seconds: int
    selector: Selector
    template: PodTemplateSpec | None
    deleting: bool

    @classmethod
    def of(cls, obj: Workload) -> Owner:
        spec = obj.spec
        if isinstance(obj, ReplicationController):
            rc_spec = obj.spec
            labels = rc_spec.selector or (rc_spec.template.metadata.labels if rc_spec.template else {})
            selector = from_labels(labels) if labels else Selector.none()
        else:
            selector = from_label_selector(obj.spec.selector)
        return cls(
            kind=obj.kind,
            api_version=obj.apiVersion,
            namespace=obj.metadata.namespace or "default",
            name=obj.metadata.name,
            uid=obj.metadata.uid or "",
            generation=obj.metadata.generation or 1,
            replicas=max(0, spec.replicas),
            min_ready_seconds=spec.minReadySeconds,
            selector=selector,
            template=spec.template,
            deleting=obj.metadata.deletionTimestamp is not None,
        )

    def controller(self) -> controllerref.Controller:
        return controllerref.Controller(uid=self.uid, namespace=self.namespace, selector=self.selector,
                                        deleting=self.deleting, reference=self.reference())

    def reference(self) -> OwnerReference:
        return OwnerReference(
            apiVersion=self.api_version,
            kind=self.kind,
            name=self.name,
            uid=self.uid,
            controller=True,
            blockOwnerDeletion=True,
        )


# -- the plan --------------------------------------------------------------------------------


class Plan(msgspec.Struct, kw_only=True, frozen=True):
    adopt: list[str] = []  # pod names to take ownership of
    release: list[str] = []  # pod names whose ownerReference to this owner goes
    create: int = 0  # pods to create from the template (in slow-start batches)
    delete: list[str] = []  # pod names to delete, least valuable first
    status: Status | None = None  # None: unchanged
    requeue_after: float | None = None


def is_active(pod: Pod) -> bool:
    """Counts towards replicas: not terminating and not finished."""
    return pod.metadata.deletionTimestamp is None and pod.status.phase not in ("Succeeded", "Failed")


def claims(owner: Owner, pods: Iterable[Pod]) -> tuple[list[Pod], list[str], list[str]]:
    """The pods ``owner`` controls once adoptions and releases are done, and those two lists
    (kyb.controllerref's rules; a ReplicaSet adopts only active pods and leaves terminating
    pods' references alone)."""
    found = controllerref.claim(owner.controller(), pods, adoptable=is_active, release_terminating=False)
    return found.owned, [p.metadata.name for p in found.adopt], [p.metadata.name for p in found.release]


def deletion_rank(pod: Pod) -> tuple[object, ...]:
    """Sort key: smaller is deleted first. Unscheduled < pending < unknown < running; not ready
    < ready; ready for less time first; more restarts first; newer before older."""
    ready = pod_is_ready(pod)
    ready_since = ""
    if ready:
        ready_since = next(
            (c.lastTransitionTime or "" for c in pod.status.conditions if c.type == "Ready"), ""
        )
    restarts = sum(c.restartCount for c in pod.status.containerStatuses)
    return (
        bool(pod.spec.nodeName),
        _PHASE_RANK.get(pod.status.phase, 0),
        ready,
        _Desc(ready_since),
        -restarts,
        _Desc(pod.metadata.creationTimestamp or ""),
        pod.metadata.name,
    )


@dataclass(frozen=True, slots=True, order=False)
class _Desc:
    """Reverses the order of a string (later RFC 3339 times sort first)."""

    value: str

    def __lt__(self, other: _Desc) -> bool:
        return self.value > other.value

    def __gt__(self, other: _Desc) -> bool:
        return self.value < other.value

    def __le__(self, other: _Desc) -> bool:
        return self.value >= other.value

    def __ge__(self, other: _Desc) -> bool:
        return self.value <= other.value


def pods_to_delete(pods: Sequence[Pod], count: int) -> list[str]:
    return [p.metadata.name for p in sorted(pods, key=deletion_rank)[:count]]


def status_of(owner: Owner, pods: Sequence[Pod], now: _dt.datetime) -> tuple[dict[str, int], float | None]:
    """The replica counts over the owner's active pods, and when availability next changes."""
    template_labels = owner.template.metadata.labels if owner.template else {}
    ready = available = labeled = 0
    next_check: float | None = None
    for pod in pods:
        if all(pod.metadata.labels.get(k) == v for k, v in template_labels.items()):
            labeled += 1
        if pod_is_ready(pod):
            ready += 1
            if pod_is_available(pod, owner.min_ready_seconds, now):
                available += 1
            else:
                wait = _until_available(pod, owner.min_ready_seconds, now)
                next_check = wait if next_check is None else min(next_check, wait)
    counts = {
        "replicas": len(pods),
        "fullyLabeledReplicas": labeled,
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": owner.generation,
    }
    return counts, next_check


def _until_available(pod: Pod, min_ready_seconds: int, now: _dt.datetime) -> float:
    for c in pod.status.conditions:
        if c.type == "Ready" and c.lastTransitionTime:
            at = parse_time(c.lastTransitionTime) + _dt.timedelta(seconds=min_ready_seconds)
            return max(0.1, (at - now).total_seconds() + 0.05)
    return float(max(1, min_ready_seconds))


def reconcile(
    obj: Workload,
    pods: Iterable[Pod],
    expectations_satisfied: bool,
    now: _dt.datetime,
    *,
    burst: int = BURST_REPLICAS,
) -> Plan:
    """The next step for ``obj`` given every pod of its namespace (see the module docstring)."""
    owner = Owner.of(obj)
    owned, adopt, release = claims(owner, pods)
    active = [p for p in owned if is_active(p)]
    create = 0
    delete: list[str] = []
    if expectations_satisfied and not owner.deleting:
        diff = len(active) - owner.replicas
        if diff < 0 and owner.template is not None:
            create = min(-diff, burst)
        elif diff > 0:
            delete = pods_to_delete(active, min(diff, burst))
    counts, next_check = status_of(owner, active, now)
    current = msgspec.structs.asdict(obj.status)
    changed = any(current.get(k) != v for k, v in counts.items())
    status = msgspec.structs.replace(obj.status, **counts) if changed else None
    return Plan(
        adopt=adopt, release=release, create=create, delete=delete, status=status, requeue_after=next_check
    )


def with_replica_failure(status: Status, reason: str | None, message: str, now: _dt.datetime) -> Status:
    """``status`` with the ``ReplicaFailure`` condition set (``reason`` given: creates or deletes
    failed) or removed (``reason`` None), as Kubernetes reports it."""
    rest = [c for c in status.conditions if c.type != "ReplicaFailure"]
    if reason is None:
        return (
            status
            if len(rest) == len(status.conditions)
            else msgspec.structs.replace(status, conditions=rest)
        )
    current = next((c for c in status.conditions if c.type == "ReplicaFailure"), None)
    if current is not None and current.reason == reason:
        return status
    cond = Condition(
        type="ReplicaFailure",
        status="True",
        reason=reason,
        message=message,
        lastTransitionTime=format_time(now),
    )
    return msgspec.structs.replace(status, conditions=[*rest, cond])


def slow_start_batches(count: int, initial: int = 1) -> list[int]:
    """Batch sizes 1, 2, 4, ... summing to ``count``: a broken template fails on one pod, not on all."""
    out: list[int] = []
    size = max(1, initial)
    left = count
    while left > 0:
        n = min(size, left)
        out.append(n)
        left -= n
        size *= 2
    return out


def pod_from_template(owner: Owner, now: _dt.datetime) -> Pod:
    """A new pod: ``<owner>-<5 random chars>`` (generateName), the template's labels,
    annotations and spec, controlled by ``owner``."""
    template = owner.template or PodTemplateSpec()
    tm = template.metadata
    return Pod(
        metadata=ObjectMeta(
            generateName=f"{owner.name}-",
            namespace=owner.namespace,
            labels=dict(tm.labels),
            annotations=dict(tm.annotations),
            finalizers=list(tm.finalizers),
            ownerReferences=[owner.reference()],
        ),
        spec=template.spec,
    )


def adopted(pod: Pod, owner: Owner) -> Pod | None:
    """``pod`` with ``owner`` as its controller, or None when it is no longer an orphan that matches."""
    return controllerref.adopted(pod, owner.controller(), is_active)


def released(pod: Pod, owner: Owner) -> Pod | None:
    """``pod`` without its reference to ``owner``, or None when there is nothing to release
    (``owner`` does not control it, still selects it, or is being deleted)."""
    return controllerref.released(pod, owner.controller(), release_terminating=False)
