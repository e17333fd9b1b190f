"""The autoscaler's arithmetic: Kubernetes' formula, tolerance, missing and unready pods,
bounds, stabilization and behavior policies, and the status it reports."""

from __future__ import annotations

import datetime as _dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.autoscaling import (
    CrossVersionObjectReference,
    HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior,
    HorizontalPodAutoscalerSpec,
    HPAScalingPolicy,
    HPAScalingRules,
    MetricSpec,
    MetricTarget,
    ResourceMetricSource,
)
from schemas.meta import ObjectMeta
from services.hpa.reconcile import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    PodMetric,
    Recommendation,
    ScaleEvent,
    decide,
    limit_rate,
    replicas_for_metric,
    stabilize,
)

NOW = _dt.datetime(2024, 1, 1, tzinfo=_dt.UTC)


def cpu_metric(pct: int = 50) -> MetricSpec:
    return MetricSpec(type="Resource", resource=ResourceMetricSource(
        name="cpu", target=MetricTarget(type="Utilization", averageUtilization=pct)))


def hpa(min_r: int = 1, max_r: int = 10, pct: int = 50, behavior=None) -> HorizontalPodAutoscaler:
    return HorizontalPodAutoscaler(
        metadata=ObjectMeta(name="web", namespace="default", generation=1),
        spec=HorizontalPodAutoscalerSpec(scaleTargetRef=CrossVersionObjectReference(kind="Deployment", name="web"),
                                         minReplicas=min_r, maxReplicas=max_r, targetCPUUtilizationPercentage=pct,
                                         behavior=behavior),
    )


def pods(*usages, request: int = 100, ready: bool = True):
    return [PodMetric(name=f"p{i}", cpu_request=request, cpu=u, ready=ready) for i, u in enumerate(usages)]


@pytest.mark.parametrize(
    ("current", "samples", "expected"),
    [
        pytest.param(2, pods(100, 100), 4, id="double-the-target"),
        pytest.param(4, pods(25, 25, 25, 25), 2, id="half-the-target"),
        pytest.param(2, pods(54, 54), 2, id="inside-tolerance"),
        pytest.param(4, pods(100, 100) + [PodMetric(name="new1", cpu_request=100), PodMetric(name="new2", cpu_request=100)],
                     4, id="missing-metrics-count-0pct-on-scale-up"),
        pytest.param(3, pods(10, 10) + [PodMetric(name="new", cpu_request=100)], 3,
                     id="missing-metrics-count-100pct-on-scale-down"),
        pytest.param(3, pods(100, 100) + [PodMetric(name="starting", cpu_request=100, cpu=500, ready=False)], 4,
                     id="unready-count-0pct-on-scale-up"),
    ],
)
def test_replicas_for_cpu_utilization(current, samples, expected):
    assert replicas_for_metric(current, cpu_metric(50), samples).replicas == expected


def test_missing_request_makes_utilization_inactive():
    result = replicas_for_metric(2, cpu_metric(), [PodMetric(name="a", cpu=50), PodMetric(name="b", cpu_request=100, cpu=5)])
    assert result.replicas is None and "missing request for cpu" in result.error
    d = decide(hpa(), 2, [PodMetric(name="a", cpu=50)], [], [], NOW)
    active = next(c for c in d.status.conditions if c.type == "ScalingActive")
    assert d.scale_to is None and active.status == "False" and active.reason == "FailedGetResourceMetric"


def test_average_value_memory_target():
    metric = MetricSpec(type="Resource", resource=ResourceMetricSource(
        name="memory", target=MetricTarget(type="AverageValue", averageValue="100Mi")))
    mi = 1024 * 1024
    samples = [PodMetric(name=f"p{i}", memory=300 * mi, ready=False) for i in range(2)]  # memory ignores readiness
    assert replicas_for_metric(2, metric, samples).replicas == 6


@given(
    current=st.integers(1, 20),
    usages=st.lists(st.integers(0, 1000), min_size=1, max_size=20),
    target=st.integers(10, 200),
)
@settings(max_examples=300, deadline=None)
def test_no_change_inside_tolerance(current, usages, target):
    samples = pods(*usages)
    ratio = sum(usages) / (100 * len(usages)) * 100 / target
    result = replicas_for_metric(current, cpu_metric(target), samples)
    if abs(1 - ratio) <= 0.1:
        assert result.replicas == current
    elif ratio > 1:
        assert result.replicas >= len(usages)


@given(
    current=st.integers(1, 30),
    usages=st.lists(st.integers(0, 2000), min_size=1, max_size=30),
    min_r=st.integers(1, 10),
    spread=st.integers(0, 20),
    history=st.lists(st.tuples(st.integers(0, 600), st.integers(1, 40)), max_size=10),
)
@settings(max_examples=300, deadline=None)
def test_bounds_always_respected(current, usages, min_r, spread, history):
    max_r = min_r + spread
    recs = [Recommendation(NOW.timestamp() - age, r) for age, r in history]
    d = decide(hpa(min_r, max_r), current, pods(*usages), recs, [], NOW)
    final = d.scale_to if d.scale_to is not None else current
    if d.scale_to is not None:
        assert min_r <= final <= max_r
    assert d.status.desiredReplicas == final or d.scale_to is None


@given(
    current=st.integers(1, 30),
    desired=st.integers(1, 30),
    history=st.lists(st.tuples(st.integers(0, 600), st.integers(1, 40)), max_size=12),
    window=st.integers(0, 600),
)
@settings(max_examples=300, deadline=None)
def test_scale_down_stabilization_picks_the_highest_recommendation_in_the_window(current, desired, history, window):
    t = NOW.timestamp()
    recs = [Recommendation(t - age, r) for age, r in history]
    down = HPAScalingRules(stabilizationWindowSeconds=window, selectPolicy="Max", policies=DEFAULT_SCALE_DOWN.policies)
    result, kept = stabilize(current, desired, recs, DEFAULT_SCALE_UP, down, t)
    highest = max([desired, *(r.replicas for r in recs if r.at > t - window)])
    if desired <= current:
        assert result == min(current, highest)
    else:
        assert result == desired  # scale-up window 0: no hold-back
    assert kept[-1] == Recommendation(t, desired)


def test_default_scale_up_policy_allows_4_pods_or_double_per_15s():
    assert limit_rate(2, 50, 1, 100, [], DEFAULT_SCALE_UP, DEFAULT_SCALE_DOWN, 0.0)[0] == 6
    assert limit_rate(10, 50, 1, 100, [], DEFAULT_SCALE_UP, DEFAULT_SCALE_DOWN, 0.0)[0] == 20
    # 10 were added 5 s ago: the period started at 10, so at most 20 now.
    assert limit_rate(20, 50, 1, 100, [ScaleEvent(-5.0, 10)], DEFAULT_SCALE_UP, DEFAULT_SCALE_DOWN, 0.0)[0] == 20


def test_scale_down_policies_and_select_policy():
    down = HPAScalingRules(stabilizationWindowSeconds=0, selectPolicy="Min",
                           policies=[HPAScalingPolicy(type="Pods", value=1, periodSeconds=60),
                                     HPAScalingPolicy(type="Percent", value=50, periodSeconds=60)])
    assert limit_rate(10, 1, 1, 100, [], DEFAULT_SCALE_UP, down, 0.0) == (
        9, "ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate")
    disabled = HPAScalingRules(selectPolicy="Disabled", policies=down.policies)
    assert limit_rate(10, 1, 1, 100, [], DEFAULT_SCALE_UP, disabled, 0.0)[0] == 10


def test_rescale_reason_and_status():
    behavior = HorizontalPodAutoscalerBehavior(scaleDown=HPAScalingRules(stabilizationWindowSeconds=0))
    d = decide(hpa(behavior=behavior), 2, pods(100, 100), [], [], NOW)
    assert d.scale_to == 4
    assert d.reason == "cpu resource utilization (percentage of request) above target"
    assert d.status.currentCPUUtilizationPercentage == 100 and d.status.lastScaleTime == "2024-01-01T00:00:00Z"
    conds = {c.type: c for c in d.status.conditions}
    assert conds["AbleToScale"].reason == "SucceededRescale" and conds["ScalingActive"].status == "True"
    assert conds["ScalingLimited"].status == "False"
    limited = decide(hpa(max_r=3), 2, pods(100, 100), [], [], NOW)
    assert limited.scale_to == 3
    assert {c.type: c.reason for c in limited.status.conditions}["ScalingLimited"] == "TooManyReplicas"
