"""policy/v1: PodDisruptionBudget, how many pods of a set may be down at once by voluntary
disruption (an eviction: ``kyb drain``, ``kubectl drain``, the eviction subresource).

The rules are Kubernetes' (pkg/controller/disruption and the eviction REST handler), pure:
:func:`budget_status` is what the disruption controller writes into ``status``;
:func:`eviction_verdict` is what the api decides for one eviction.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from msgspec.structs import replace

from schemas.helpers import format_time, parse_time, pod_is_ready, pod_is_terminal
from schemas.meta import Base, Condition, LabelSelector, Object
from schemas.pod import Pod
from schemas.quantity import scaled_int_or_percent
from schemas.selector import from_label_selector

# A pod the api let go stays counted as disrupted (not healthy) until the controller sees it
# deleted, or this long: Kubernetes' DeletionTimeout.
DELETION_TIMEOUT = _dt.timedelta(minutes=2)
MAX_DISRUPTED_PODS = 2000  # the eviction handler refuses past this many pending entries
REFUSED = "Cannot evict pod as it would violate the pod's disruption budget."


class PodDisruptionBudgetSpec(Base, kw_only=True, frozen=True):
    minAvailable: int | str | None = None
    maxUnavailable: int | str | None = None
    selector: LabelSelector | None = None  # policy/v1: unset or empty selects every pod of the namespace
    unhealthyPodEvictionPolicy: Literal["IfHealthyBudget", "AlwaysAllow"] | None = None


class PodDisruptionBudgetStatus(Base, kw_only=True, frozen=True):
    observedGeneration: int | None = None
    disruptedPods: dict[str, str] = {}  # pod name -> when the api allowed its eviction
    disruptionsAllowed: int = 0
    currentHealthy: int = 0
    desiredHealthy: int = 0
    expectedPods: int = 0
    conditions: list[Condition] = []


class PodDisruptionBudget(Object, kw_only=True, frozen=True):
    API_VERSION = "policy/v1"
    KIND = "PodDisruptionBudget"

    spec: PodDisruptionBudgetSpec = PodDisruptionBudgetSpec()
    status: PodDisruptionBudgetStatus = PodDisruptionBudgetStatus()


# -- validation ------------------------------------------------------------------------------

def validate(errs: list[tuple[str, str]], pdb: PodDisruptionBudget) -> None:
    spec = pdb.spec
    if spec.minAvailable is not None and spec.maxUnavailable is not None:
        errs.append(("spec", "minAvailable and maxUnavailable cannot be both set"))
    for field in ("minAvailable", "maxUnavailable"):
        value = getattr(spec, field)
        if value is None:
            continue
        path = f"spec.{field}"
        if isinstance(value, int):
            if value < 0:
                errs.append((path, "must be greater than or equal to 0"))
            continue
        try:
            scaled_int_or_percent(value, 100, True)
        except ValueError as e:
            errs.append((path, str(e)))
            continue
        if value.endswith("%") and not 0 <= int(value[:-1]) <= 100:
            errs.append((path, "must be no more than 100%"))


# -- the disruption controller's status ------------------------------------------------------

@dataclass(frozen=True)
class Scale:
    """The replicas of one controller of the budget's pods (ReplicaSet, StatefulSet, ...)."""

    kind: str
    name: str
    replicas: int


def _healthy(pod: Pod) -> bool:
    return not pod.metadata.deletionTimestamp and not pod_is_terminal(pod) and pod_is_ready(pod)


def selects(pdb: PodDisruptionBudget, pod: Pod) -> bool:
    """Whether the budget covers ``pod`` (policy/v1: no selector or an empty one is every pod
    of the namespace)."""
    return from_label_selector(pdb.spec.selector or LabelSelector()).matches(pod.metadata.labels)


def _parse(text: str) -> _dt.datetime | None:
    try:
        return parse_time(text)
    except ValueError:
        return None


def budget_status(pdb: PodDisruptionBudget, pods: Iterable[Pod], scales: Mapping[str, Scale | None],
                  now: _dt.datetime) -> PodDisruptionBudgetStatus:
    """``status`` for the budget given the pods its selector matches and, for each controller
    uid among their controller references, that controller's scale (None: not found).

    expected pods: with an integer minAvailable the pods themselves; with maxUnavailable or a
    percentage, the sum of their controllers' replicas (a pod without a scalable controller
    makes the budget allow nothing, as Kubernetes does). Pods the api let go within
    :data:`DELETION_TIMEOUT` and not yet deleted count as not healthy."""
    pods = list(pods)
    spec = pdb.spec
    disrupted: dict[str, str] = {}
    by_name = {p.metadata.name: p for p in pods}
    for name, when in pdb.status.disruptedPods.items():
        pod = by_name.get(name)
        at = _parse(when)
        if pod is None or pod.metadata.deletionTimestamp or at is None or now - at > DELETION_TIMEOUT:
            continue
        disrupted[name] = when
    healthy = sum(1 for p in pods if _healthy(p) and p.metadata.name not in disrupted)
    error = ""
    if spec.maxUnavailable is None and spec.minAvailable is None:
        expected, desired = 0, 0  # policy/v1 sets no default: every healthy pod may go
    elif spec.maxUnavailable is None and isinstance(spec.minAvailable, int):
        expected, desired = len(pods), spec.minAvailable
    else:
        expected = 0
        seen: set[str] = set()
        for p in pods:
            ref = next((o for o in p.metadata.ownerReferences if o.controller), None)
            if ref is None or scales.get(ref.uid) is None:
                error = f"found no controllers for pod {p.metadata.name!r}"
                break
            if ref.uid not in seen:
                seen.add(ref.uid)
                scale = scales[ref.uid]
                assert scale is not None
                expected += scale.replicas
        if spec.maxUnavailable is not None:
            unavailable = scaled_int_or_percent(spec.maxUnavailable, expected, True)
            desired = max(0, expected - unavailable)
        else:
            assert spec.minAvailable is not None
            desired = scaled_int_or_percent(spec.minAvailable, expected, True)
    if error:
        expected, desired = 0, 0
    allowed = 0 if error else max(0, healthy - desired)
    if error:
        cond = Condition(type="DisruptionAllowed", status="False", reason="SyncFailed", message=error)
    elif allowed > 0:
        cond = Condition(type="DisruptionAllowed", status="True", reason="SufficientPods")
    else:
        cond = Condition(type="DisruptionAllowed", status="False", reason="InsufficientPods")
    old = next((c for c in pdb.status.conditions if c.type == "DisruptionAllowed"), None)
    stamp = old.lastTransitionTime if old is not None and old.status == cond.status else format_time(now)
    cond = Condition(type=cond.type, status=cond.status, reason=cond.reason, message=cond.message,
                     observedGeneration=pdb.metadata.generation, lastTransitionTime=stamp)
    return PodDisruptionBudgetStatus(
        observedGeneration=pdb.metadata.generation, disruptedPods=disrupted, disruptionsAllowed=allowed,
        currentHealthy=healthy, desiredHealthy=desired, expectedPods=expected, conditions=[cond])


# -- one eviction ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """``allow`` the eviction; ``take`` a disruption from the budget first (else it goes
    without one: an unhealthy pod the policy lets go); ``code``/``message``/``cause`` when refused."""

    allow: bool
    take: bool = False
    code: int = 0
    message: str = ""
    cause: str = ""


def eviction_verdict(pdb: PodDisruptionBudget, pod: Pod) -> Verdict:
    """What the eviction of ``pod``, which ``pdb`` (its only budget) selects, may do."""
    st = pdb.status
    if not _healthy(pod):
        policy = pdb.spec.unhealthyPodEvictionPolicy or "IfHealthyBudget"
        if policy == "AlwaysAllow" or (st.currentHealthy >= st.desiredHealthy and st.desiredHealthy > 0):
            return Verdict(allow=True)
    if st.observedGeneration is None or st.observedGeneration < (pdb.metadata.generation or 0):
        return Verdict(allow=False, code=429, message=REFUSED,
                       cause=f"the disruption budget {pdb.metadata.name} is still being processed by the server")
    if st.disruptionsAllowed < 0:
        return Verdict(allow=False, code=403, message="pdb disruptions allowed is negative")
    if len(st.disruptedPods) > MAX_DISRUPTED_PODS:
        return Verdict(allow=False, code=403, message="DisruptedPods map too big - too many evictions not confirmed by PDB controller")
    if st.disruptionsAllowed == 0:
        return Verdict(allow=False, code=429, message=REFUSED,
                       cause=f"The disruption budget {pdb.metadata.name} needs {st.desiredHealthy} healthy pods "
                             f"and has {st.currentHealthy} currently")
    return Verdict(allow=True, take=True)


def taken(pdb: PodDisruptionBudget, pod_name: str, now: _dt.datetime) -> PodDisruptionBudget | None:
    """The budget after one disruption for ``pod_name`` (None when none is left any more:
    a concurrent eviction took the last one)."""
    st = pdb.status
    if st.disruptionsAllowed <= 0:
        return None
    return replace(pdb, status=replace(st, disruptionsAllowed=st.disruptionsAllowed - 1,
                                       disruptedPods={**st.disruptedPods, pod_name: format_time(now)}))
