"""Pure: what starting a pod's sandbox and one of its containers takes, and what each outcome
brings — the runtime configuration built from the Pod spec, the span's attributes, the events a
user sees (``kubectl describe pod``) and the back-off of a failed start.
:class:`services.kubelet.sync.PodWorker` does the I/O in between.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

import msgspec

from schemas.defaults import image_pull_policy
from schemas.pod import (
    AppArmorProfile,
    Capabilities,
    Container,
    LifecycleHandler,
    Pod,
    PodSecurityContext,
    PodStatus,
    SeccompProfile,
    SecurityContext,
)
from schemas.securitychecks import APPARMOR_ANNOTATION_PREFIX
from services.kubelet.env import ConfigError
from services.kubelet.reconcile import (
    Event,
    Failure,
    Kill,
    Settings,
    limits_of,
    next_failure_backoff,
    wanted_limits,
)
from services.kubelet.runtime.base import (
    ContainerConfig,
    ContainerSecurity,
    Mount,
    PortMapping,
    PullPolicy,
    SandboxConfig,
    SandboxNetwork,
)


def container(pod: Pod, name: str) -> Container | None:
    """The app or init container of ``pod`` called ``name``."""
    return next((c for c in [*pod.spec.initContainers, *pod.spec.containers] if c.name == name), None)


def post_start(c: Container | None) -> LifecycleHandler | None:
    return c.lifecycle.postStart if c is not None and c.lifecycle is not None else None


def port_mappings(pod: Pod) -> tuple[PortMapping, ...]:
    """The declared ports of the app containers (SCTP as TCP), with their hostPorts."""
    return tuple(
        PortMapping(
            container_port=port.containerPort,
            protocol=port.protocol if port.protocol != "SCTP" else "TCP",
            host_port=port.hostPort,
            host_ip=port.hostIP or None,
        )
        for c in pod.spec.containers
        for port in c.ports
    )


def sandbox_network(pod: Pod, cni: bool) -> SandboxNetwork:
    """loopback without CNI; with it, the node's namespace for hostNetwork pods, else an empty one."""
    if not cni:
        return "loopback"
    return "host" if pod.spec.hostNetwork else "none"


def sandbox_config(pod: Pod, ip: str, network: SandboxNetwork, resolv_conf: str | None = None,
                   hosts_file: str | None = None) -> SandboxConfig:
    pod_cpu, pod_memory = limits_of(pod.spec.resources.limits if pod.spec.resources is not None else {})
    return SandboxConfig(
        pod_uid=pod.metadata.uid or "",
        pod_name=pod.metadata.name,
        namespace=pod.metadata.namespace or "default",
        pod_ip=ip,
        hostname=pod.spec.hostname or pod.metadata.name,
        ports=port_mappings(pod),
        network=network,
        resolv_conf=resolv_conf,
        hosts_file=hosts_file,
        sysctls=sysctls(pod),
        pod_cpu_limit_millis=pod_cpu,
        pod_memory_limit_bytes=pod_memory,
    )


def span_attributes(pod: Pod, c: Container, attempt: int, node_name: str) -> dict[str, str | int]:
    """The semantic-convention attributes of a container start's span."""
    return {"k8s.pod.name": pod.metadata.name, "k8s.namespace.name": pod.metadata.namespace or "default",
            "k8s.pod.uid": pod.metadata.uid or "", "k8s.container.name": c.name,
            "k8s.container.restart_count": attempt, "k8s.node.name": node_name}


def with_addresses(pod: Pod, ip: str, host_ip: str) -> Pod:
    """``pod`` as the downward API sees it at start: its addresses set before the status write."""
    return msgspec.structs.replace(pod, status=msgspec.structs.replace(pod.status, podIP=ip, hostIP=host_ip))


def pull_policy(c: Container) -> PullPolicy:
    """The container's imagePullPolicy, or the default its image's tag gives."""
    return c.imagePullPolicy or image_pull_policy(c.image)


def pulling_events(c: Container, policy: PullPolicy) -> tuple[Event, ...]:
    """Before the image is made present: Pulling when it is pulled every time."""
    return (Event("Normal", "Pulling", f'Pulling image "{c.image}"'),) if policy == "Always" else ()


def pulled_event(c: Container, policy: PullPolicy) -> Event:
    if policy == "Always":
        return Event("Normal", "Pulled", f'Successfully pulled image "{c.image}"')
    return Event("Normal", "Pulled", f'Container image "{c.image}" already present on machine')


def pull_failure(c: Container, reason: str, message: str, previous: Failure | None, settings: Settings,
                 now: datetime) -> tuple[tuple[Event, ...], Failure]:
    """ErrImagePull / ErrImageNeverPull: two Warnings, and the image back-off (doubling for the same reason)."""
    events = (Event("Warning", "Failed", f'Failed to pull image "{c.image}": {message}'),
              Event("Warning", "Failed", f"Error: {reason}"))
    return events, Failure(reason, message, now, next_failure_backoff(previous, reason, settings))


def config_failure(message: str, now: datetime) -> tuple[Event, Failure]:
    """CreateContainerConfigError (a missing key, a volume that cannot be mounted): tried again at the next sync."""
    return Event("Warning", "Failed", f"Error: {message}"), Failure(ConfigError.reason, message, now, 0.0)


def mount_failure(message: str, now: datetime) -> tuple[Event, Failure]:
    """The pod's volumes could not be set up: a FailedMount Warning; every container waits in ContainerCreating."""
    text = f"MountVolume.SetUp failed: {message}"
    return Event("Warning", "FailedMount", text), Failure("ContainerCreating", text, now, 0.0)


def start_failure(reason: str, message: str, previous: Failure | None, settings: Settings,
                  now: datetime) -> tuple[Event, Failure]:
    """The runtime refused the container (CreateContainerError, ...): a Warning and a back-off."""
    return (Event("Warning", "Failed", f"Error: {message}"),
            Failure(reason, message, now, next_failure_backoff(previous, reason, settings)))


def started_events(c: Container) -> tuple[Event, Event]:
    return Event("Normal", "Created", f"Created container {c.name}"), Event("Normal", "Started", f"Started container {c.name}")


def container_config(c: Container, env: Mapping[str, str], command: tuple[str, ...], args: tuple[str, ...],
                     mounts: tuple[Mount, ...], policy: PullPolicy, attempt: int,
                     security: ContainerSecurity = ContainerSecurity(), share_pid: bool = False) -> ContainerConfig:
    cpu, memory = wanted_limits(c)
    return ContainerConfig(
        name=c.name,
        image=c.image,
        command=command,
        args=args,
        env=env,
        working_dir=c.workingDir or None,
        mounts=mounts,
        cpu_limit_millis=cpu,
        memory_limit_bytes=memory,
        image_pull_policy=policy,
        attempt=attempt,
        stdin=c.stdin,
        stdin_once=c.stdinOnce,
        tty=c.tty,
        security=security,
        share_pid=share_pid,
    )


def post_start_kill(c: Container, container_id: str) -> Kill:
    """The kill that follows a failed postStart hook (preStop runs first, as on every kill)."""
    return Kill(container_id, c.name, "Killing", f"Stopping container {c.name}: its postStart hook failed")


def sandbox_failure(message: str, failures: int, settings: Settings) -> tuple[Event, float]:
    """A failed CNI ADD: FailedCreatePodSandBox with the plugin's message, and the seconds before
    the next try (``base_backoff`` doubling per failure to ``max_backoff``)."""
    event = Event("Warning", "FailedCreatePodSandBox",
                  f"Failed to create pod sandbox: failed to set up the pod network: {message}")
    return event, min(settings.base_backoff * 2**failures, settings.max_backoff)


# --- security: the kubelet's admission and what each runtime applies ------------------------

# Kubernetes' safe sysctls (pkg/kubelet/sysctl/safe_sysctls.go) and the namespace each lives in;
# any other is refused by the kubelet, as a kubelet without --allowed-unsafe-sysctls does.
SAFE_SYSCTLS: Mapping[str, str] = {
    "kernel.shm_rmid_forced": "ipc",
    "net.ipv4.ip_local_port_range": "net",
    "net.ipv4.tcp_syncookies": "net",
    "net.ipv4.ping_group_range": "net",
    "net.ipv4.ip_unprivileged_port_start": "net",
    "net.ipv4.ip_local_reserved_ports": "net",
    "net.ipv4.tcp_keepalive_time": "net",
    "net.ipv4.tcp_fin_timeout": "net",
    "net.ipv4.tcp_keepalive_intvl": "net",
    "net.ipv4.tcp_keepalive_probes": "net",
    "net.ipv4.tcp_rmem": "net",
    "net.ipv4.tcp_wmem": "net",
}
APPARMOR_REASON = "AppArmor"
SYSCTL_REASON = "SysctlForbidden"
REJECTED = "Pod was rejected: "
NOT_EFFECTIVE_REASON = "FieldsNotEffective"


def sysctl_name(name: str) -> str:
    """Kubernetes' NormalizeName: ``net/ipv4/ip_forward`` (slashes first) as ``net.ipv4.ip_forward``."""
    first = next((ch for ch in name if ch in "./"), ".")
    return name if first == "." else name.translate(str.maketrans("./", "/."))


def sysctls(pod: Pod) -> dict[str, str]:
    sc = pod.spec.securityContext
    return {sysctl_name(s.name): s.value for s in sc.sysctls} if sc is not None else {}


def _annotated_apparmor(pod: Pod, c: Container) -> AppArmorProfile | None:
    """The container's profile in the deprecated annotation (``runtime/default``, ``unconfined``,
    ``localhost/<name>``), which Kubernetes still honours where the fields are unset."""
    value = pod.metadata.annotations.get(APPARMOR_ANNOTATION_PREFIX + c.name, "")
    if value == "runtime/default":
        return AppArmorProfile(type="RuntimeDefault")
    if value == "unconfined":
        return AppArmorProfile(type="Unconfined")
    if value.startswith("localhost/"):
        return AppArmorProfile(type="Localhost", localhostProfile=value.removeprefix("localhost/"))
    return None


def apparmor_profile(pod: Pod, c: Container) -> AppArmorProfile | None:
    """The container's AppArmor profile: its own field, else the pod's, else the annotation."""
    own = c.securityContext.appArmorProfile if c.securityContext is not None else None
    pods = pod.spec.securityContext.appArmorProfile if pod.spec.securityContext is not None else None
    return own or pods or _annotated_apparmor(pod, c)


def _apparmor_in_use(pod: Pod) -> bool:
    """isRequired of Kubernetes' AppArmor validator: a profile other than Unconfined somewhere."""
    return any((p := apparmor_profile(pod, c)) is not None and p.type != "Unconfined"
               for c in [*pod.spec.initContainers, *pod.spec.containers])


_IPC_SYSCTLS = ("kernel.sem",)
_PREFIX_NAMESPACES = (("kernel.shm", "ipc"), ("kernel.msg", "ipc"), ("fs.mqueue.", "ipc"), ("net.", "net"))


def sysctl_namespace(name: str) -> str | None:
    """The namespace a sysctl (or a ``prefix*`` pattern) lives in, None when it is the node's."""
    name = sysctl_name(name).removesuffix("*")
    if name in _IPC_SYSCTLS:
        return "ipc"
    return next((ns for prefix, ns in _PREFIX_NAMESPACES if name.startswith(prefix)), None)


def unsafe_sysctls_problem(patterns: tuple[str, ...]) -> str | None:
    """Why the kubelet's ``allowed_unsafe_sysctls`` cannot be used (as Kubernetes' NewAllowlist), or None."""
    for p in patterns:
        if sysctl_namespace(p) is None:
            return f'sysctl "{p}" is not known to be namespaced'
    return None


def _allowed(name: str, patterns: tuple[str, ...]) -> bool:
    return any(name == p or (p.endswith("*") and name.startswith(p[:-1])) for p in map(sysctl_name, patterns))


def admission(pod: Pod, *, runtime: str, apparmor_enabled: bool,
              allowed_unsafe_sysctls: tuple[str, ...] = ()) -> tuple[str, str] | None:
    """The kubelet's pod admission (its AppArmor and sysctl admit handlers): None to run the pod,
    else (reason, message) of the refusal. AppArmor profiles are refused only where the runtime
    would apply them (docker) and the host has no AppArmor; the process runtime applies none
    and says so (``not_effective``). Sysctls: the safe ones and ``allowed_unsafe_sysctls``
    (names or ``prefix*``, namespaced ones only)."""
    if runtime == "docker" and _apparmor_in_use(pod) and not apparmor_enabled:
        return APPARMOR_REASON, "Cannot enforce AppArmor: AppArmor is not enabled on the host"
    for name in sysctls(pod):
        ns = SAFE_SYSCTLS.get(name)
        if ns is None and _allowed(name, allowed_unsafe_sysctls):
            ns = sysctl_namespace(name)
        if ns is None:
            return SYSCTL_REASON, f'forbidden sysctl: "{name}" not allowlisted'
        if (ns == "net" and pod.spec.hostNetwork) or (ns == "ipc" and pod.spec.hostIPC):
            return SYSCTL_REASON, f'forbidden sysctl: "{name}" not allowed with host {ns} enabled'
    return None


def rejected_status(pod: Pod, reason: str, message: str) -> PodStatus:
    """What the kubelet's rejectPod writes: Failed, the admit handler's reason, "Pod was rejected: ..."."""
    return msgspec.structs.replace(pod.status, phase="Failed", reason=reason, message=REJECTED + message)


def rejected(pod: Pod) -> bool:
    """A pod this node's kubelet refused: nothing of it runs, its status stays as written."""
    return pod.status.phase == "Failed" and pod.status.message.startswith(REJECTED)


def container_security(pod: Pod, c: Container, seccomp_dir: str) -> ContainerSecurity:
    """The container's securityContext over its pod's, as the runtime applies it. A Localhost
    seccomp profile is the file ``<seccomp_dir>/<localhostProfile>`` (kubelet's
    ``<root>/seccomp``); RuntimeDefault and unset are the runtime's default profile."""
    psc = pod.spec.securityContext or PodSecurityContext()
    sc = c.securityContext or SecurityContext()
    seccomp = sc.seccompProfile or psc.seccompProfile
    apparmor = apparmor_profile(pod, c)
    groups = [*psc.supplementalGroups, *([psc.fsGroup] if psc.fsGroup is not None else [])]
    caps = sc.capabilities or Capabilities()
    return ContainerSecurity(
        user=sc.runAsUser if sc.runAsUser is not None else psc.runAsUser,
        group=sc.runAsGroup if sc.runAsGroup is not None else psc.runAsGroup,
        supplemental_groups=tuple(dict.fromkeys(groups)),
        run_as_non_root=bool(sc.runAsNonRoot if sc.runAsNonRoot is not None else psc.runAsNonRoot),
        privileged=bool(sc.privileged),
        read_only_root=bool(sc.readOnlyRootFilesystem),
        no_new_privileges=sc.allowPrivilegeEscalation is False,
        cap_add=tuple(caps.add),
        cap_drop=tuple(caps.drop),
        seccomp=_profile(seccomp, lambda name: f"{seccomp_dir.rstrip('/')}/{name}"),
        apparmor=_profile(apparmor, lambda name: name),
    )


def _profile(p: SeccompProfile | AppArmorProfile | None, localhost: Callable[[str], str]) -> str | None:
    if p is None or p.type == "RuntimeDefault":
        return None
    if p.type == "Unconfined":
        return "unconfined"
    return localhost(p.localhostProfile or "")


_SECURITY_FIELDS = ("runAsUser", "runAsGroup", "runAsNonRoot", "privileged", "readOnlyRootFilesystem",
                    "allowPrivilegeEscalation", "capabilities", "procMount", "seccompProfile", "appArmorProfile")
_POD_SECURITY_FIELDS = ("runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "supplementalGroups",
                        "supplementalGroupsPolicy", "fsGroupChangePolicy", "sysctls", "seccompProfile",
                        "appArmorProfile")


def _set(obj: object, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if getattr(obj, n) not in (None, [], False)]


def not_effective(pod: Pod, runtime: str) -> tuple[str, ...]:
    """The fields of ``pod`` that cannot take effect on this runtime, each with why."""
    spec = pod.spec
    out: list[str] = []
    if spec.hostUsers is False:
        out.append("spec.hostUsers (false needs a user namespace, not set up here: the pod runs in the node's)")
    for group in ("initContainers", "containers"):
        for i, c in enumerate(getattr(spec, group)):
            if c.resizePolicy and runtime == "process":
                out.append(f"spec.{group}[{i}].resizePolicy (the process runtime applies no CPU or memory limits, "
                           "so there is nothing to resize in place)")
    psc = spec.securityContext
    if runtime == "process":
        fields = [f"spec.securityContext.{n}" for n in _set(psc, _POD_SECURITY_FIELDS)] if psc is not None else []
        for group in ("initContainers", "containers"):
            for i, c in enumerate(getattr(spec, group)):
                if c.securityContext is not None:
                    fields += [f"spec.{group}[{i}].securityContext.{n}" for n in _set(c.securityContext, _SECURITY_FIELDS)]
        if fields:
            out.append(", ".join(fields) + " (the process runtime runs containers as host processes with the "
                       "kubelet's user, privileges and filesystem)")
        if spec.shareProcessNamespace:
            out.append("spec.shareProcessNamespace (the containers see each other's processes through the node's "
                       "PID namespace, not one of the pod's own)")
        return tuple(out)
    for name, what in (("hostPID", "PID"), ("hostIPC", "IPC")):
        if getattr(spec, name):
            out.append(f"spec.{name} (the pod gets an {what} namespace of its own, not the node's)")
    if psc is not None:
        if psc.supplementalGroupsPolicy == "Strict":
            out.append("spec.securityContext.supplementalGroupsPolicy (Strict: Docker always adds the groups of "
                       "the image's /etc/group)")
        if psc.fsGroup is not None:
            out.append("spec.securityContext.fsGroup (a supplemental group of every container; volume ownership "
                       "is not changed)")
        if psc.fsGroupChangePolicy is not None:
            out.append("spec.securityContext.fsGroupChangePolicy (volume ownership is not changed)")
    for group in ("initContainers", "containers"):
        for i, c in enumerate(getattr(spec, group)):
            if c.securityContext is not None and c.securityContext.procMount == "Unmasked":
                out.append(f"spec.{group}[{i}].securityContext.procMount (Unmasked needs a user namespace)")
    return tuple(out)


MAX_EVENT_MESSAGE = 1024


def not_effective_event(pod: Pod, runtime: str) -> Event | None:
    """A Warning naming what ``not_effective`` finds (the kubelet sends it once per pod)."""
    fields = not_effective(pod, runtime)
    if not fields:
        return None
    message = f"not effective on the {runtime} runtime: " + ", ".join(fields)
    if len(message) > MAX_EVENT_MESSAGE:
        message = message[: MAX_EVENT_MESSAGE - 3] + "..."
    return Event("Warning", NOT_EFFECTIVE_REASON, message)
