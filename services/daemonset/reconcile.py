"""What the DaemonSet controller should do next, as a pure function of the DaemonSet, the
nodes, the DaemonSet's pods and the time.

A node is *eligible* when the pod template's nodeSelector and required node affinity match it
and the pod (with the tolerations every daemon pod gets) tolerates its NoSchedule/NoExecute
taints. Each eligible node should run exactly one pod; pods on nodes that are gone or no
longer eligible are deleted. New pods are pinned with a required node affinity term
``matchFields metadata.name In [node]`` and bound by the default scheduler, as Kubernetes does.

Pods of the current template carry ``controller-revision-hash`` (a hash of the template) and
``pod-template-generation``. RollingUpdate replaces old pods without ever leaving more than
maxUnavailable eligible nodes without an available pod (maxSurge > 0: the new pod starts next
to the old one, which goes once the new one is available); OnDelete replaces only pods that
someone deleted.

The DaemonSet's history is kept as Kubernetes keeps it: one ControllerRevision per distinct
template, named ``<ds>-<hash>``, controlled by the DaemonSet, holding ``{"spec": {"template":
...}}``. The current one has the highest ``revision`` (a template that comes back has its old
revision renumbered, not copied); old revisions beyond ``revisionHistoryLimit`` go, oldest
first, unless a live pod still runs them. :func:`history` says what to do, before
:func:`plan` places pods with the current revision's hash.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import msgspec
from msgspec.structs import replace

from kyb import revisions
from schemas import tolerations
from schemas.apps import ControllerRevision, DaemonSet, DaemonSetStatus
from schemas.core import Node
from schemas.helpers import owner_reference, pod_is_available, pod_is_ready
from schemas.meta import ObjectMeta
from schemas.pod import (
    Affinity,
    NodeAffinity,
    NodeSelector,
    NodeSelectorRequirement,
    NodeSelectorTerm,
    Pod,
    Toleration,
)
from schemas.quantity import scaled_int_or_percent

HASH_LABEL = revisions.HASH_LABEL
GENERATION_LABEL = "pod-template-generation"

# The tolerations Kubernetes adds to every daemon pod (daemon/util.AddOrUpdateDaemonPodTolerations).
DAEMON_TOLERATIONS = (
    Toleration(key="node.kubernetes.io/not-ready", operator="Exists", effect="NoExecute"),
    Toleration(key="node.kubernetes.io/unreachable", operator="Exists", effect="NoExecute"),
    Toleration(key="node.kubernetes.io/disk-pressure", operator="Exists", effect="NoSchedule"),
    Toleration(key="node.kubernetes.io/memory-pressure", operator="Exists", effect="NoSchedule"),
    Toleration(key="node.kubernetes.io/pid-pressure", operator="Exists", effect="NoSchedule"),
    Toleration(key="node.kubernetes.io/unschedulable", operator="Exists", effect="NoSchedule"),
)
HOST_NETWORK_TOLERATION = Toleration(key="node.kubernetes.io/network-unavailable", operator="Exists", effect="NoSchedule")


@dataclass(frozen=True)
class Settings:
    max_creates: int = 500  # pods created by one reconcile at most


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    status: DaemonSetStatus
    create: list[Pod] = []  # each pinned to one node through node affinity
    delete: list[str] = []  # pod names
    requeue_after: float | None = None


# --- template identity ---------------------------------------------------------------------


def template_hash(ds: DaemonSet) -> str:
    """A stable short hash of the pod template (what ``controller-revision-hash`` holds)."""
    return revisions.template_hash(ds.spec.template, ds.status.collisionCount)


def is_updated(pod: Pod, ds: DaemonSet, hash_: str) -> bool:
    labels = pod.metadata.labels
    if HASH_LABEL in labels:
        return labels[HASH_LABEL] == hash_
    return labels.get(GENERATION_LABEL) == str(ds.metadata.generation or 1)


# --- history: ControllerRevisions ----------------------------------------------------------


History = revisions.History
revision_template = revisions.revision_template


def matches(rev: ControllerRevision, ds: DaemonSet) -> bool:
    """True when ``rev`` restores exactly the DaemonSet's current template."""
    return revision_template(rev) == ds.spec.template


def history(ds: DaemonSet, revs: list[ControllerRevision], pods: list[Pod]) -> History:
    """Kubernetes' constructHistory and cleanupHistory (kyb.revisions). ``revs`` are the
    DaemonSet's own (controller owner = it); ``pods`` its pods, whose hash labels keep old
    revisions alive."""
    live = {p.metadata.labels.get(HASH_LABEL) for p in pods if p.metadata.deletionTimestamp is None}
    in_use = {r.metadata.name for r in revs if r.metadata.labels.get(HASH_LABEL) in live}
    return revisions.history(ds, ds.spec.template, ds.status.collisionCount, ds.spec.revisionHistoryLimit,
                             revs, in_use)


# --- eligibility ---------------------------------------------------------------------------


def daemon_tolerations(ds: DaemonSet) -> list[Toleration]:
    out = list(ds.spec.template.spec.tolerations)
    extra = [*DAEMON_TOLERATIONS, *((HOST_NETWORK_TOLERATION,) if ds.spec.template.spec.hostNetwork else ())]
    for t in extra:
        if not any(o.key == t.key and o.effect == t.effect for o in out):
            out.append(t)
    return out


def _requirement_matches(r: NodeSelectorRequirement, value: str | None) -> bool:
    op = r.operator
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op == "In":
        return value is not None and value in r.values
    if op == "NotIn":
        return value is None or value not in r.values
    if value is None or len(r.values) != 1:
        return False
    try:
        return int(value) > int(r.values[0]) if op == "Gt" else int(value) < int(r.values[0])
    except ValueError:
        return False


def _term_matches(term: NodeSelectorTerm, node: Node) -> bool:
    if not term.matchExpressions and not term.matchFields:
        return False
    labels = node.metadata.labels
    fields = {"metadata.name": node.metadata.name}
    return all(_requirement_matches(r, labels.get(r.key)) for r in term.matchExpressions) and all(
        _requirement_matches(r, fields.get(r.key)) for r in term.matchFields
    )


def should_run(ds: DaemonSet, node: Node) -> bool:
    """True when a daemon pod belongs on ``node`` (selector, affinity, taints)."""
    spec = ds.spec.template.spec
    labels = node.metadata.labels
    if any(labels.get(k) != v for k, v in spec.nodeSelector.items()):
        return False
    na = spec.affinity.nodeAffinity if spec.affinity is not None else None
    required = na.requiredDuringSchedulingIgnoredDuringExecution if na is not None else None
    if required is not None and not any(_term_matches(t, node) for t in required.nodeSelectorTerms):
        return False
    tols = daemon_tolerations(ds)
    return all(tolerations.tolerated(tols, t) for t in node.spec.taints if t.effect in ("NoSchedule", "NoExecute"))


def pinned_node(pod: Pod) -> str | None:
    """The node a daemon pod is for: its nodeName, else its ``metadata.name In [node]`` term."""
    if pod.spec.nodeName:
        return pod.spec.nodeName
    aff = pod.spec.affinity
    req = aff.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution if aff and aff.nodeAffinity else None
    for term in req.nodeSelectorTerms if req is not None else []:
        for r in term.matchFields:
            if r.key == "metadata.name" and r.operator == "In" and len(r.values) == 1:
                return r.values[0]
    return None


def new_pod(ds: DaemonSet, node: str, hash_: str) -> Pod:
    """A pod from the template, pinned to ``node`` (Kubernetes' ReplaceDaemonSetPodNodeNameNodeAffinity)."""
    tmpl = ds.spec.template
    spec = tmpl.spec
    pin = NodeSelectorRequirement(key="metadata.name", operator="In", values=[node])
    affinity = spec.affinity or Affinity()
    na = affinity.nodeAffinity or NodeAffinity()
    req = na.requiredDuringSchedulingIgnoredDuringExecution
    if req is None or not req.nodeSelectorTerms:
        terms = [NodeSelectorTerm(matchFields=[pin])]
    else:
        terms = [replace(t, matchFields=[pin]) for t in req.nodeSelectorTerms]
    na = replace(na, requiredDuringSchedulingIgnoredDuringExecution=NodeSelector(nodeSelectorTerms=terms))
    labels = {**tmpl.metadata.labels, HASH_LABEL: hash_, GENERATION_LABEL: str(ds.metadata.generation or 1)}
    meta = ObjectMeta(
        generateName=f"{ds.metadata.name}-",
        namespace=ds.metadata.namespace,
        labels=labels,
        annotations=dict(tmpl.metadata.annotations),
        ownerReferences=[owner_reference(ds)],
    )
    spec = replace(spec, affinity=replace(affinity, nodeAffinity=na), tolerations=daemon_tolerations(ds))
    return Pod(metadata=meta, spec=spec)


# --- the plan --------------------------------------------------------------------------------


def _oldest_first(pod: Pod) -> tuple[str, str]:
    return (pod.metadata.creationTimestamp or "", pod.metadata.name)


def plan(
    ds: DaemonSet,
    nodes: list[Node],
    pods: list[Pod],
    now: dt.datetime,
    settings: Settings = Settings(),
    *,
    current_hash: str | None = None,
) -> Plan:
    """See the module docstring. ``pods`` are the DaemonSet's own pods (controller owner = it);
    ``current_hash`` is the current revision's (:attr:`History.current_hash`), by default the
    template's own hash."""
    hash_ = current_hash or template_hash(ds)
    min_ready = ds.spec.minReadySeconds
    strategy = ds.spec.updateStrategy
    node_names = {n.metadata.name for n in nodes}
    eligible = [n.metadata.name for n in sorted(nodes, key=lambda n: n.metadata.name) if should_run(ds, n)]
    eligible_set = set(eligible)

    per_node: dict[str, list[Pod]] = {}
    delete: list[str] = []
    for p in pods:
        node = pinned_node(p)
        if node is None:
            delete.append(p.metadata.name)  # not ours to place: Kubernetes deletes it too
            continue
        per_node.setdefault(node, []).append(p)

    create_on: list[str] = []
    requeue: float | None = None
    unavailable_nodes = 0
    candidates: list[tuple[str, Pod]] = []  # (node, old available pod)
    old_unavailable: list[Pod] = []
    surge_waiting: list[tuple[str, Pod]] = []  # (node, old pod) where a new pod runs beside it

    for node in sorted(set(per_node) | eligible_set):
        node_pods = sorted(per_node.get(node, []), key=_oldest_first)
        live = [p for p in node_pods if p.metadata.deletionTimestamp is None]
        if node not in eligible_set or node not in node_names:
            delete += [p.metadata.name for p in live]
            continue
        failed = [p for p in live if p.status.phase == "Failed"]
        delete += [p.metadata.name for p in failed]
        live = [p for p in live if p.status.phase != "Failed"]
        if len(node_pods) > len(live) and not live:
            unavailable_nodes += 1  # wait until the terminating/failed pod is gone
            continue
        if not live:
            create_on.append(node)
            unavailable_nodes += 1
            continue
        new = [p for p in live if is_updated(p, ds, hash_)]
        old = [p for p in live if not is_updated(p, ds, hash_)]
        # more than one pod here: keep one (an updated one when there is one), unless surging
        if len(new) > 1:
            delete += [p.metadata.name for p in new[1:]]
            new = new[:1]
        if len(old) > 1:
            delete += [p.metadata.name for p in old[1:]]
            old = old[:1]
        if new and old:
            if pod_is_available(new[0], min_ready, now):
                delete.append(old[0].metadata.name)
            else:
                surge_waiting.append((node, old[0]))
                unavailable_nodes += 0 if pod_is_available(old[0], min_ready, now) else 1
            continue
        pod = (new or old)[0]
        available = pod_is_available(pod, min_ready, now)
        if not available:
            unavailable_nodes += 1
            if pod_is_ready(pod) and min_ready > 0:
                requeue = float(min_ready)
        if old and available:
            candidates.append((node, pod))
        elif old:
            old_unavailable.append(pod)

    if strategy.type == "RollingUpdate":
        ru = strategy.rollingUpdate
        desired = len(eligible)
        max_surge = scaled_int_or_percent(ru.maxSurge, desired, round_up=True) if ru else 0
        max_unavailable = scaled_int_or_percent(ru.maxUnavailable, desired, round_up=True) if ru else 1
        if max_surge == 0 and max_unavailable == 0:
            max_unavailable = 1
        # old pods that are not available are replaced at once: no loss of availability
        delete += [p.metadata.name for p in old_unavailable]
        if max_surge == 0:
            budget = max(0, max_unavailable - unavailable_nodes)
            delete += [p.metadata.name for _, p in candidates[:budget]]
        else:
            budget = max(0, max_surge - len(surge_waiting))
            create_on += [node for node, _ in candidates[:budget]]

    status = _status(ds, eligible_set, node_names, per_node, hash_, now)
    creates = [new_pod(ds, n, hash_) for n in create_on[: settings.max_creates]]
    return Plan(status=status, create=creates, delete=sorted(set(delete)), requeue_after=requeue)


def _status(
    ds: DaemonSet,
    eligible: set[str],
    node_names: set[str],
    per_node: dict[str, list[Pod]],
    hash_: str,
    now: dt.datetime,
) -> DaemonSetStatus:
    current = misscheduled = ready = available = updated = 0
    for node, pods in per_node.items():
        live = [p for p in pods if p.metadata.deletionTimestamp is None]
        if not live:
            continue
        if node not in eligible or node not in node_names:
            misscheduled += 1
            continue
        current += 1
        if any(is_updated(p, ds, hash_) for p in live):
            updated += 1
        if any(pod_is_ready(p) for p in live):
            ready += 1
        if any(pod_is_available(p, ds.spec.minReadySeconds, now) for p in live):
            available += 1
    return replace(
        ds.status,
        desiredNumberScheduled=len(eligible),
        currentNumberScheduled=current,
        numberMisscheduled=misscheduled,
        numberReady=ready,
        numberAvailable=available,
        updatedNumberScheduled=updated,
        numberUnavailable=len(eligible) - available,
        observedGeneration=ds.metadata.generation,
    )
