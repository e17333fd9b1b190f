"""Pod (core/v1) and everything a pod template holds: containers, probes, volumes,
scheduling constraints, and the status the kubelet reports.

Pods are the unit every workload controller, the scheduler and the kubelet share, so they
live in one module of their own. Quantities are plain strings here (see ``schemas.quantity``).
"""

from __future__ import annotations

from typing import Literal

from schemas.meta import Base, ConditionStatus, LabelSelector, LocalObjectReference, Object, ObjectMeta

Protocol = Literal["TCP", "UDP", "SCTP"]
PullPolicy = Literal["Always", "IfNotPresent", "Never"]
RestartPolicy = Literal["Always", "OnFailure", "Never"]
ContainerRestartPolicy = Literal["Always"]  # init containers only: "Always" makes a sidecar
TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
PodPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"]


# --- environment -----------------------------------------------------------------------------


class ConfigMapKeySelector(Base, kw_only=True, frozen=True):
    name: str = ""
    key: str
    optional: bool | None = None


class SecretKeySelector(Base, kw_only=True, frozen=True):
    name: str = ""
    key: str
    optional: bool | None = None


class ObjectFieldSelector(Base, kw_only=True, frozen=True):
    fieldPath: str
    apiVersion: str = ""


class ResourceFieldSelector(Base, kw_only=True, frozen=True):
    resource: str
    containerName: str = ""
    divisor: str | None = None


class EnvVarSource(Base, kw_only=True, frozen=True):
    configMapKeyRef: ConfigMapKeySelector | None = None
    secretKeyRef: SecretKeySelector | None = None
    fieldRef: ObjectFieldSelector | None = None
    resourceFieldRef: ResourceFieldSelector | None = None


class EnvVar(Base, kw_only=True, frozen=True):
    name: str
    value: str = ""
    valueFrom: EnvVarSource | None = None


class ConfigMapEnvSource(Base, kw_only=True, frozen=True):
    name: str = ""
    optional: bool | None = None


class SecretEnvSource(Base, kw_only=True, frozen=True):
    name: str = ""
    optional: bool | None = None


class EnvFromSource(Base, kw_only=True, frozen=True):
    prefix: str = ""
    configMapRef: ConfigMapEnvSource | None = None
    secretRef: SecretEnvSource | None = None


# --- ports, resources, mounts ----------------------------------------------------------------


class ContainerPort(Base, kw_only=True, frozen=True):
    containerPort: int
    name: str = ""
    hostPort: int | None = None
    hostIP: str = ""
    protocol: Protocol = "TCP"


class ResourceRequirements(Base, kw_only=True, frozen=True):
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}


class VolumeMount(Base, kw_only=True, frozen=True):
    name: str
    mountPath: str
    readOnly: bool = False
    subPath: str = ""
    mountPropagation: str | None = None


# --- probes and lifecycle --------------------------------------------------------------------


class ExecAction(Base, kw_only=True, frozen=True):
    command: list[str] = []


class HTTPHeader(Base, kw_only=True, frozen=True):
    name: str
    value: str


class HTTPGetAction(Base, kw_only=True, frozen=True):
    port: int | str
    path: str = ""
    host: str = ""
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"
    httpHeaders: list[HTTPHeader] = []


class TCPSocketAction(Base, kw_only=True, frozen=True):
    port: int | str
    host: str = ""


class GRPCAction(Base, kw_only=True, frozen=True):
    port: int
    service: str | None = None


class SleepAction(Base, kw_only=True, frozen=True):
    seconds: int


class Probe(Base, kw_only=True, frozen=True):
    exec: ExecAction | None = None
    httpGet: HTTPGetAction | None = None
    tcpSocket: TCPSocketAction | None = None
    grpc: GRPCAction | None = None
    initialDelaySeconds: int = 0
    periodSeconds: int = 10
    timeoutSeconds: int = 1
    successThreshold: int = 1
    failureThreshold: int = 3
    terminationGracePeriodSeconds: int | None = None


class LifecycleHandler(Base, kw_only=True, frozen=True):
    exec: ExecAction | None = None
    httpGet: HTTPGetAction | None = None
    tcpSocket: TCPSocketAction | None = None
    sleep: SleepAction | None = None


class Lifecycle(Base, kw_only=True, frozen=True):
    postStart: LifecycleHandler | None = None
    preStop: LifecycleHandler | None = None


# --- security (the runtimes honour what they can: services/kubelet/startplan.py) ------------

SecurityProfileType = Literal["RuntimeDefault", "Unconfined", "Localhost"]


class Capabilities(Base, kw_only=True, frozen=True):
    add: list[str] = []
    drop: list[str] = []


class SeccompProfile(Base, kw_only=True, frozen=True):
    """``Localhost``: a profile file under the kubelet's seccomp directory (``localhostProfile``)."""

    type: SecurityProfileType
    localhostProfile: str | None = None


class AppArmorProfile(Base, kw_only=True, frozen=True):
    """``Localhost``: a profile loaded on the node, named by ``localhostProfile``."""

    type: SecurityProfileType
    localhostProfile: str | None = None


class SELinuxOptions(Base, kw_only=True, frozen=True):
    user: str = ""
    role: str = ""
    type: str = ""
    level: str = ""


class WindowsSecurityContextOptions(Base, kw_only=True, frozen=True):
    gmsaCredentialSpecName: str | None = None
    gmsaCredentialSpec: str | None = None
    runAsUserName: str | None = None
    hostProcess: bool | None = None


class Sysctl(Base, kw_only=True, frozen=True):
    name: str
    value: str


class SecurityContext(Base, kw_only=True, frozen=True):
    runAsUser: int | None = None
    runAsGroup: int | None = None
    runAsNonRoot: bool | None = None
    privileged: bool | None = None
    readOnlyRootFilesystem: bool | None = None
    allowPrivilegeEscalation: bool | None = None
    capabilities: Capabilities | None = None
    procMount: Literal["Default", "Unmasked"] | None = None
    seLinuxOptions: SELinuxOptions | None = None
    windowsOptions: WindowsSecurityContextOptions | None = None
    seccompProfile: SeccompProfile | None = None  # overrides the pod's
    appArmorProfile: AppArmorProfile | None = None  # overrides the pod's


class PodSecurityContext(Base, kw_only=True, frozen=True):
    runAsUser: int | None = None
    runAsGroup: int | None = None
    runAsNonRoot: bool | None = None
    fsGroup: int | None = None
    fsGroupChangePolicy: Literal["OnRootMismatch", "Always"] | None = None
    supplementalGroups: list[int] = []
    supplementalGroupsPolicy: Literal["Merge", "Strict"] | None = None  # unset: Merge
    seLinuxOptions: SELinuxOptions | None = None
    seLinuxChangePolicy: Literal["MountOption", "Recursive"] | None = None
    windowsOptions: WindowsSecurityContextOptions | None = None
    sysctls: list[Sysctl] = []
    seccompProfile: SeccompProfile | None = None
    appArmorProfile: AppArmorProfile | None = None


class ContainerResizePolicy(Base, kw_only=True, frozen=True):
    """How a container takes a change of one resource in place (``pods/resize``): in the running
    container, or by restarting it."""

    resourceName: Literal["cpu", "memory"]
    restartPolicy: Literal["NotRequired", "RestartContainer"]


class Container(Base, kw_only=True, frozen=True):
    name: str
    image: str = ""
    command: list[str] = []
    args: list[str] = []
    workingDir: str = ""
    ports: list[ContainerPort] = []
    envFrom: list[EnvFromSource] = []
    env: list[EnvVar] = []
    resources: ResourceRequirements = ResourceRequirements()
    resizePolicy: list[ContainerResizePolicy] = []
    volumeMounts: list[VolumeMount] = []
    livenessProbe: Probe | None = None
    readinessProbe: Probe | None = None
    startupProbe: Probe | None = None
    lifecycle: Lifecycle | None = None
    terminationMessagePath: str = "/dev/termination-log"
    terminationMessagePolicy: Literal["File", "FallbackToLogsOnError"] = "File"
    imagePullPolicy: PullPolicy | None = None  # defaulted from the image tag
    securityContext: SecurityContext | None = None
    stdin: bool = False
    stdinOnce: bool = False
    tty: bool = False
    restartPolicy: ContainerRestartPolicy | None = None  # "Always" on an init container: a sidecar


def is_sidecar(c: Container) -> bool:
    """An init container with restartPolicy Always: started in the init sequence, then kept
    running beside the app containers (Kubernetes' "restartable init container")."""
    return c.restartPolicy == "Always"


# --- volumes ---------------------------------------------------------------------------------


class KeyToPath(Base, kw_only=True, frozen=True):
    key: str
    path: str
    mode: int | None = None


class EmptyDirVolumeSource(Base, kw_only=True, frozen=True):
    medium: Literal["", "Memory"] = ""
    sizeLimit: str | None = None


class HostPathVolumeSource(Base, kw_only=True, frozen=True):
    path: str
    type: Literal[
        "", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice", "BlockDevice"
    ] = ""


class ConfigMapVolumeSource(Base, kw_only=True, frozen=True):
    name: str = ""
    items: list[KeyToPath] = []
    defaultMode: int | None = None
    optional: bool | None = None


class SecretVolumeSource(Base, kw_only=True, frozen=True):
    secretName: str = ""
    items: list[KeyToPath] = []
    defaultMode: int | None = None
    optional: bool | None = None


class PersistentVolumeClaimVolumeSource(Base, kw_only=True, frozen=True):
    claimName: str
    readOnly: bool = False


class DownwardAPIVolumeFile(Base, kw_only=True, frozen=True):
    path: str
    fieldRef: ObjectFieldSelector | None = None
    resourceFieldRef: ResourceFieldSelector | None = None
    mode: int | None = None


class DownwardAPIVolumeSource(Base, kw_only=True, frozen=True):
    items: list[DownwardAPIVolumeFile] = []
    defaultMode: int | None = None


class SecretProjection(Base, kw_only=True, frozen=True):
    name: str = ""
    items: list[KeyToPath] = []
    optional: bool | None = None


class ConfigMapProjection(Base, kw_only=True, frozen=True):
    name: str = ""
    items: list[KeyToPath] = []
    optional: bool | None = None


class DownwardAPIProjection(Base, kw_only=True, frozen=True):
    items: list[DownwardAPIVolumeFile] = []


class ServiceAccountTokenProjection(Base, kw_only=True, frozen=True):
    audience: str = ""  # empty: the apiserver's own audience
    expirationSeconds: int = 3600  # at least 600
    path: str


class ClusterTrustBundleProjection(Base, kw_only=True, frozen=True):
    name: str | None = None
    signerName: str | None = None
    labelSelector: LabelSelector | None = None
    optional: bool | None = None
    path: str


class VolumeProjection(Base, kw_only=True, frozen=True):
    """One source of a projected volume: exactly one of these is set."""

    secret: SecretProjection | None = None
    configMap: ConfigMapProjection | None = None
    downwardAPI: DownwardAPIProjection | None = None
    serviceAccountToken: ServiceAccountTokenProjection | None = None
    clusterTrustBundle: ClusterTrustBundleProjection | None = None


class ProjectedVolumeSource(Base, kw_only=True, frozen=True):
    sources: list[VolumeProjection] = []
    defaultMode: int | None = None


class Volume(Base, kw_only=True, frozen=True):
    name: str
    emptyDir: EmptyDirVolumeSource | None = None
    hostPath: HostPathVolumeSource | None = None
    configMap: ConfigMapVolumeSource | None = None
    secret: SecretVolumeSource | None = None
    persistentVolumeClaim: PersistentVolumeClaimVolumeSource | None = None
    downwardAPI: DownwardAPIVolumeSource | None = None
    projected: ProjectedVolumeSource | None = None


# --- scheduling ------------------------------------------------------------------------------


class NodeSelectorRequirement(Base, kw_only=True, frozen=True):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: list[str] = []


class NodeSelectorTerm(Base, kw_only=True, frozen=True):
    matchExpressions: list[NodeSelectorRequirement] = []
    matchFields: list[NodeSelectorRequirement] = []


class NodeSelector(Base, kw_only=True, frozen=True):
    nodeSelectorTerms: list[NodeSelectorTerm] = []


class PreferredSchedulingTerm(Base, kw_only=True, frozen=True):
    weight: int
    preference: NodeSelectorTerm


class NodeAffinity(Base, kw_only=True, frozen=True):
    requiredDuringSchedulingIgnoredDuringExecution: NodeSelector | None = None
    preferredDuringSchedulingIgnoredDuringExecution: list[PreferredSchedulingTerm] = []


class PodAffinityTerm(Base, kw_only=True, frozen=True):
    topologyKey: str
    labelSelector: LabelSelector | None = None
    namespaces: list[str] = []
    namespaceSelector: LabelSelector | None = None


class WeightedPodAffinityTerm(Base, kw_only=True, frozen=True):
    weight: int
    podAffinityTerm: PodAffinityTerm


class PodAffinity(Base, kw_only=True, frozen=True):
    requiredDuringSchedulingIgnoredDuringExecution: list[PodAffinityTerm] = []
    preferredDuringSchedulingIgnoredDuringExecution: list[WeightedPodAffinityTerm] = []


class Affinity(Base, kw_only=True, frozen=True):
    nodeAffinity: NodeAffinity | None = None
    podAffinity: PodAffinity | None = None
    podAntiAffinity: PodAffinity | None = None


class Toleration(Base, kw_only=True, frozen=True):
    key: str = ""
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str = ""
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = ""
    tolerationSeconds: int | None = None


class TopologySpreadConstraint(Base, kw_only=True, frozen=True):
    """How matching pods may be spread over the domains of ``topologyKey`` (zones, nodes)."""

    maxSkew: int
    topologyKey: str
    whenUnsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"]
    labelSelector: LabelSelector | None = None
    matchLabelKeys: list[str] = []
    minDomains: int | None = None
    nodeAffinityPolicy: Literal["Honor", "Ignore"] | None = None  # unset: Honor
    nodeTaintsPolicy: Literal["Honor", "Ignore"] | None = None  # unset: Ignore


class PodDNSConfigOption(Base, kw_only=True, frozen=True):
    name: str = ""
    value: str | None = None


class PodDNSConfig(Base, kw_only=True, frozen=True):
    """Merged into the resolv.conf ``dnsPolicy`` produces (the whole of it for ``None``)."""

    nameservers: list[str] = []
    searches: list[str] = []
    options: list[PodDNSConfigOption] = []


class HostAlias(Base, kw_only=True, frozen=True):
    """Extra /etc/hosts lines of the pod: ``ip`` followed by ``hostnames``."""

    ip: str = ""
    hostnames: list[str] = []


class PodSchedulingGate(Base, kw_only=True, frozen=True):
    """While a pod has any, the scheduler leaves it alone (PodScheduled=False, SchedulingGated)."""

    name: str


class PodSpec(Base, kw_only=True, frozen=True):
    containers: list[Container] = []
    initContainers: list[Container] = []
    volumes: list[Volume] = []
    nodeSelector: dict[str, str] = {}
    affinity: Affinity | None = None
    tolerations: list[Toleration] = []
    topologySpreadConstraints: list[TopologySpreadConstraint] = []
    restartPolicy: RestartPolicy = "Always"
    terminationGracePeriodSeconds: int = 30
    activeDeadlineSeconds: int | None = None
    dnsPolicy: Literal["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"] = "ClusterFirst"
    dnsConfig: PodDNSConfig | None = None
    hostAliases: list[HostAlias] = []
    hostNetwork: bool = False
    hostPID: bool = False
    hostIPC: bool = False
    shareProcessNamespace: bool | None = None
    hostUsers: bool | None = None  # unset: true (false asks for a user namespace)
    nodeName: str = ""
    schedulerName: str = "default-scheduler"
    serviceAccountName: str = ""
    serviceAccount: str = ""
    automountServiceAccountToken: bool | None = None
    hostname: str = ""
    subdomain: str = ""
    priorityClassName: str = ""  # filled on create: the global default class's name when unset
    priority: int | None = None  # set on create from the class (schemas.scheduling.with_priority)
    preemptionPolicy: Literal["PreemptLowerPriority", "Never"] | None = None  # likewise
    securityContext: PodSecurityContext | None = None
    schedulingGates: list[PodSchedulingGate] = []
    imagePullSecrets: list[LocalObjectReference] = []
    enableServiceLinks: bool | None = None
    resources: ResourceRequirements | None = None  # pod-level requests and limits (cpu, memory)


class PodTemplateSpec(Base, kw_only=True, frozen=True):
    metadata: ObjectMeta = ObjectMeta()
    spec: PodSpec = PodSpec()


# --- status ----------------------------------------------------------------------------------


class PodCondition(Base, kw_only=True, frozen=True):
    type: str  # PodScheduled, Initialized, ContainersReady, Ready, DisruptionTarget
    status: ConditionStatus
    lastProbeTime: str | None = None
    lastTransitionTime: str | None = None
    reason: str = ""
    message: str = ""


class ContainerStateWaiting(Base, kw_only=True, frozen=True):
    reason: str = ""
    message: str = ""


class ContainerStateRunning(Base, kw_only=True, frozen=True):
    startedAt: str | None = None


class ContainerStateTerminated(Base, kw_only=True, frozen=True):
    exitCode: int
    signal: int | None = None
    reason: str = ""
    message: str = ""
    startedAt: str | None = None
    finishedAt: str | None = None
    containerID: str = ""


class ContainerState(Base, kw_only=True, frozen=True):
    """At most one of waiting, running, terminated is set; none means waiting."""

    waiting: ContainerStateWaiting | None = None
    running: ContainerStateRunning | None = None
    terminated: ContainerStateTerminated | None = None


class ContainerStatus(Base, kw_only=True, frozen=True):
    name: str
    state: ContainerState = ContainerState()
    lastState: ContainerState = ContainerState()
    ready: bool = False
    started: bool | None = None
    restartCount: int = 0
    image: str = ""
    imageID: str = ""
    containerID: str = ""
    # What the node gave the container (in-place resize): its requests, and the requests and
    # limits the runtime applies now.
    allocatedResources: dict[str, str] = {}
    resources: ResourceRequirements | None = None


class PodIP(Base, kw_only=True, frozen=True):
    ip: str


class HostIP(Base, kw_only=True, frozen=True):
    ip: str


class PodStatus(Base, kw_only=True, frozen=True):
    phase: PodPhase = "Pending"
    conditions: list[PodCondition] = []
    message: str = ""
    reason: str = ""
    nominatedNodeName: str = ""
    hostIP: str = ""
    hostIPs: list[HostIP] = []
    podIP: str = ""
    podIPs: list[PodIP] = []
    startTime: str | None = None
    initContainerStatuses: list[ContainerStatus] = []
    containerStatuses: list[ContainerStatus] = []
    qosClass: str = ""


class Pod(Object, kw_only=True, frozen=True):
    API_VERSION = "v1"
    KIND = "Pod"

    spec: PodSpec = PodSpec()
    status: PodStatus = PodStatus()
