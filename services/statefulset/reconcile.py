"""What the StatefulSet controller should do next, as a pure function of the StatefulSet, its
pods, the claims of its namespace, its template history and the time.

Kubernetes' StatefulSet control, step by step:

- *Identity*: replica ``i`` of ``replicas`` has ordinal ``ordinals.start + i`` and is the pod
  ``<set>-<ordinal>``, labelled ``statefulset.kubernetes.io/pod-name``, ``apps.kubernetes.io/
  pod-index`` and ``controller-revision-hash`` (the revision's name), with ``spec.hostname`` its
  name and ``spec.subdomain`` the ``serviceName`` (so the headless Service's DNS answers
  ``<pod>.<service>.<ns>.svc``). Each ``volumeClaimTemplates`` entry gives it the claim
  ``<template>-<set>-<ordinal>``, mounted as the volume named after the template, created before
  the pod.
- *OrderedReady* (the default): replicas are created one at a time in ordinal order, each once
  every lower one is Running and Ready (and available for ``minReadySeconds``); nothing goes on
  while a pod terminates or is not healthy; scale-down removes the highest ordinal first, one at
  a time, once all others are healthy. *Parallel*: every missing pod is created and every
  surplus one deleted at once.
- Failed or Succeeded pods are deleted; the next pass creates them anew.
- *Updates*: RollingUpdate replaces pods of an old revision highest ordinal first, down to
  ``partition`` (ordinals below it keep, and are recreated with, the current revision), never
  leaving more than ``maxUnavailable`` (default 1) replicas unhealthy. OnDelete replaces only pods
  someone deleted.
- *Claims*: kept when pods go unless ``persistentVolumeClaimRetentionPolicy`` says Delete:
  ``whenDeleted: Delete`` gives claims an owner reference to the set (gc deletes them with it);
  ``whenScaled: Delete`` gives the claims of surplus ordinals one to their pod (gc deletes them
  once the pod is gone), and a surplus claim whose pod is gone already is deleted.
- *Status*: replicas, readyReplicas, availableReplicas, currentReplicas, updatedReplicas,
  currentRevision, updateRevision (the current template's revision), observedGeneration. Once a
  rolling update has every replica updated and ready, currentRevision becomes updateRevision.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import msgspec
from msgspec.structs import replace

from kyb import controllerref
from kyb.revisions import History, revision_template
from schemas.apps import (
    CONTROLLER_REVISION_HASH_LABEL,
    POD_INDEX_LABEL,
    STATEFULSET_POD_NAME_LABEL,
    StatefulSet,
    StatefulSetStatus,
)
from schemas.core import PersistentVolumeClaim
from schemas.helpers import owner_reference, parse_time, pod_is_available, pod_is_ready
from schemas.meta import ObjectMeta, OwnerReference
from schemas.pod import PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume
from schemas.quantity import scaled_int_or_percent
from schemas.selector import Selector, from_label_selector

HASH_LABEL = CONTROLLER_REVISION_HASH_LABEL
_ORDINAL = re.compile(r"^(.*)-([0-9]+)$")


@dataclass(frozen=True)
class Settings:
    max_creates: int = 500  # pods created by one reconcile at most (Parallel)


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    status: StatefulSetStatus
    create_claims: list[PersistentVolumeClaim] = []
    claim_owners: list[str] = []  # claims whose owner references follow the retention policy anew
    create: list[Pod] = []
    delete: list[str] = []  # pod names, in the order to delete them
    delete_claims: list[str] = []
    requeue_after: float | None = None


# --- identity ------------------------------------------------------------------------------------


def start_ordinal(sts: StatefulSet) -> int:
    return sts.spec.ordinals.start if sts.spec.ordinals is not None else 0


def ordinal_of(sts: StatefulSet, name: str) -> int | None:
    """The ordinal of pod ``name`` when it is named as a member of ``sts``, else None."""
    m = _ORDINAL.match(name)
    if m is None or m.group(1) != sts.metadata.name:
        return None
    return int(m.group(2))


def is_member(sts: StatefulSet, pod: Pod) -> bool:
    return ordinal_of(sts, pod.metadata.name) is not None


def pod_name(sts: StatefulSet, ordinal: int) -> str:
    return f"{sts.metadata.name}-{ordinal}"


def claim_name(template: str, sts: StatefulSet, ordinal: int) -> str:
    return f"{template}-{sts.metadata.name}-{ordinal}"


def claim_ordinal(sts: StatefulSet, name: str) -> int | None:
    """The ordinal of claim ``name`` when it is one of ``sts``'s, else None."""
    for t in sts.spec.volumeClaimTemplates:
        prefix = f"{t.metadata.name}-{sts.metadata.name}-"
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return int(name[len(prefix):])
    return None


def revision_of(pod: Pod) -> str:
    return pod.metadata.labels.get(HASH_LABEL, "")


def new_pod(sts: StatefulSet, template: PodTemplateSpec, ordinal: int, revision: str) -> Pod:
    """Replica ``ordinal`` from ``template``, of revision ``revision`` (Kubernetes' newStatefulSetPod)."""
    name = pod_name(sts, ordinal)
    labels = {**template.metadata.labels, STATEFULSET_POD_NAME_LABEL: name, POD_INDEX_LABEL: str(ordinal),
              HASH_LABEL: revision}
    meta = ObjectMeta(name=name, namespace=sts.metadata.namespace, labels=labels,
                      annotations=dict(template.metadata.annotations), ownerReferences=[owner_reference(sts)])
    claims = {t.metadata.name: claim_name(t.metadata.name, sts, ordinal) for t in sts.spec.volumeClaimTemplates}
    volumes = [v for v in template.spec.volumes if v.name not in claims]
    volumes += [Volume(name=t, persistentVolumeClaim=PersistentVolumeClaimVolumeSource(claimName=c))
                for t, c in claims.items()]
    spec = replace(template.spec, hostname=name, subdomain=sts.spec.serviceName, volumes=volumes)
    return Pod(metadata=meta, spec=spec)


def new_claims(sts: StatefulSet, ordinal: int) -> list[PersistentVolumeClaim]:
    """The claims of replica ``ordinal``, labelled with the template's and the selector's labels."""
    out = []
    match_labels = sts.spec.selector.matchLabels if sts.spec.selector is not None else {}
    for t in sts.spec.volumeClaimTemplates:
        meta = ObjectMeta(name=claim_name(t.metadata.name, sts, ordinal), namespace=sts.metadata.namespace,
                          labels={**t.metadata.labels, **match_labels}, annotations=dict(t.metadata.annotations))
        claim = PersistentVolumeClaim(metadata=meta, spec=t.spec)
        out.append(with_retention_owners(claim, sts, None, in_range=True) or claim)
    return out


def with_retention_owners(claim: PersistentVolumeClaim, sts: StatefulSet, pod: Pod | None, *,
                          in_range: bool) -> PersistentVolumeClaim | None:
    """``claim`` with the owner references the retention policy asks for (Kubernetes'
    updateClaimOwnerRefForSetAndPod), or None when it has them already. References to other
    owners are kept."""
    policy = sts.spec.persistentVolumeClaimRetentionPolicy
    want: list[OwnerReference] = []
    if policy.whenScaled == "Delete" and not in_range:
        if pod is not None and pod.metadata.uid:
            want.append(owner_reference(pod, controller=False))
    elif policy.whenDeleted == "Delete":
        want.append(owner_reference(sts, controller=False))
    ours = {sts.metadata.uid} | ({pod.metadata.uid} if pod is not None else set())
    kept = [r for r in claim.metadata.ownerReferences if r.uid not in ours and not _is_member_pod_ref(sts, r)]
    refs = kept + want
    if refs == claim.metadata.ownerReferences:
        return None
    return replace(claim, metadata=replace(claim.metadata, ownerReferences=refs))


def _is_member_pod_ref(sts: StatefulSet, ref: OwnerReference) -> bool:
    return ref.kind == "Pod" and ordinal_of(sts, ref.name) is not None


# --- health ---------------------------------------------------------------------------------------


def terminating(pod: Pod) -> bool:
    return pod.metadata.deletionTimestamp is not None


def running_and_ready(pod: Pod) -> bool:
    return pod.status.phase == "Running" and pod_is_ready(pod)


def healthy(pod: Pod, min_ready: int, now: dt.datetime) -> bool:
    return running_and_ready(pod) and not terminating(pod) and pod_is_available(pod, min_ready, now)


def _available_in(pod: Pod, min_ready: int, now: dt.datetime) -> float | None:
    """Seconds until a ready pod counts as available, when it is not yet."""
    if min_ready <= 0 or not running_and_ready(pod) or pod_is_available(pod, min_ready, now):
        return None
    since = next((c.lastTransitionTime for c in pod.status.conditions if c.type == "Ready"), None)
    if since is None:
        return float(min_ready)
    return max(0.1, (parse_time(since) + dt.timedelta(seconds=min_ready) - now).total_seconds())


# --- the plan ----------------------------------------------------------------------------------------


def plan(
    sts: StatefulSet,
    pods: list[Pod],
    claims: dict[str, PersistentVolumeClaim],
    hist: History,
    now: dt.datetime,
    settings: Settings = Settings(),
) -> Plan:
    """See the module docstring. ``pods`` are the set's own (controller owner = it, named as its
    members); ``claims`` the namespace's claims by name; ``hist`` the settled history."""
    spec = sts.spec
    start = start_ordinal(sts)
    count = spec.replicas
    min_ready = spec.minReadySeconds
    monotonic = spec.podManagementPolicy == "OrderedReady"
    update_rev = hist.current
    names = {r.metadata.name for r in hist.revisions}
    current_rev = sts.status.currentRevision if sts.status.currentRevision in names else update_rev
    current_template = spec.template
    if current_rev != update_rev:
        rev = next(r for r in hist.revisions if r.metadata.name == current_rev)
        current_template = revision_template(rev) or spec.template
    ru = spec.updateStrategy.rollingUpdate if spec.updateStrategy.type == "RollingUpdate" else None
    partition = ru.partition if ru is not None else 0

    replicas: list[Pod | None] = [None] * count
    condemned: list[Pod] = []
    for p in pods:
        o = ordinal_of(sts, p.metadata.name)
        if o is None:
            continue
        if start <= o < start + count:
            replicas[o - start] = p
        else:
            condemned.append(p)
    condemned.sort(key=lambda p: ordinal_of(sts, p.metadata.name) or 0)

    status = _status(sts, pods, current_rev, update_rev, now)
    if sts.metadata.deletionTimestamp is not None:
        return Plan(status=status)

    create_claims: list[PersistentVolumeClaim] = []
    claim_owners: list[str] = []
    create: list[Pod] = []
    delete: list[str] = []
    requeue: float | None = None
    blocked = False  # OrderedReady: a lower replica is not healthy yet

    def claims_ready(ordinal: int) -> bool:
        """Create the missing claims of ``ordinal``; False while one of them is being deleted."""
        ok = True
        for c in new_claims(sts, ordinal):
            have = claims.get(c.metadata.name)
            if have is None:
                create_claims.append(c)
            elif have.metadata.deletionTimestamp is not None:
                ok = False
        return ok

    for i in range(count):
        ordinal = start + i
        pod = replicas[i]
        if pod is not None and not terminating(pod) and pod.status.phase in ("Failed", "Succeeded"):
            delete.append(pod.metadata.name)  # recreated once it is gone
            blocked = blocked or monotonic
            continue
        if pod is None:
            if blocked or len(create) >= settings.max_creates:
                continue
            if not claims_ready(ordinal):
                blocked = blocked or monotonic
                continue
            old = spec.updateStrategy.type == "RollingUpdate" and i < partition and current_rev != update_rev
            template, revision = (current_template, current_rev) if old else (spec.template, update_rev)
            create.append(new_pod(sts, template, ordinal, revision))
            blocked = blocked or monotonic
            continue
        if not terminating(pod):
            claims_ready(ordinal)  # a claim deleted under a running pod is made again
        if (wait := _available_in(pod, min_ready, now)) is not None:
            requeue = wait if requeue is None else min(requeue, wait)
        if not healthy(pod, min_ready, now):
            blocked = blocked or monotonic

    # claims of surplus ordinals follow whenScaled; those of replicas whenDeleted
    pods_by_ordinal = {ordinal_of(sts, p.metadata.name): p for p in pods}
    delete_claims: list[str] = []
    for name, c in sorted(claims.items()):
        o = claim_ordinal(sts, name)
        if o is None or c.metadata.deletionTimestamp is not None:
            continue
        in_range = start <= o < start + count
        pod = pods_by_ordinal.get(o)
        if with_retention_owners(c, sts, pod, in_range=in_range) is not None:
            claim_owners.append(name)
        if (not in_range and pod is None and spec.persistentVolumeClaimRetentionPolicy.whenScaled == "Delete"
                and not any(r.uid == sts.metadata.uid for r in c.metadata.ownerReferences if r.controller)):
            delete_claims.append(name)

    # scale down: highest ordinal first; OrderedReady one at a time once everything is healthy.
    # Scaling comes before updates: OrderedReady updates wait until no surplus pod is left.
    if not (monotonic and (blocked or create)):
        first_unhealthy = next((p for p in [*(r for r in replicas if r is not None), *condemned]
                                if not healthy(p, min_ready, now)), None)
        for p in reversed(condemned):
            if terminating(p):
                if monotonic:
                    break
                continue
            if monotonic and not running_and_ready(p) and p is not first_unhealthy:
                break
            delete.append(p.metadata.name)
            if monotonic:
                break
        if ru is not None and not (monotonic and condemned):
            delete += _rolling_update(replicas, partition, ru.maxUnavailable, update_rev, min_ready, now)
    return Plan(status=status, create_claims=create_claims, claim_owners=claim_owners, create=create,
                delete=list(dict.fromkeys(delete)), delete_claims=delete_claims, requeue_after=requeue)


def _rolling_update(replicas: list[Pod | None], partition: int, max_unavailable: int | str | None,
                    update_rev: str, min_ready: int, now: dt.datetime) -> list[str]:
    """Pods of an old revision to delete now: highest ordinal first, down to ``partition``,
    while fewer than ``maxUnavailable`` replicas are unhealthy."""
    budget = max(1, scaled_int_or_percent(max_unavailable if max_unavailable is not None else 1,
                                          len(replicas), round_up=True))
    unavailable = sum(1 for p in replicas if p is None or not healthy(p, min_ready, now))
    out: list[str] = []
    for i in range(len(replicas) - 1, partition - 1, -1):
        if unavailable + len(out) >= budget:
            break
        p = replicas[i]
        if p is not None and revision_of(p) != update_rev and not terminating(p):
            out.append(p.metadata.name)
    return out


def _status(sts: StatefulSet, pods: list[Pod], current_rev: str, update_rev: str, now: dt.datetime) -> StatefulSetStatus:
    replicas = ready = available = current = updated = 0
    for p in pods:
        replicas += 1
        if running_and_ready(p):
            ready += 1
            if pod_is_available(p, sts.spec.minReadySeconds, now):
                available += 1
        if not terminating(p):
            current += revision_of(p) == current_rev
            updated += revision_of(p) == update_rev
    status = replace(sts.status, observedGeneration=sts.metadata.generation, replicas=replicas, readyReplicas=ready,
                     availableReplicas=available, currentReplicas=current, updatedReplicas=updated,
                     currentRevision=current_rev, updateRevision=update_rev)
    if sts.spec.updateStrategy.type == "RollingUpdate" and updated == replicas and ready == replicas:
        status = replace(status, currentRevision=update_rev, currentReplicas=updated)
    return status


# --- ownership -------------------------------------------------------------------------------------


def controller(sts: StatefulSet) -> controllerref.Controller:
    selector = from_label_selector(sts.spec.selector) if sts.spec.selector is not None else Selector.none()
    return controllerref.Controller.of(sts, selector, owner_reference(sts))


def claim_pods(sts: StatefulSet, pods: list[Pod]) -> controllerref.Claims[Pod]:
    """ControllerRefManager's claim: the set adopts orphans its selector matches that are named
    as its members, and releases pods it controls whose labels stop matching."""
    return controllerref.claim(controller(sts), pods, adoptable=lambda p: is_member(sts, p))
