"""From API objects to what the plan needs: a Pod becomes a ``PodRequest``, a Node a ``NodeInfo``.

Kept apart from ``plan`` so the plan works on small hashable values, and apart from the
service so it stays pure. Quantity parsing is cached: thousands of pods share a handful of
request strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.core import Node
from schemas.helpers import millis, parse_time, pod_requests, size
from schemas.pod import NodeSelectorTerm, Pod, TopologySpreadConstraint
from schemas.policy import PodDisruptionBudget
from schemas.selector import Requirement as LabelRequirement
from schemas.selector import Selector, SelectorError, from_label_selector
from services.scheduler.preemption import Budget, Preemptor, Victim
from services.scheduler.values import (
    HostPort,
    NodeInfo,
    PodRequest,
    PreferredTerm,
    Requirement,
    SpreadConstraint,
    Taint,
    Term,
    Toleration,
)

DEFAULT_SCHEDULER = "default-scheduler"
DEFAULT_MAX_PODS = 110


def _term(t: NodeSelectorTerm) -> Term:
    return Term(
        match_expressions=tuple(Requirement(key=r.key, operator=r.operator, values=tuple(r.values)) for r in t.matchExpressions),
        match_fields=tuple(Requirement(key=r.key, operator=r.operator, values=tuple(r.values)) for r in t.matchFields),
    )


def _spread(c: TopologySpreadConstraint, labels: Mapping[str, str]) -> SpreadConstraint:
    """One constraint, its matchLabelKeys folded into the selector as kube-scheduler does: the
    incoming pod's values of those keys (keys it lacks are skipped; a nil selector stays nothing)."""
    try:
        selector = from_label_selector(c.labelSelector)
    except SelectorError:  # refused on create; a stored one matches nothing rather than everything
        selector = Selector.none()
    extra = tuple(LabelRequirement(k, "=", (labels[k],)) for k in c.matchLabelKeys if k in labels)
    if extra and not selector.nothing:
        selector = Selector(selector.requirements + extra)
    return SpreadConstraint(
        max_skew=c.maxSkew,
        topology_key=c.topologyKey,
        hard=c.whenUnsatisfiable == "DoNotSchedule",
        selector=selector,
        min_domains=c.minDomains or 1,
        honor_affinity=c.nodeAffinityPolicy != "Ignore",
        honor_taints=c.nodeTaintsPolicy == "Honor",
    )


def pod_request(pod: Pod, key: str, volume_terms: tuple[Term, ...] | None = None) -> PodRequest:
    """``volume_terms``: node terms the pod's volumes require, ANDed with its own node affinity."""
    cpu, mem = pod_requests(pod)
    spec = pod.spec
    required = None
    preferred: tuple[PreferredTerm, ...] = ()
    na = spec.affinity.nodeAffinity if spec.affinity is not None else None
    if na is not None:
        if na.requiredDuringSchedulingIgnoredDuringExecution is not None:
            required = tuple(_term(t) for t in na.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms)
        preferred = tuple(
            PreferredTerm(weight=p.weight, term=_term(p.preference)) for p in na.preferredDuringSchedulingIgnoredDuringExecution
        )
    if volume_terms is not None:
        required = _and_terms(required, volume_terms)
    ports = tuple(
        HostPort(port=p.hostPort, protocol=p.protocol, host_ip=p.hostIP or "0.0.0.0")
        for c in spec.containers
        for p in c.ports
        if p.hostPort
    )
    owner = next((r.uid for r in pod.metadata.ownerReferences if r.controller), "")
    return PodRequest(
        key=key,
        cpu=cpu,
        memory=mem,
        node_selector=tuple(sorted(spec.nodeSelector.items())),
        required=required,
        preferred=preferred,
        tolerations=tuple(Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect) for t in spec.tolerations),
        host_ports=ports,
        owner_uid=owner,
        namespace=pod.metadata.namespace or "default",
        labels=tuple(sorted(pod.metadata.labels.items())),
        spread=tuple(_spread(c, pod.metadata.labels) for c in spec.topologySpreadConstraints),
    )


def wants_scheduling(pod: Pod, scheduler_name: str = DEFAULT_SCHEDULER) -> bool:
    """Pending, unbound, not gated (``schedulingGates``), not being deleted, and addressed to
    this scheduler. A gated pod is not queued; the update that removes its last gate comes
    through the pod watch like any change and queues it."""
    return (
        not pod.spec.nodeName
        and not pod.spec.schedulingGates
        and (pod.spec.schedulerName or DEFAULT_SCHEDULER) == scheduler_name
        and pod.metadata.deletionTimestamp is None
        and pod.status.phase not in ("Succeeded", "Failed")
    )


def occupies_node(pod: Pod) -> bool:
    """A bound pod counts against its node until it ends."""
    return bool(pod.spec.nodeName) and pod.status.phase not in ("Succeeded", "Failed")


def node_info(node: Node) -> NodeInfo:
    res = node.status.allocatable or node.status.capacity
    ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    return NodeInfo(
        name=node.metadata.name,
        cpu=millis(res["cpu"]) if "cpu" in res else 0,
        memory=size(res["memory"]) if "memory" in res else 0,
        pods=int(size(res["pods"])) if "pods" in res else DEFAULT_MAX_PODS,
        labels=tuple(sorted(node.metadata.labels.items())),
        taints=tuple(Taint(key=t.key, value=t.value, effect=t.effect) for t in node.spec.taints),
        ready=ready,
        unschedulable=node.spec.unschedulable,
    )


# -- volumes: claims bound to volumes pinned to nodes ------------------------------------------

UNBOUND_IMMEDIATE = "pod has unbound immediate PersistentVolumeClaims"


def _and_terms(a: tuple[Term, ...] | None, b: tuple[Term, ...]) -> tuple[Term, ...]:
    """Both node selectors at once: every pair of terms merged (terms are ORed, their parts ANDed)."""
    if a is None:
        return b
    return tuple(
        Term(match_expressions=x.match_expressions + y.match_expressions, match_fields=x.match_fields + y.match_fields)
        for x in a
        for y in b
    )


def volume_constraints(
    pod: Pod, claims: Mapping[str, Any], volumes: Mapping[str, Any], classes: Mapping[str, Any]
) -> tuple[tuple[Term, ...] | None, str]:
    """(required node terms from the volumes the pod's claims are bound to, why the pod cannot be
    scheduled yet or ""). ``claims`` are keyed ``<namespace>/<name>``, volumes and classes by name.

    A claim bound to a volume with node affinity pins the pod to those nodes. An unbound claim
    blocks the pod unless its class binds WaitForFirstConsumer (the binder then provisions on
    the node chosen here)."""
    required: tuple[Term, ...] | None = None
    ns = pod.metadata.namespace or "default"
    for v in pod.spec.volumes:
        if v.persistentVolumeClaim is None:
            continue
        name = v.persistentVolumeClaim.claimName
        claim = claims.get(f"{ns}/{name}")
        if claim is None:
            return None, f'persistentvolumeclaim "{name}" not found'
        if claim.metadata.deletionTimestamp is not None:
            return None, f'persistentvolumeclaim "{name}" is being deleted'
        if not claim.spec.volumeName or claim.status.phase != "Bound":
            cls = classes.get(claim.spec.storageClassName or "")
            if cls is not None and cls.volumeBindingMode == "WaitForFirstConsumer":
                continue
            return None, UNBOUND_IMMEDIATE
        pv = volumes.get(claim.spec.volumeName)
        if pv is None:
            return None, f'persistentvolume "{claim.spec.volumeName}" not found'
        affinity = pv.spec.nodeAffinity
        if affinity is not None and affinity.required is not None:
            required = _and_terms(required, tuple(_term(t) for t in affinity.required.nodeSelectorTerms))
    return required, ""


def wait_for_first_consumer_claims(
    pod: Pod, claims: Mapping[str, Any], classes: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """(namespace, name) of the pod's unbound WaitForFirstConsumer claims without a selected node."""
    ns = pod.metadata.namespace or "default"
    out = []
    for v in pod.spec.volumes:
        if v.persistentVolumeClaim is None:
            continue
        claim = claims.get(f"{ns}/{v.persistentVolumeClaim.claimName}")
        if claim is None or claim.spec.volumeName or SELECTED_NODE in claim.metadata.annotations:
            continue
        cls = classes.get(claim.spec.storageClassName or "")
        if cls is not None and cls.volumeBindingMode == "WaitForFirstConsumer":
            out.append((ns, claim.metadata.name))
    return out


SELECTED_NODE = "volume.kubernetes.io/selected-node"


# -- preemption: pods, budgets and the preemptor as ``preemption`` sees them --------------------

PREEMPTION_REASON = "PreemptionByScheduler"  # the DisruptionTarget condition's reason on a victim


def preemptor(pod: Pod, request: PodRequest) -> Preemptor:
    return Preemptor(
        request=request,
        priority=pod.spec.priority or 0,
        policy=pod.spec.preemptionPolicy or "PreemptLowerPriority",
        nominated_node=pod.status.nominatedNodeName,
    )


def victim(pod: Pod, key: str, now: float) -> Victim:
    """A bound pod as a possible victim; ``now`` (seconds) stands for a start time not reported
    yet, as kube-scheduler takes the current time for it."""
    start = now
    if pod.status.startTime:
        try:
            start = parse_time(pod.status.startTime).timestamp()
        except ValueError:
            pass
    terminating = pod.metadata.deletionTimestamp is not None
    preempted = terminating and any(
        c.type == "DisruptionTarget" and c.status == "True" and c.reason == PREEMPTION_REASON for c in pod.status.conditions
    )
    return Victim(
        key=key,
        name=pod.metadata.name,
        namespace=pod.metadata.namespace or "default",
        uid=pod.metadata.uid or "",
        priority=pod.spec.priority or 0,
        start=start,
        labels=tuple(sorted(pod.metadata.labels.items())),
        terminating=terminating,
        preempted=preempted,
    )


def budget(pdb: PodDisruptionBudget) -> Budget:
    """A PodDisruptionBudget for preemption, which (unlike an eviction) takes a nil or empty
    selector to match no pod."""
    sel = pdb.spec.selector
    if sel is None or (not sel.matchLabels and not sel.matchExpressions):
        selector = Selector.none()
    else:
        try:
            selector = from_label_selector(sel)
        except SelectorError:
            selector = Selector.none()
    return Budget(
        namespace=pdb.metadata.namespace or "default",
        selector=selector,
        allowed=pdb.status.disruptionsAllowed,
        disrupted=frozenset(pdb.status.disruptedPods),
    )
