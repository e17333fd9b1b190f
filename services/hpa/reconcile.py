"""The horizontal pod autoscaler's arithmetic, as Kubernetes does it, in pure functions.

``replicas_for_metric``: desired = ceil(ready pods x usage / target), nothing inside the 0.1
tolerance; pods without a sample count as 100% of target when scaling down and 0% when
scaling up, not-yet-ready pods as 0% when scaling up and are otherwise left out.
``stabilize`` and ``limit_rate`` apply the behavior (stabilization windows, Pods/Percent
policies per period, selectPolicy); ``decide`` ties it together for one HPA and returns the
new scale and status. The recommendation and scale-event histories are passed in and returned,
never kept here; ``now`` is an argument.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Sequence

import msgspec

from schemas.autoscaling import (
    HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior,
    HorizontalPodAutoscalerStatus,
    HPAScalingPolicy,
    HPAScalingRules,
    MetricSpec,
    MetricStatus,
    MetricValueStatus,
    ResourceMetricStatus,
    effective_metrics,
)
from schemas.helpers import format_time
from schemas.meta import Condition, ConditionStatus
from schemas.quantity import cpu_millis, format_quantity, to_bytes

TOLERANCE = 0.1
DEFAULT_SCALE_UP = HPAScalingRules(
    stabilizationWindowSeconds=0,
    selectPolicy="Max",
    policies=[HPAScalingPolicy(type="Pods", value=4, periodSeconds=15),
              HPAScalingPolicy(type="Percent", value=100, periodSeconds=15)],
)
DEFAULT_SCALE_DOWN = HPAScalingRules(
    stabilizationWindowSeconds=300,
    selectPolicy="Max",
    policies=[HPAScalingPolicy(type="Percent", value=100, periodSeconds=15)],
)


class PodMetric(msgspec.Struct, kw_only=True, frozen=True):
    """One pod the target selects: its requests, readiness and latest usage (None: no sample)."""

    name: str
    ready: bool = True
    cpu_request: int = 0  # millicores; 0 = none
    memory_request: int = 0  # bytes; 0 = none
    cpu: int | None = None  # millicores used
    memory: int | None = None  # bytes used


class Recommendation(msgspec.Struct, frozen=True, array_like=True):
    at: float  # seconds (epoch)
    replicas: int


class ScaleEvent(msgspec.Struct, frozen=True, array_like=True):
    at: float
    change: int  # replicas added (> 0) or removed (< 0)


class MetricResult(msgspec.Struct, kw_only=True, frozen=True):
    replicas: int | None  # None when the metric could not be computed
    status: MetricStatus | None = None
    error: str = ""
    description: str = ""  # "cpu resource utilization (percentage of request)"
    ratio: float = 1.0


class Decision(msgspec.Struct, kw_only=True, frozen=True):
    """What one sync decided: the new scale (None = leave it), the status, the histories."""

    scale_to: int | None
    reason: str  # for the SuccessfulRescale event
    status: HorizontalPodAutoscalerStatus
    recommendations: list[Recommendation]
    events: list[ScaleEvent]


# -- one metric ------------------------------------------------------------------------------


def _usage(p: PodMetric, resource: str) -> int | None:
    return p.cpu if resource == "cpu" else p.memory


def _request(p: PodMetric, resource: str) -> int:
    return p.cpu_request if resource == "cpu" else p.memory_request


def replicas_for_metric(
    current: int, metric: MetricSpec, pods: Sequence[PodMetric], tolerance: float = TOLERANCE
) -> MetricResult:
    """Kubernetes' replica count for one Resource metric (Utilization or AverageValue)."""
    assert metric.resource is not None
    name = metric.resource.name
    target = metric.resource.target
    utilization = target.type == "Utilization"
    desc = f"{name} resource utilization (percentage of request)" if utilization else f"{name} resource"
    if not pods:
        return MetricResult(replicas=None, error=f"no pods match the target's selector for {name}", description=desc)
    if utilization and any(_request(p, name) <= 0 for p in pods):
        unrequested = next(p.name for p in pods if _request(p, name) <= 0)
        return MetricResult(replicas=None, description=desc,
                            error=f"failed to get {name} utilization: missing request for {name} in pod {unrequested}")
    # Memory has no start-up spike: every pod counts as ready for it.
    ready = [p for p in pods if (p.ready or name != "cpu") and _usage(p, name) is not None]
    unready = [p for p in pods if not (p.ready or name != "cpu")]
    missing = [p for p in pods if (p.ready or name != "cpu") and _usage(p, name) is None]
    if not ready:
        return MetricResult(replicas=None, description=desc,
                            error=f"failed to get {name} utilization: unable to get metrics for resource {name}: "
                                  "no metrics returned from resource metrics API")
    if utilization:
        target_value = float(target.averageUtilization or 0)
    else:
        raw = target.averageValue or "0"
        target_value = float(cpu_millis(raw) if name == "cpu" else to_bytes(raw))
    if target_value <= 0:
        return MetricResult(replicas=None, description=desc, error=f"invalid target for {name}")

    def ratio_of(samples: list[tuple[int, int]]) -> float:
        used = sum(u for u, _ in samples)
        if utilization:
            requested = sum(r for _, r in samples)
            return (used * 100.0 / requested) / target_value
        return used / len(samples) / target_value

    samples = [(_usage(p, name) or 0, _request(p, name)) for p in ready]
    ratio = ratio_of(samples)
    status = _metric_status(name, utilization, samples)
    if not (unready and ratio > 1.0) and not missing:
        if abs(1.0 - ratio) <= tolerance:
            return MetricResult(replicas=current, status=status, description=desc, ratio=ratio)
        return MetricResult(replicas=math.ceil(ratio * len(ready)), status=status, description=desc, ratio=ratio)
    # Fill in the pods left out, in the direction that dampens the change.
    filled = list(samples)
    for p in missing:
        req = _request(p, name)
        if ratio < 1.0:
            full = req * max(100, int(target_value)) // 100 if utilization else int(target_value)
            filled.append((full, req))
        else:
            filled.append((0, req))
    if ratio > 1.0:
        filled.extend((0, _request(p, name)) for p in unready)
    new_ratio = ratio_of(filled)
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0) != (new_ratio < 1.0):
        return MetricResult(replicas=current, status=status, description=desc, ratio=ratio)
    desired = math.ceil(new_ratio * len(filled))
    if (new_ratio < 1.0 and desired > current) or (new_ratio > 1.0 and desired < current):
        desired = current
    return MetricResult(replicas=desired, status=status, description=desc, ratio=ratio)


def _metric_status(name: str, utilization: bool, samples: list[tuple[int, int]]) -> MetricStatus:
    used = sum(u for u, _ in samples)
    requested = sum(r for _, r in samples)
    avg = used / len(samples)
    value = f"{round(avg)}m" if name == "cpu" else format_quantity(round(avg), binary=True)
    current = MetricValueStatus(
        averageUtilization=int(used * 100 / requested) if utilization and requested else None,
        averageValue=value,
    )
    return MetricStatus(type="Resource", resource=ResourceMetricStatus(name=name, current=current))


# -- behavior --------------------------------------------------------------------------------


def rules(behavior: HorizontalPodAutoscalerBehavior | None) -> tuple[HPAScalingRules, HPAScalingRules]:
    """(scaleUp, scaleDown) with Kubernetes' defaults filled in."""
    up = behavior.scaleUp if behavior is not None and behavior.scaleUp is not None else None
    down = behavior.scaleDown if behavior is not None and behavior.scaleDown is not None else None
    return _fill(up, DEFAULT_SCALE_UP), _fill(down, DEFAULT_SCALE_DOWN)


def _fill(r: HPAScalingRules | None, default: HPAScalingRules) -> HPAScalingRules:
    if r is None:
        return default
    return HPAScalingRules(
        stabilizationWindowSeconds=default.stabilizationWindowSeconds if r.stabilizationWindowSeconds is None
        else r.stabilizationWindowSeconds,
        selectPolicy=r.selectPolicy or "Max",
        policies=list(r.policies) or list(default.policies),
    )


def stabilize(
    current: int, desired: int, history: Sequence[Recommendation], up: HPAScalingRules, down: HPAScalingRules,
    now: float,
) -> tuple[int, list[Recommendation]]:
    """The stabilized recommendation and the history to keep: scaling down goes no lower than
    the highest recommendation in the scale-down window, scaling up no higher than the lowest
    in the scale-up window."""
    up_window = float(up.stabilizationWindowSeconds or 0)
    down_window = float(down.stabilizationWindowSeconds or 0)
    up_rec = down_rec = desired
    for r in history:
        if r.at > now - up_window:
            up_rec = min(up_rec, r.replicas)
        if r.at > now - down_window:
            down_rec = max(down_rec, r.replicas)
    result = current
    result = max(result, up_rec)
    result = min(result, down_rec)
    keep = max(up_window, down_window)
    kept = [r for r in history if r.at > now - keep]
    kept.append(Recommendation(now, desired))
    return result, kept


def _changed_in_period(events: Sequence[ScaleEvent], period: int, now: float, sign: int) -> int:
    return sum(e.change * sign for e in events if e.at > now - period and e.change * sign > 0)


def scale_up_limit(current: int, events: Sequence[ScaleEvent], r: HPAScalingRules, now: float) -> int:
    if r.selectPolicy == "Disabled":
        return current
    pick, result = (min, 2**31 - 1) if r.selectPolicy == "Min" else (max, -(2**31))
    for p in r.policies:
        start = current - _changed_in_period(events, p.periodSeconds, now, +1)
        proposed = start + p.value if p.type == "Pods" else math.ceil(start * (1 + p.value / 100))
        result = pick(result, proposed)
    return result


def scale_down_limit(current: int, events: Sequence[ScaleEvent], r: HPAScalingRules, now: float) -> int:
    if r.selectPolicy == "Disabled":
        return current
    pick, result = (max, -(2**31)) if r.selectPolicy == "Min" else (min, 2**31 - 1)
    for p in r.policies:
        start = current + _changed_in_period(events, p.periodSeconds, now, -1)
        proposed = start - p.value if p.type == "Pods" else int(start * (1 - p.value / 100))
        result = pick(result, proposed)
    return result


def limit_rate(
    current: int, desired: int, min_replicas: int, max_replicas: int, events: Sequence[ScaleEvent],
    up: HPAScalingRules, down: HPAScalingRules, now: float,
) -> tuple[int, str, str]:
    """(replicas, ScalingLimited reason, message) after the policies and the min/max bounds."""
    reason, message = "DesiredWithinRange", "the desired count is within the acceptable range"
    if desired > current:
        limit = max(current, scale_up_limit(current, events, up, now))
        if desired > limit and limit < max_replicas:
            desired = limit
            reason, message = "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate"
    elif desired < current:
        limit = min(current, scale_down_limit(current, events, down, now))
        if desired < limit and limit > min_replicas:
            desired = limit
            reason, message = "ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate"
    if desired < min_replicas:
        return min_replicas, "TooFewReplicas", "the desired replica count is less than the minimum replica count"
    if desired > max_replicas:
        return max_replicas, "TooManyReplicas", "the desired replica count is more than the maximum replica count"
    return desired, reason, message


# -- one HPA ---------------------------------------------------------------------------------


def _condition(
    old: Sequence[Condition], type_: str, status: ConditionStatus, reason: str, message: str, now: str
) -> Condition:
    prev = next((c for c in old if c.type == type_), None)
    since = prev.lastTransitionTime if prev is not None and prev.status == status else now
    return Condition(type=type_, status=status, reason=reason, message=message, lastTransitionTime=since)


def decide(
    hpa: HorizontalPodAutoscaler,
    current: int,
    pods: Sequence[PodMetric],
    recommendations: Sequence[Recommendation],
    events: Sequence[ScaleEvent],
    now: _dt.datetime,
) -> Decision:
    """One sync of one HPA whose target runs ``current`` replicas."""
    spec = hpa.spec
    t = now.timestamp()
    stamp = format_time(now)
    old = hpa.status.conditions
    min_r = spec.minReplicas
    kept_events = [e for e in events if e.at > t - 1800]

    def status(desired: int, metrics: list[MetricStatus], conds: list[Condition], scaled: bool) -> HorizontalPodAutoscalerStatus:
        cpu = next((m.resource.current.averageUtilization for m in metrics
                    if m.resource is not None and m.resource.name == "cpu"), None)
        return HorizontalPodAutoscalerStatus(
            observedGeneration=hpa.metadata.generation,
            lastScaleTime=stamp if scaled else hpa.status.lastScaleTime,
            currentReplicas=current,
            desiredReplicas=desired,
            currentCPUUtilizationPercentage=cpu,
            currentMetrics=metrics,
            conditions=conds,
        )

    able = _condition(old, "AbleToScale", "True", "SucceededGetScale", "the HPA controller was able to get the target's current scale", stamp)
    if current == 0 and min_r > 0:
        conds = [able, _condition(old, "ScalingActive", "False", "ScalingDisabled",
                                  "scaling is disabled since the replica count of the target is zero", stamp)]
        return Decision(scale_to=None, reason="", status=status(0, [], conds, False),
                        recommendations=list(recommendations), events=kept_events)
    results = [replicas_for_metric(current, m, pods) for m in effective_metrics(spec)]
    valid = [r for r in results if r.replicas is not None]
    metrics = [r.status for r in results if r.status is not None]
    if not valid:
        err = results[0].error if results else "no metrics configured"
        conds = [able, _condition(old, "ScalingActive", "False", "FailedGetResourceMetric", err, stamp)]
        return Decision(scale_to=None, reason="", status=status(current, metrics, conds, False),
                        recommendations=list(recommendations), events=kept_events)
    best = max(valid, key=lambda r: r.replicas or 0)
    proposal = best.replicas  # 0 when every pod is idle: the min bound applies below
    assert proposal is not None
    up, down = rules(spec.behavior)
    stabilized, history = stabilize(current, proposal, recommendations, up, down, t)
    desired, lim_reason, lim_message = limit_rate(current, stabilized, min_r, spec.maxReplicas, kept_events, up, down, t)
    active = _condition(old, "ScalingActive", "True", "ValidMetricFound",
                        f"the HPA was able to successfully calculate a replica count from {best.description}", stamp)
    limited = _condition(old, "ScalingLimited", "False" if lim_reason == "DesiredWithinRange" else "True",
                         lim_reason, lim_message, stamp)
    scale_to = desired if desired != current else None
    reason = ""
    if scale_to is not None:
        kept_events = [*kept_events, ScaleEvent(t, desired - current)]
        # Kubernetes' wording: the bounds are named only when the current count is outside them.
        if current > spec.maxReplicas:
            reason = "Current number of replicas above Spec.MaxReplicas"
        elif current < min_r:
            reason = "Current number of replicas below Spec.MinReplicas"
        elif desired > current:
            reason = f"{best.description} above target"
        else:
            reason = "All metrics below target"
        able = _condition(old, "AbleToScale", "True", "SucceededRescale",
                          f"the HPA controller was able to update the target scale to {desired}", stamp)
    else:
        able = _condition(old, "AbleToScale", "True", "ReadyForNewScale",
                          "recommended size matches current size", stamp)
    return Decision(scale_to=scale_to, reason=reason, status=status(desired, metrics, [able, active, limited], scale_to is not None),
                    recommendations=history, events=kept_events)
