"""The Deployment controller's decisions as pure functions: which ReplicaSet is new, how far
each ReplicaSet may be scaled this step, which old ones are history to delete, and the status
the Deployment reports; and, before any of that, which ReplicaSets of the namespace are the
Deployment's to manage.

It follows Kubernetes' deployment controller (sync.go, rolling.go, recreate.go, progress.go):
one ReplicaSet per pod-template hash; a rolling update scales the new one up while the total
stays within ``replicas + maxSurge`` and the old ones down while at least
``replicas - maxUnavailable`` pods stay available; Recreate scales every old ReplicaSet to zero
and waits until none of their pods runs before scaling the new one up; a change of
``spec.replicas`` in the middle of a rollout is spread over the active ReplicaSets in proportion
to their sizes. Availability is counted from the pods themselves, so a step never trusts a
ReplicaSet status that has not caught up yet. ``claim`` is Kubernetes' ControllerRefManager
for ReplicaSets: selected orphans are adopted, owned ones that are no longer selected are
released, those of other controllers are left alone.

``claim(deployment, replica_sets) -> Claims`` and ``reconcile(deployment, replica_sets, pods,
now) -> Plan`` never write anything: the service applies the claims and the plan (creates, CAS
updates at the revision read, deletes) and calls again.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from collections.abc import Collection, Iterable, Sequence

import msgspec
from msgspec.structs import replace

from kyb import controllerref
from kyb.render import to_dict
from schemas import apps
from schemas.apps import Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec
from schemas.helpers import (
    format_time,
    owner_reference,
    parse_time,
)
from schemas.meta import Condition, ConditionStatus, LabelSelector, ObjectMeta
from schemas.names import safe_encode
from schemas.pod import Pod, PodTemplateSpec
from schemas.quantity import scaled_int_or_percent
from schemas.selector import Selector, from_label_selector

HASH_LABEL = apps.POD_TEMPLATE_HASH_LABEL
REVISION = apps.REVISION_ANNOTATION
REVISION_HISTORY = apps.REVISION_HISTORY_ANNOTATION
DESIRED_REPLICAS = apps.DESIRED_REPLICAS_ANNOTATION
MAX_REPLICAS = apps.MAX_REPLICAS_ANNOTATION
CHANGE_CAUSE = apps.CHANGE_CAUSE_ANNOTATION
_NOT_COPIED = apps.DEPLOYMENT_ONLY_ANNOTATIONS

AVAILABLE, PROGRESSING = "Available", "Progressing"
MIN_AVAILABLE, MIN_UNAVAILABLE = "MinimumReplicasAvailable", "MinimumReplicasUnavailable"
NEW_RS_CREATED, FOUND_NEW_RS = "NewReplicaSetCreated", "FoundNewReplicaSet"
RS_UPDATED, NEW_RS_AVAILABLE = "ReplicaSetUpdated", "NewReplicaSetAvailable"
TIMED_OUT, PAUSED, RESUMED = "ProgressDeadlineExceeded", "DeploymentPaused", "DeploymentResumed"

class Action(msgspec.Struct, frozen=True, kw_only=True):
    """An Event to record about the Deployment."""

    reason: str
    message: str
    type: str = "Normal"


class PodCount(msgspec.Struct, kw_only=True):
    """What one ReplicaSet's pods are doing, counted from the pods."""

    replicas: int = 0      # active: neither terminating nor finished
    ready: int = 0
    available: int = 0
    running: int = 0       # not finished, terminating ones included (Recreate waits for these)
    next_available: _dt.datetime | None = None  # earliest time a ready pod turns available


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """What to write. RS updates and the Deployment carry the resourceVersion they were read at."""

    create: ReplicaSet | None = None
    updates: list[ReplicaSet] = []
    deletes: list[ReplicaSet] = []
    deployment: Deployment | None = None
    events: list[Action] = []
    requeue_after: float | None = None


# -- small questions ------------------------------------------------------------------------------


def template_hash(template: PodTemplateSpec, collision_count: int | None = None) -> str:
    """A stable, label-safe hash of a pod template (and the collision count, if any)."""
    # to_dict keeps defaults and drops unset fields, so equal templates always hash alike.
    h = hashlib.blake2s(msgspec.json.encode(to_dict(template), order="sorted"), digest_size=4)
    if collision_count:
        h.update(collision_count.to_bytes(4, "little"))
    return safe_encode(str(int.from_bytes(h.digest(), "little")))


def without_hash(template: PodTemplateSpec) -> PodTemplateSpec:
    labels = {k: v for k, v in template.metadata.labels.items() if k != HASH_LABEL}
    return replace(template, metadata=replace(template.metadata, labels=labels))


def same_template(a: PodTemplateSpec, b: PodTemplateSpec) -> bool:
    return without_hash(a) == without_hash(b)


def surge_and_unavailable(d: Deployment) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) resolved against spec.replicas: surge rounds up, unavailable
    down; when both come out 0, one pod may be unavailable (Kubernetes' ResolveFenceposts)."""
    if d.spec.strategy.type != "RollingUpdate":
        return 0, 0
    ru = d.spec.strategy.rollingUpdate
    surge_v = ru.maxSurge if ru is not None else "25%"
    unav_v = ru.maxUnavailable if ru is not None else "25%"
    surge = scaled_int_or_percent(surge_v, d.spec.replicas, True)
    unavailable = scaled_int_or_percent(unav_v, d.spec.replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_unavailable(d: Deployment) -> int:
    if d.spec.strategy.type != "RollingUpdate" or d.spec.replicas == 0:
        return 0
    return min(surge_and_unavailable(d)[1], d.spec.replicas)


def revision_of(obj: ReplicaSet | Deployment) -> int:
    try:
        return int(obj.metadata.annotations.get(REVISION, "0"))
    except ValueError:
        return 0


def _int_annotation(rs: ReplicaSet, key: str) -> int | None:
    try:
        return int(rs.metadata.annotations[key])
    except (KeyError, ValueError):
        return None


def _created(rs: ReplicaSet) -> tuple[str, str]:
    return (rs.metadata.creationTimestamp or "", rs.metadata.name)


def count_pods(pods: Iterable[Pod], min_ready_seconds: int, now: _dt.datetime) -> dict[str, PodCount]:
    """Per owning ReplicaSet uid: active, ready, available and still-running pods."""
    out: dict[str, PodCount] = {}
    for pod in pods:
        owner = next((r.uid for r in pod.metadata.ownerReferences if r.controller), None)
        if owner is None:
            continue
        c = out.setdefault(owner, PodCount())
        if pod.status.phase in ("Succeeded", "Failed"):
            continue
        c.running += 1
        if pod.metadata.deletionTimestamp:
            continue
        c.replicas += 1
        ready = next((x for x in pod.status.conditions if x.type == "Ready" and x.status == "True"), None)
        if ready is None:
            continue
        c.ready += 1
        if min_ready_seconds <= 0:
            c.available += 1
            continue
        if ready.lastTransitionTime is None:
            continue
        at = parse_time(ready.lastTransitionTime) + _dt.timedelta(seconds=min_ready_seconds)
        if at <= now:
            c.available += 1
        elif c.next_available is None or at < c.next_available:
            c.next_available = at
    return out


# -- the ReplicaSets: which is new, and building it -------------------------------------------


def find_new(d: Deployment, rss: Sequence[ReplicaSet]) -> ReplicaSet | None:
    """The oldest ReplicaSet whose template equals the Deployment's (ignoring the hash label)."""
    for rs in sorted(rss, key=_created):
        if same_template(rs.spec.template, d.spec.template):
            return rs
    return None


def new_replica_set(d: Deployment, name: str, hash_: str, replicas: int, revision: int) -> ReplicaSet:
    surge, _ = surge_and_unavailable(d)
    template = d.spec.template
    labels = {**template.metadata.labels, HASH_LABEL: hash_}
    template = replace(template, metadata=replace(template.metadata, labels=labels))
    selector = d.spec.selector or LabelSelector(matchLabels=dict(d.spec.template.metadata.labels))
    selector = replace(selector, matchLabels={**selector.matchLabels, HASH_LABEL: hash_})
    annotations = {k: v for k, v in d.metadata.annotations.items() if k not in _NOT_COPIED}
    annotations.update({
        REVISION: str(revision),
        DESIRED_REPLICAS: str(d.spec.replicas),
        MAX_REPLICAS: str(d.spec.replicas + surge),
    })
    meta = ObjectMeta(
        name=name,
        namespace=d.metadata.namespace,
        labels=labels,
        annotations=annotations,
        ownerReferences=[owner_reference(d)],
    )
    spec = ReplicaSetSpec(replicas=replicas, minReadySeconds=d.spec.minReadySeconds, selector=selector,
                          template=template)
    return ReplicaSet(metadata=meta, spec=spec)


def scaled(rs: ReplicaSet, d: Deployment, replicas: int) -> ReplicaSet:
    """``rs`` at ``replicas`` with the desired/max-replicas annotations of ``d``."""
    surge, _ = surge_and_unavailable(d)
    annotations = {
        **rs.metadata.annotations,
        DESIRED_REPLICAS: str(d.spec.replicas),
        MAX_REPLICAS: str(d.spec.replicas + surge),
    }
    return replace(rs, metadata=replace(rs.metadata, annotations=annotations),
                   spec=replace(rs.spec, replicas=max(0, replicas)))


class _Work:
    """The ReplicaSets as this step leaves them, and what changed."""

    def __init__(self, rss: Sequence[ReplicaSet]) -> None:
        self.rs: dict[str, ReplicaSet] = {r.metadata.name: r for r in rss}
        self.changed: dict[str, ReplicaSet] = {}
        self.events: list[Action] = []

    def set(self, rs: ReplicaSet) -> None:
        if rs != self.rs[rs.metadata.name]:
            self.rs[rs.metadata.name] = rs
            self.changed[rs.metadata.name] = rs

    def scale(self, name: str, d: Deployment, replicas: int) -> bool:
        cur = self.rs[name]
        old = cur.spec.replicas
        self.set(scaled(cur, d, replicas))
        if old != replicas:
            verb = "up" if replicas > old else "down"
            self.events.append(Action(reason="ScalingReplicaSet",
                                      message=f"Scaled {verb} replica set {name} from {old} to {replicas}"))
            return True
        return False


# -- claims: which ReplicaSets are the Deployment's -----------------------------------------------


Claims = controllerref.Claims  # of ReplicaSets, as Kubernetes' ControllerRefManager.ClaimReplicaSets


def selector_of(d: Deployment) -> Selector:
    """The Deployment's selector (its template labels when it has none, as its ReplicaSets get)."""
    return from_label_selector(d.spec.selector or LabelSelector(matchLabels=dict(d.spec.template.metadata.labels)))


def controller(d: Deployment) -> controllerref.Controller:
    return controllerref.Controller.of(d, selector_of(d), owner_reference(d))


def adopted(rs: ReplicaSet, d: Deployment) -> ReplicaSet | None:
    """``rs`` with ``d`` as its controller, or None when it may not be adopted: it has a
    controller, is being deleted, lives in another namespace or is not selected, or ``d`` is
    being deleted."""
    return controllerref.adopted(rs, controller(d))


def released(rs: ReplicaSet, d: Deployment) -> ReplicaSet | None:
    """``rs`` without its controller reference to ``d``, or None when there is nothing to
    release: ``d`` does not control it, it is still selected, or ``d`` is being deleted."""
    return controllerref.released(rs, controller(d))


def claim(d: Deployment, rss: Iterable[ReplicaSet]) -> controllerref.Claims[ReplicaSet]:
    """Which of a namespace's ReplicaSets ``d`` manages, and which to adopt or release first.

    A ReplicaSet ``d`` controls stays ``d``'s while its labels match the selector and is
    released once they do not; an orphan that matches is adopted; one controlled by anyone
    else is never touched. While ``d`` is being deleted nothing is adopted or released.
    """
    return controllerref.claim(controller(d), rss)


# -- scaling ------------------------------------------------------------------------------------


def is_scaling_event(d: Deployment, rss: Iterable[ReplicaSet]) -> bool:
    for rs in rss:
        if rs.spec.replicas <= 0:
            continue
        desired = _int_annotation(rs, DESIRED_REPLICAS)
        if desired is not None and desired != d.spec.replicas:
            return True
    return False


def _is_saturated(d: Deployment, rs: ReplicaSet | None, counts: dict[str, PodCount]) -> bool:
    if rs is None:
        return False
    available = counts.get(rs.metadata.uid or "", PodCount()).available
    return (_int_annotation(rs, DESIRED_REPLICAS) == d.spec.replicas and available == d.spec.replicas
            and rs.spec.replicas == d.spec.replicas)


def proportional_sizes(d: Deployment, rss: Sequence[ReplicaSet], status_replicas: int) -> dict[str, int]:
    """New sizes of the active ReplicaSets when ``spec.replicas`` changed mid-rollout: each gets
    its share of ``replicas + maxSurge`` by its max-replicas annotation, the rest goes to the
    largest (Kubernetes' GetProportion / getReplicaSetFraction)."""
    active = [r for r in rss if r.spec.replicas > 0]
    surge, _ = surge_and_unavailable(d)
    total = sum(r.spec.replicas for r in active)
    allowed = d.spec.replicas + surge if d.spec.replicas > 0 else 0
    to_add = allowed - total
    sizes = {r.metadata.name: r.spec.replicas for r in active}
    if to_add == 0 or not active:
        return sizes
    if to_add > 0:  # largest first, newer first among equals
        active.sort(key=lambda r: (-r.spec.replicas, tuple(-ord(c) for c in _created(r)[0])))
    else:  # largest first, older first among equals
        active.sort(key=lambda r: (-r.spec.replicas, _created(r)))
    added = 0
    for rs in active:
        if added == to_add:
            break
        if d.spec.replicas == 0:
            fraction = -rs.spec.replicas
        else:
            annotated = _int_annotation(rs, MAX_REPLICAS) or status_replicas or total
            fraction = round(rs.spec.replicas * allowed / annotated) - rs.spec.replicas
        left = to_add - added
        share = min(fraction, left) if to_add > 0 else max(fraction, left)
        sizes[rs.metadata.name] += share
        added += share
    if added != to_add:
        first = active[0].metadata.name
        sizes[first] = max(0, sizes[first] + to_add - added)
    return sizes


def _scale(d: Deployment, new: ReplicaSet | None, olds: Sequence[ReplicaSet], work: _Work,
           counts: dict[str, PodCount]) -> None:
    """Kubernetes' sync.go scale(): resize without progressing a rollout."""
    everything = ([new] if new is not None else []) + list(olds)
    active = [r for r in everything if r.spec.replicas > 0]
    if len(active) == 1 or (not active and everything):
        target = active[0] if active else (new or sorted(olds, key=_created)[-1])
        if target.spec.replicas != d.spec.replicas or is_scaling_event(d, [target]):
            work.scale(target.metadata.name, d, d.spec.replicas)
        return
    if not active:
        return
    if _is_saturated(d, new, counts):
        for rs in olds:
            if rs.spec.replicas > 0:
                work.scale(rs.metadata.name, d, 0)
        return
    if d.spec.strategy.type == "RollingUpdate":
        for name, size in proportional_sizes(d, active, d.status.replicas).items():
            work.scale(name, d, size)


def _rolling_new(d: Deployment, new: ReplicaSet, work: _Work, counts: dict[str, PodCount]) -> bool:
    """Scale the new ReplicaSet up as far as maxSurge allows (or down to spec.replicas).

    An old ReplicaSet counts with its pods still active when they outnumber its spec (scaled
    down, not yet deleted), so the pods themselves stay within replicas + maxSurge too."""
    want = d.spec.replicas
    if new.spec.replicas == want:
        return False
    if new.spec.replicas > want:
        return work.scale(new.metadata.name, d, want)
    surge, _ = surge_and_unavailable(d)
    current = sum(max(r.spec.replicas, counts.get(r.metadata.uid or "", PodCount()).replicas)
                  if r.metadata.name != new.metadata.name else r.spec.replicas for r in work.rs.values())
    room = d.spec.replicas + surge - current
    if room <= 0:
        return False
    return work.scale(new.metadata.name, d, new.spec.replicas + min(room, want - new.spec.replicas))


def _rolling_old(d: Deployment, new: ReplicaSet, olds: Sequence[ReplicaSet], work: _Work,
                 counts: dict[str, PodCount]) -> bool:
    """Scale old ReplicaSets down while at least replicas - maxUnavailable pods stay available:
    first the pods that are not available anyway, then available ones, oldest ReplicaSet first."""
    olds = sorted((work.rs[r.metadata.name] for r in olds), key=_created)
    if sum(r.spec.replicas for r in olds) == 0:
        return False
    all_count = sum(r.spec.replicas for r in work.rs.values())
    min_available = d.spec.replicas - max_unavailable(d)

    def avail(rs: ReplicaSet) -> int:
        return min(counts.get(rs.metadata.uid or "", PodCount()).available, rs.spec.replicas)

    new_unavailable = max(0, new.spec.replicas - avail(new))
    budget = all_count - min_available - new_unavailable
    if budget <= 0:
        return False
    done = 0
    for rs in olds:  # unhealthy first: dropping pods that are not available costs no availability
        if done >= budget:
            break
        unhealthy = rs.spec.replicas - avail(rs)
        if rs.spec.replicas == 0 or unhealthy <= 0:
            continue
        n = min(budget - done, unhealthy)
        work.scale(rs.metadata.name, d, rs.spec.replicas - n)
        done += n
    available_total = sum(avail(r) for r in work.rs.values())
    allowed = min(available_total - min_available, budget - done)
    for rs in olds:
        if allowed <= 0:
            break
        rs = work.rs[rs.metadata.name]
        if rs.spec.replicas == 0:
            continue
        n = min(rs.spec.replicas, allowed)
        work.scale(rs.metadata.name, d, rs.spec.replicas - n)
        allowed -= n
        done += n
    return done > 0


def cleanup(d: Deployment, olds: Sequence[ReplicaSet], counts: dict[str, PodCount]) -> list[ReplicaSet]:
    """Old ReplicaSets beyond revisionHistoryLimit that have scaled to zero (oldest revision first)."""
    alive = [r for r in olds if not r.metadata.deletionTimestamp]
    extra = len(alive) - d.spec.revisionHistoryLimit
    if extra <= 0:
        return []
    out = []
    for rs in sorted(alive, key=lambda r: (revision_of(r), _created(r)))[:extra]:
        if rs.spec.replicas != 0 or counts.get(rs.metadata.uid or "", PodCount()).running:
            continue
        out.append(rs)
    return out


# -- status -------------------------------------------------------------------------------------


def _condition(status: DeploymentStatus, type_: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)


def _set_condition(conds: list[Condition], cond: Condition) -> list[Condition]:
    cur = next((c for c in conds if c.type == cond.type), None)
    if cur is not None and cur.status == cond.status and cur.reason == cond.reason:
        if cur.message == cond.message and cur.lastUpdateTime == cond.lastUpdateTime:
            return conds
        cond = replace(cond, lastTransitionTime=cur.lastTransitionTime)
    elif cur is not None and cur.status == cond.status:
        cond = replace(cond, lastTransitionTime=cur.lastTransitionTime)
    out = [c for c in conds if c.type != cond.type] + [cond]
    order = {AVAILABLE: 0, PROGRESSING: 1}
    return sorted(out, key=lambda c: order.get(c.type, 2))


def _cond(type_: str, status: ConditionStatus, reason: str, message: str, now: _dt.datetime) -> Condition:
    t = format_time(now)
    return Condition(type=type_, status=status, reason=reason, message=message,
                     lastUpdateTime=t, lastTransitionTime=t)


def calculate_status(d: Deployment, new: ReplicaSet | None, rss: Iterable[ReplicaSet],
                     counts: dict[str, PodCount], now: _dt.datetime) -> DeploymentStatus:
    rss = list(rss)
    per = [counts.get(r.metadata.uid or "", PodCount()) for r in rss]
    available = sum(c.available for c in per)
    wanted = sum(r.spec.replicas for r in rss)
    new_count = counts.get(new.metadata.uid or "", PodCount()) if new is not None and new.metadata.uid else PodCount()
    status = replace(
        d.status,
        observedGeneration=d.metadata.generation,
        replicas=sum(c.replicas for c in per),
        updatedReplicas=new_count.replicas,
        readyReplicas=sum(c.ready for c in per),
        availableReplicas=available,
        unavailableReplicas=max(0, wanted - available),
    )
    if available >= d.spec.replicas - max_unavailable(d):
        cond = _cond(AVAILABLE, "True", MIN_AVAILABLE, "Deployment has minimum availability.", now)
    else:
        cond = _cond(AVAILABLE, "False", MIN_UNAVAILABLE, "Deployment does not have minimum availability.", now)
    cur = _condition(status, AVAILABLE)
    if cur is None or cur.status != cond.status or cur.reason != cond.reason:
        status = replace(status, conditions=_set_condition(list(status.conditions), cond))
    return status


def complete(d: Deployment, s: DeploymentStatus) -> bool:
    r = d.spec.replicas
    return (s.updatedReplicas == r and s.replicas == r and s.availableReplicas == r
            and (s.observedGeneration or 0) >= (d.metadata.generation or 0))


def _progressing(old: DeploymentStatus, new: DeploymentStatus) -> bool:
    return (new.updatedReplicas > old.updatedReplicas
            or new.replicas - new.updatedReplicas < old.replicas - old.updatedReplicas
            or new.readyReplicas > old.readyReplicas
            or new.availableReplicas > old.availableReplicas)


def timed_out(d: Deployment, now: _dt.datetime) -> bool:
    cond = _condition(d.status, PROGRESSING)
    if cond is None or cond.reason == NEW_RS_AVAILABLE:
        return False
    if cond.reason == TIMED_OUT:
        return True
    if cond.reason in (PAUSED, RESUMED) or cond.lastUpdateTime is None:
        return False
    return parse_time(cond.lastUpdateTime) + _dt.timedelta(seconds=d.spec.progressDeadlineSeconds) < now


def rollout_status(d: Deployment, new: ReplicaSet | None, status: DeploymentStatus,
                   now: _dt.datetime) -> tuple[DeploymentStatus, float | None]:
    """The Progressing condition (Kubernetes' syncRolloutStatus) and when to look again for
    the deadline."""
    cur = _condition(d.status, PROGRESSING)
    if d.spec.paused or (cur is not None and cur.reason == PAUSED):
        return status, None
    done = status.replicas == status.updatedReplicas and cur is not None and cur.reason == NEW_RS_AVAILABLE
    if done:
        return status, None
    name = new.metadata.name if new is not None else ""
    conds = list(status.conditions)
    requeue = None
    if complete(d, status):
        conds = _set_condition(conds, _cond(PROGRESSING, "True", NEW_RS_AVAILABLE,
                                            f'ReplicaSet "{name}" has successfully progressed.', now))
    elif _progressing(d.status, status):
        msg = f'ReplicaSet "{name}" is progressing.' if new is not None else f'Deployment "{d.metadata.name}" is progressing.'
        conds = _set_condition(conds, _cond(PROGRESSING, "True", RS_UPDATED, msg, now))
        requeue = float(d.spec.progressDeadlineSeconds) + 1
    elif timed_out(d, now):
        conds = _set_condition(conds, _cond(PROGRESSING, "False", TIMED_OUT,
                                            f'ReplicaSet "{name}" has timed out progressing.', now))
    elif cur is not None and cur.lastUpdateTime is not None and cur.status == "True":
        left = (parse_time(cur.lastUpdateTime) + _dt.timedelta(seconds=d.spec.progressDeadlineSeconds) - now)
        requeue = max(0.0, left.total_seconds()) + 1
    return replace(status, conditions=conds), requeue


# -- the whole step -----------------------------------------------------------------------------


def _with_new_rs(d: Deployment, rss: Sequence[ReplicaSet], olds: Sequence[ReplicaSet], create: bool,
                 now: _dt.datetime, taken: Collection[str] = ()
                 ) -> tuple[ReplicaSet | None, ReplicaSet | None, Deployment, list[Action]]:
    """(existing new RS updated, RS to create, Deployment with revision/collision/condition, events)."""
    max_old = max((revision_of(r) for r in olds), default=0)
    existing = find_new(d, rss)
    events: list[Action] = []
    if existing is not None:
        rs = existing
        annotations = dict(rs.metadata.annotations)
        if revision_of(rs) <= max_old:
            annotations[REVISION] = str(max_old + 1)
        for k, v in d.metadata.annotations.items():
            if k not in _NOT_COPIED:
                annotations[k] = v
        rs = replace(rs, metadata=replace(rs.metadata, annotations=annotations),
                     spec=replace(rs.spec, minReadySeconds=d.spec.minReadySeconds))
        d = _deployment_revision(d, rs.metadata.annotations[REVISION])
        if _condition(d.status, PROGRESSING) is None:
            cond = _cond(PROGRESSING, "True", FOUND_NEW_RS, f'Found new replica set "{rs.metadata.name}"', now)
            d = replace(d, status=replace(d.status, conditions=_set_condition(list(d.status.conditions), cond)))
        return rs, None, d, events
    if not create:
        return None, None, d, events
    count = d.status.collisionCount
    hash_ = template_hash(d.spec.template, count)
    name = f"{d.metadata.name}-{hash_}"
    clash = name in taken or any(r.metadata.name == name for r in rss)
    if clash:  # a different template, or a ReplicaSet not ours, holds this name: bump and retry
        d = replace(d, status=replace(d.status, collisionCount=(count or 0) + 1))
        return None, None, d, events
    if d.spec.strategy.type == "Recreate":
        replicas = d.spec.replicas
    else:
        surge, _ = surge_and_unavailable(d)
        current = sum(r.spec.replicas for r in rss)
        replicas = max(0, min(d.spec.replicas + surge - current, d.spec.replicas))
    rs = new_replica_set(d, name, hash_, replicas, max_old + 1)
    d = _deployment_revision(d, str(max_old + 1))
    cond = _cond(PROGRESSING, "True", NEW_RS_CREATED, f'Created new replica set "{name}"', now)
    d = replace(d, status=replace(d.status, conditions=_set_condition(list(d.status.conditions), cond)))
    events.append(Action(reason="ScalingReplicaSet", message=f"Scaled up replica set {name} from 0 to {replicas}"))
    return None, rs, d, events


def _deployment_revision(d: Deployment, revision: str) -> Deployment:
    if d.metadata.annotations.get(REVISION) == revision:
        return d
    return replace(d, metadata=replace(d.metadata, annotations={**d.metadata.annotations, REVISION: revision}))


def _paused_conditions(d: Deployment, now: _dt.datetime) -> Deployment:
    cur = _condition(d.status, PROGRESSING)
    if cur is None:
        return d
    if d.spec.paused and cur.reason != PAUSED:
        cond = _cond(PROGRESSING, "Unknown", PAUSED, "Deployment is paused", now)
    elif not d.spec.paused and cur.reason == PAUSED:
        cond = _cond(PROGRESSING, "Unknown", RESUMED, "Deployment is resumed", now)
    else:
        return d
    return replace(d, status=replace(d.status, conditions=_set_condition(list(d.status.conditions), cond)))


def reconcile(d: Deployment, rss: Sequence[ReplicaSet], pods: Iterable[Pod], now: _dt.datetime,
              taken: Collection[str] = ()) -> Plan:
    """One step of the Deployment controller for ``d``, the ReplicaSets it owns (see
    :func:`claim`) and their pods. ``taken`` are names held by ReplicaSets it does not own: the
    new ReplicaSet's name must avoid them (a clash bumps ``collisionCount``)."""
    counts = count_pods(pods, d.spec.minReadySeconds, now)
    original = d
    rss = sorted(rss, key=_created)
    if d.metadata.deletionTimestamp:
        status = calculate_status(d, find_new(d, rss), rss, counts, now)
        return _finish(original, replace(d, status=status), _Work(rss), None, [], [], None)

    d = _paused_conditions(d, now)
    existing_new = find_new(d, rss)
    olds = [r for r in rss if existing_new is None or r.metadata.name != existing_new.metadata.name]
    scaling = d.spec.paused or is_scaling_event(d, rss)
    rolling = d.spec.strategy.type == "RollingUpdate"
    new, to_create, d, events = _with_new_rs(d, rss, olds, rolling and not scaling, now, taken)
    work = _Work(rss)
    if new is not None:
        work.set(new)
    if d.status.collisionCount != original.status.collisionCount:
        return _finish(original, d, work, None, events, [], 0.0)

    history: list[ReplicaSet] = []
    if scaling:
        _scale(d, new, olds, work, counts)
        if d.spec.paused:
            history = cleanup(d, olds, counts)
    elif not rolling:
        if _recreate_may_start_new(d, new, olds, work, counts):
            if new is None:
                _, to_create, d, more = _with_new_rs(d, rss, olds, True, now, taken)
                events += more
                if d.status.collisionCount != original.status.collisionCount:
                    return _finish(original, d, work, None, events, [], 0.0)
            elif work.rs[new.metadata.name].spec.replicas != d.spec.replicas:
                work.scale(new.metadata.name, d, d.spec.replicas)
            elif complete(d, calculate_status(d, new, rss, counts, now)):
                history = cleanup(d, olds, counts)
    elif new is not None or to_create is not None:
        # Scale up, then down, then up again while the budgets allow: one step does what
        # Kubernetes spreads over several syncs, with the same bounds at every point.
        target = new or to_create
        assert target is not None
        name = target.metadata.name
        work.rs[name] = work.rs.get(name, target)
        moved = False
        while _rolling_new(d, work.rs[name], work, counts) | _rolling_old(d, work.rs[name], olds, work, counts):
            moved = True
        if to_create is not None:  # the ReplicaSet to create is created at its final size
            to_create = work.changed.pop(name, to_create)
            work.rs.pop(name)
            events = [e for e in events if "from 0 to" not in e.message]
            work.events = [e for e in work.events if name not in e.message]
            events.append(Action(reason="ScalingReplicaSet",
                                 message=f"Scaled up replica set {name} from 0 to {to_create.spec.replicas}"))
        elif not moved and complete(d, calculate_status(d, new, rss, counts, now)):
            history = cleanup(d, olds, counts)

    current_new = work.rs.get(new.metadata.name) if new is not None else to_create
    status = calculate_status(d, current_new, [*work.rs.values()], counts, now)
    requeue: float | None = None
    if not scaling:
        status, requeue = rollout_status(d, current_new, status, now)
    nexts = [c.next_available for c in counts.values() if c.next_available is not None]
    if nexts:
        soon = max(0.0, (min(nexts) - now).total_seconds()) + 0.05
        requeue = soon if requeue is None else min(requeue, soon)
    return _finish(original, replace(d, status=status), work, to_create, events, history, requeue)


def _recreate_may_start_new(d: Deployment, new: ReplicaSet | None, olds: Sequence[ReplicaSet], work: _Work,
                            counts: dict[str, PodCount]) -> bool:
    """Recreate: scale every old ReplicaSet to zero; True once none of their pods runs."""
    scaled_down = False
    for rs in olds:
        if rs.spec.replicas > 0:
            scaled_down |= work.scale(rs.metadata.name, d, 0)
    if scaled_down:
        return False
    if any(counts.get(r.metadata.uid or "", PodCount()).running for r in olds):
        return False
    # The ReplicaSet controller must have acted on the scale-down (pods we have not seen yet).
    return not any(r.status.replicas > 0 or (r.status.observedGeneration or 0) < (r.metadata.generation or 0)
                   for r in olds if r.metadata.generation)


def _finish(original: Deployment, d: Deployment, work: _Work, create: ReplicaSet | None,
            events: list[Action], history: list[ReplicaSet], requeue: float | None) -> Plan:
    write = None if (d.status == original.status and d.metadata == original.metadata) else d
    return Plan(create=create, updates=list(work.changed.values()), deletes=history, deployment=write,
                events=events + work.events, requeue_after=requeue)
