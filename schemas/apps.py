"""apps/v1 workloads: ReplicaSet, Deployment, DaemonSet, with the status fields their
controllers report and ``kubectl rollout status`` reads, and ControllerRevision, the history a
DaemonSet's controller keeps of its templates (what ``kubectl rollout history|undo`` read)."""

from __future__ import annotations

from typing import Any, Literal

from schemas.meta import LAST_APPLIED_ANNOTATION, Base, Condition, LabelSelector, Object
from schemas.pod import PodTemplateSpec

# Labels and annotations of Deployments and their ReplicaSets (Kubernetes' deployment util),
# read and written by the deployment controller and `kyb rollout`.
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
REVISION_HISTORY_ANNOTATION = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS_ANNOTATION = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS_ANNOTATION = "deployment.kubernetes.io/max-replicas"
CHANGE_CAUSE_ANNOTATION = "kubernetes.io/change-cause"
RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
# Annotations that stay with the Deployment: never copied onto its ReplicaSets, never taken
# back from a ReplicaSet on rollback (Kubernetes' skipCopyAnnotation).
DEPLOYMENT_ONLY_ANNOTATIONS = frozenset({
    LAST_APPLIED_ANNOTATION, REVISION_ANNOTATION, REVISION_HISTORY_ANNOTATION, DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
})


class ReplicaSetSpec(Base, kw_only=True, frozen=True):
    replicas: int = 1
    minReadySeconds: int = 0
    selector: LabelSelector | None = None  # required in apps/v1; checked by validation
    template: PodTemplateSpec = PodTemplateSpec()


class ReplicaSetStatus(Base, kw_only=True, frozen=True):
    replicas: int = 0
    fullyLabeledReplicas: int = 0
    readyReplicas: int = 0
    availableReplicas: int = 0
    observedGeneration: int | None = None
    conditions: list[Condition] = []


class ReplicaSet(Object, kw_only=True, frozen=True):
    API_VERSION = "apps/v1"
    KIND = "ReplicaSet"

    spec: ReplicaSetSpec = ReplicaSetSpec()
    status: ReplicaSetStatus = ReplicaSetStatus()


class RollingUpdateDeployment(Base, kw_only=True, frozen=True):
    maxUnavailable: int | str = "25%"
    maxSurge: int | str = "25%"


class DeploymentStrategy(Base, kw_only=True, frozen=True):
    type: Literal["RollingUpdate", "Recreate"] = "RollingUpdate"
    rollingUpdate: RollingUpdateDeployment | None = None  # defaulted for RollingUpdate


class DeploymentSpec(Base, kw_only=True, frozen=True):
    replicas: int = 1
    selector: LabelSelector | None = None
    template: PodTemplateSpec = PodTemplateSpec()
    strategy: DeploymentStrategy = DeploymentStrategy()
    minReadySeconds: int = 0
    revisionHistoryLimit: int = 10
    paused: bool = False
    progressDeadlineSeconds: int = 600


class DeploymentStatus(Base, kw_only=True, frozen=True):
    observedGeneration: int | None = None
    replicas: int = 0
    updatedReplicas: int = 0
    readyReplicas: int = 0
    availableReplicas: int = 0
    unavailableReplicas: int = 0
    conditions: list[Condition] = []
    collisionCount: int | None = None


class Deployment(Object, kw_only=True, frozen=True):
    API_VERSION = "apps/v1"
    KIND = "Deployment"

    spec: DeploymentSpec = DeploymentSpec()
    status: DeploymentStatus = DeploymentStatus()


class RollingUpdateDaemonSet(Base, kw_only=True, frozen=True):
    maxUnavailable: int | str = 1
    maxSurge: int | str = 0


class DaemonSetUpdateStrategy(Base, kw_only=True, frozen=True):
    type: Literal["RollingUpdate", "OnDelete"] = "RollingUpdate"
    rollingUpdate: RollingUpdateDaemonSet | None = None  # defaulted for RollingUpdate


class DaemonSetSpec(Base, kw_only=True, frozen=True):
    selector: LabelSelector | None = None
    template: PodTemplateSpec = PodTemplateSpec()
    updateStrategy: DaemonSetUpdateStrategy = DaemonSetUpdateStrategy()
    minReadySeconds: int = 0
    revisionHistoryLimit: int = 10


class DaemonSetStatus(Base, kw_only=True, frozen=True):
    currentNumberScheduled: int = 0
    numberMisscheduled: int = 0
    desiredNumberScheduled: int = 0
    numberReady: int = 0
    observedGeneration: int | None = None
    updatedNumberScheduled: int = 0
    numberAvailable: int = 0
    numberUnavailable: int = 0
    collisionCount: int | None = None
    conditions: list[Condition] = []


class DaemonSet(Object, kw_only=True, frozen=True):
    API_VERSION = "apps/v1"
    KIND = "DaemonSet"

    spec: DaemonSetSpec = DaemonSetSpec()
    status: DaemonSetStatus = DaemonSetStatus()


class ControllerRevision(Object, kw_only=True, frozen=True):
    """One template a controller has rolled out. ``data`` is the patch that restores it (for a
    DaemonSet ``{"spec": {"template": ...}}``, as Kubernetes stores it); ``revision`` orders the
    history, the current template having the highest."""

    API_VERSION = "apps/v1"
    KIND = "ControllerRevision"

    data: dict[str, Any] = {}
    revision: int = 0
