"""Pure: what starting a pod's sandbox and one of its containers takes, and what each outcome
brings — the runtime configuration built from the Pod spec, the span's attributes, the events a
user sees (``kubectl describe pod``) and the back-off of a failed start.
:class:`services.kubelet.sync.PodWorker` does the I/O in between.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import msgspec

from schemas.defaults import image_pull_policy
from schemas.pod import Container, LifecycleHandler, Pod
from schemas.quantity import cpu_millis, to_bytes
from services.kubelet.env import ConfigError
from services.kubelet.reconcile import Event, Failure, Kill, Settings, next_failure_backoff
from services.kubelet.runtime.base import (
    ContainerConfig,
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
                     mounts: tuple[Mount, ...], policy: PullPolicy, attempt: int) -> ContainerConfig:
    limits = c.resources.limits
    return ContainerConfig(
        name=c.name,
        image=c.image,
        command=command,
        args=args,
        env=env,
        working_dir=c.workingDir or None,
        mounts=mounts,
        cpu_limit_millis=cpu_millis(limits["cpu"]) if "cpu" in limits else None,
        memory_limit_bytes=to_bytes(limits["memory"]) if "memory" in limits else None,
        image_pull_policy=policy,
        attempt=attempt,
        stdin=c.stdin,
        stdin_once=c.stdinOnce,
        tty=c.tty,
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
