"""apps/v1 workloads: ReplicaSet, Deployment, DaemonSet, StatefulSet, with the status fields
their controllers report and ``kubectl rollout status`` reads, and ControllerRevision, the history
the DaemonSet and StatefulSet controllers keep of their templates (what ``kubectl rollout
history|undo`` read)."""

from __future__ import annotations

from typing import Any, Literal

from schemas.core import PersistentVolumeClaimSpec, PersistentVolumeClaimStatus
from schemas.meta import LAST_APPLIED_ANNOTATION, Base, Condition, LabelSelector, Object, ObjectMeta
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


# StatefulSet labels (Kubernetes' apps/v1 well-known labels).
STATEFULSET_POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
CONTROLLER_REVISION_HASH_LABEL = "controller-revision-hash"


class PersistentVolumeClaimTemplate(Base, kw_only=True, frozen=True):
    """One entry of ``volumeClaimTemplates``: a PersistentVolumeClaim's metadata and spec
    (Kubernetes types it as a whole PersistentVolumeClaim; apiVersion/kind may be given)."""

    apiVersion: str = ""
    kind: str = ""
    metadata: ObjectMeta = ObjectMeta()
    spec: PersistentVolumeClaimSpec = PersistentVolumeClaimSpec()
    status: PersistentVolumeClaimStatus = PersistentVolumeClaimStatus()


class StatefulSetOrdinals(Base, kw_only=True, frozen=True):
    start: int = 0


class StatefulSetPersistentVolumeClaimRetentionPolicy(Base, kw_only=True, frozen=True):
    whenDeleted: Literal["Retain", "Delete"] = "Retain"
    whenScaled: Literal["Retain", "Delete"] = "Retain"


class RollingUpdateStatefulSetStrategy(Base, kw_only=True, frozen=True):
    partition: int = 0
    maxUnavailable: int | str | None = None  # unset: 1


class StatefulSetUpdateStrategy(Base, kw_only=True, frozen=True):
    type: Literal["RollingUpdate", "OnDelete"] = "RollingUpdate"
    rollingUpdate: RollingUpdateStatefulSetStrategy | None = None  # defaulted for RollingUpdate


class StatefulSetSpec(Base, kw_only=True, frozen=True):
    replicas: int = 1
    selector: LabelSelector | None = None
    template: PodTemplateSpec = PodTemplateSpec()
    volumeClaimTemplates: list[PersistentVolumeClaimTemplate] = []
    serviceName: str = ""
    podManagementPolicy: Literal["OrderedReady", "Parallel"] = "OrderedReady"
    updateStrategy: StatefulSetUpdateStrategy = StatefulSetUpdateStrategy()
    revisionHistoryLimit: int = 10
    minReadySeconds: int = 0
    persistentVolumeClaimRetentionPolicy: StatefulSetPersistentVolumeClaimRetentionPolicy = (
        StatefulSetPersistentVolumeClaimRetentionPolicy()
    )
    ordinals: StatefulSetOrdinals | None = None


class StatefulSetStatus(Base, kw_only=True, frozen=True):
    observedGeneration: int | None = None
    replicas: int = 0
    readyReplicas: int = 0
    currentReplicas: int = 0
    updatedReplicas: int = 0
    availableReplicas: int = 0
    currentRevision: str = ""
    updateRevision: str = ""
    collisionCount: int | None = None
    conditions: list[Condition] = []


class StatefulSet(Object, kw_only=True, frozen=True):
    """Pods with stable identities: ``<name>-<ordinal>``, each with its own claims."""

    API_VERSION = "apps/v1"
    KIND = "StatefulSet"

    spec: StatefulSetSpec = StatefulSetSpec()
    status: StatefulSetStatus = StatefulSetStatus()
