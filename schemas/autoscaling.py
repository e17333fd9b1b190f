"""HorizontalPodAutoscaler, accepted as autoscaling/v1 (targetCPUUtilizationPercentage)
and autoscaling/v2 (metrics and behavior) alike.

One struct holds either form: the v1 field and the v2 fields sit side by side, and
``effective_metrics`` gives the controller one list of metrics whichever form was written.
"""

from __future__ import annotations

from typing import Literal

from schemas.meta import Base, Condition, Object


class CrossVersionObjectReference(Base, kw_only=True, frozen=True):
    kind: str
    name: str
    apiVersion: str = ""


class MetricTarget(Base, kw_only=True, frozen=True):
    type: Literal["Utilization", "AverageValue", "Value"]
    averageUtilization: int | None = None
    averageValue: str | None = None  # quantity
    value: str | None = None  # quantity


class ResourceMetricSource(Base, kw_only=True, frozen=True):
    name: str  # cpu, memory
    target: MetricTarget


class MetricSpec(Base, kw_only=True, frozen=True):
    type: Literal["Resource", "ContainerResource", "Pods", "Object", "External"]
    resource: ResourceMetricSource | None = None


class HPAScalingPolicy(Base, kw_only=True, frozen=True):
    type: Literal["Pods", "Percent"]
    value: int
    periodSeconds: int


class HPAScalingRules(Base, kw_only=True, frozen=True):
    stabilizationWindowSeconds: int | None = None
    selectPolicy: Literal["Max", "Min", "Disabled"] | None = None
    policies: list[HPAScalingPolicy] = []


class HorizontalPodAutoscalerBehavior(Base, kw_only=True, frozen=True):
    scaleUp: HPAScalingRules | None = None
    scaleDown: HPAScalingRules | None = None


class HorizontalPodAutoscalerSpec(Base, kw_only=True, frozen=True):
    scaleTargetRef: CrossVersionObjectReference
    maxReplicas: int
    minReplicas: int = 1
    targetCPUUtilizationPercentage: int | None = None  # autoscaling/v1
    metrics: list[MetricSpec] = []  # autoscaling/v2
    behavior: HorizontalPodAutoscalerBehavior | None = None  # autoscaling/v2


class MetricValueStatus(Base, kw_only=True, frozen=True):
    averageUtilization: int | None = None
    averageValue: str | None = None
    value: str | None = None


class ResourceMetricStatus(Base, kw_only=True, frozen=True):
    name: str
    current: MetricValueStatus


class MetricStatus(Base, kw_only=True, frozen=True):
    type: Literal["Resource", "ContainerResource", "Pods", "Object", "External"]
    resource: ResourceMetricStatus | None = None


class HorizontalPodAutoscalerStatus(Base, kw_only=True, frozen=True):
    observedGeneration: int | None = None
    lastScaleTime: str | None = None
    currentReplicas: int = 0
    desiredReplicas: int = 0
    currentCPUUtilizationPercentage: int | None = None  # autoscaling/v1
    currentMetrics: list[MetricStatus] = []  # autoscaling/v2
    conditions: list[Condition] = []


class HorizontalPodAutoscaler(Object, kw_only=True, frozen=True):
    API_VERSION = "autoscaling/v2"
    KIND = "HorizontalPodAutoscaler"

    spec: HorizontalPodAutoscalerSpec
    status: HorizontalPodAutoscalerStatus = HorizontalPodAutoscalerStatus()


DEFAULT_CPU_UTILIZATION = 80  # Kubernetes' target when neither form names one


def effective_metrics(spec: HorizontalPodAutoscalerSpec) -> list[MetricSpec]:
    """The metrics to scale on: v2 ``metrics``, else the v1 CPU target, else 80% CPU."""
    if spec.metrics:
        return list(spec.metrics)
    pct = spec.targetCPUUtilizationPercentage or DEFAULT_CPU_UTILIZATION
    target = MetricTarget(type="Utilization", averageUtilization=pct)
    return [MetricSpec(type="Resource", resource=ResourceMetricSource(name="cpu", target=target))]
