"""The seam between the kubelet and whatever runs its containers.

The kubelet translates Pod specs into these plain, frozen config types and drives a
``ContainerRuntime``; it never talks to Docker or spawns processes itself. Nothing here
knows about the ``schemas`` package, so a runtime can be exercised on its own.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

PullPolicy = Literal["Always", "IfNotPresent", "Never"]
# How a sandbox is networked: "loopback" publishes its ports on its own 127.x address;
# "none" is an empty network namespace that the kubelet configures through CNI; "host" shares the node's.
SandboxNetwork = Literal["loopback", "none", "host"]
ContainerState = Literal["created", "running", "exited", "unknown"]

# Labels every container (sandbox and app) carries; a restarted kubelet finds its pods by them.
LABEL_POD_UID = "io.kybernetes.pod.uid"
LABEL_POD_NAME = "io.kybernetes.pod.name"
LABEL_POD_NAMESPACE = "io.kybernetes.pod.namespace"
LABEL_CONTAINER_NAME = "io.kybernetes.container.name"
LABEL_CONTAINER_ATTEMPT = "io.kybernetes.container.attempt"
LABEL_SANDBOX = "io.kybernetes.sandbox"
LABEL_NODE = "io.kybernetes.node"  # the kubelet (node) that owns the container

SANDBOX_CONTAINER_NAME = "POD"


@dataclass(frozen=True, slots=True)
class PortMapping:
    container_port: int
    protocol: str = "TCP"  # TCP | UDP
    host_port: int | None = None  # also published on host_ip:host_port when set (Kubernetes hostPort)
    host_ip: str | None = None  # address for host_port; None means every address, like Kubernetes


@dataclass(frozen=True, slots=True)
class Mount:
    host_path: str
    container_path: str
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class ContainerSecurity:
    """What a container's securityContext (over its pod's) asks of the runtime."""

    user: int | None = None  # runAsUser (None: the image's user)
    group: int | None = None  # runAsGroup (None: the user's primary group)
    supplemental_groups: tuple[int, ...] = ()  # supplementalGroups, then fsGroup
    run_as_non_root: bool = False  # refuse to start it when it would run as uid 0
    privileged: bool = False
    read_only_root: bool = False
    no_new_privileges: bool = False  # allowPrivilegeEscalation: false
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    seccomp: str | None = None  # None: the runtime's default; "unconfined"; else the path of a profile file
    apparmor: str | None = None  # None: the runtime's default; "unconfined"; else a profile loaded on the node


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    pod_uid: str
    pod_name: str
    namespace: str
    pod_ip: str  # loopback: an address in 127.0.0.0/8 owned by this pod (every port is published on it); else the CNI address or ""
    hostname: str
    ports: tuple[PortMapping, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    dns_servers: tuple[str, ...] = ()
    network: SandboxNetwork = "loopback"
    resolv_conf: str | None = None  # a host file the pod sees as /etc/resolv.conf (None: the runtime's own)
    hosts_file: str | None = None  # a host file the pod sees as /etc/hosts (None: the runtime's own)
    sysctls: Mapping[str, str] = field(default_factory=dict)  # the pod's (namespaced: net.*, IPC)
    # pod-level limits (spec.resources.limits): a cgroup of the pod's own bounds all its containers
    pod_cpu_limit_millis: int | None = None
    pod_memory_limit_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class ContainerConfig:
    name: str
    image: str
    command: tuple[str, ...] = ()  # replaces the image ENTRYPOINT (Kubernetes `command`)
    args: tuple[str, ...] = ()  # replaces the image CMD (Kubernetes `args`)
    env: Mapping[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    mounts: tuple[Mount, ...] = ()
    cpu_limit_millis: int | None = None
    memory_limit_bytes: int | None = None
    image_pull_policy: PullPolicy = "IfNotPresent"
    attempt: int = 0  # restart count; part of the container's identity
    stdin: bool = False  # its stdin stays open for an attach (Kubernetes `stdin`)
    stdin_once: bool = False  # stdin closes when the first attach detaches (`stdinOnce`)
    tty: bool = False  # it runs on a terminal of its own (`tty`)
    security: ContainerSecurity = ContainerSecurity()
    share_pid: bool = False  # in the sandbox's PID namespace (shareProcessNamespace)


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    id: str
    pod_uid: str
    name: str
    attempt: int
    image: str
    state: ContainerState
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    oom_killed: bool = False
    reason: str | None = None  # OOMKilled | Completed | Error | ContainerCannotRun | ContainerStatusUnknown
    message: str | None = None
    image_id: str | None = None
    # The limits the runtime applies now (``limits_known``: the runtime reports them, and can
    # change them in place; see ``ContainerRuntime.update_resources``).
    cpu_limit_millis: int | None = None
    memory_limit_bytes: int | None = None
    limits_known: bool = False


@runtime_checkable
class ContainerRuntime(Protocol):
    """What the kubelet needs from a container engine. Every method may raise the
    errors of ``services.kubelet.runtime.errors`` and nothing else."""

    name: str  # "docker" | "process"; the scheme of status.containerStatuses[].containerID

    async def ensure_image(self, image: str, policy: PullPolicy) -> None:
        """Make ``image`` present as the policy says (ImagePullError, ImageNeverPullError)."""
        ...

    async def create_sandbox(self, cfg: SandboxConfig) -> str:
        """Create the pod's sandbox; returns the existing one when this pod uid has a live one."""
        ...

    async def remove_sandbox(self, pod_uid: str) -> None:
        """Kill and remove every container of the pod and its sandbox. Idempotent."""
        ...

    async def create_and_start(self, sandbox_id: str, pod_uid: str, cfg: ContainerConfig) -> ContainerInfo:
        """Create and start one app container in the sandbox (call ensure_image first)."""
        ...

    async def stop(self, container_id: str, grace_seconds: float) -> None:
        """SIGTERM, then SIGKILL once ``grace_seconds`` have passed; returns when it has exited."""
        ...

    async def remove(self, container_id: str) -> None:
        """Remove a container (killing it if needed). Removing a missing container is a no-op."""
        ...

    async def list(self, pod_uid: str | None = None) -> list[ContainerInfo]:
        """App containers (not sandboxes) as the engine knows them, running or not."""
        ...

    async def inspect(self, container_id: str) -> ContainerInfo:
        """One container's current state (ContainerNotFound)."""
        ...

    async def exec(self, container_id: str, cmd: builtins.list[str], timeout: float,
                   stdin: bytes | None = None) -> tuple[int, bytes]:
        """Run ``cmd`` inside the container, reading ``stdin`` (None: nothing, closed); returns
        (exit code, stdout+stderr) (ExecTimeout)."""
        ...

    async def exec_session(self, container_id: str, cmd: builtins.list[str], *, stdin: bool,
                           tty: bool) -> ExecSession:
        """Start ``cmd`` inside the container and hand back the live session (kubectl exec -it):
        its stdin open when ``stdin``, a terminal of its own when ``tty`` (ContainerNotFound,
        ContainerRuntimeError)."""
        ...

    async def update_resources(self, container_id: str, *, cpu_limit_millis: int | None,
                               memory_limit_bytes: int | None) -> None:
        """Change a running container's CPU and memory limits in place (an in-place resize);
        ContainerRuntimeError where the runtime cannot."""
        ...

    async def attach_session(self, container_id: str, *, stdin: bool, tty: bool) -> ExecSession:
        """Attach to the container's main process (kubectl attach -i, kubectl run -it): its output
        from now on, and its stdin when the container was started with ``stdin``. ``kill`` only
        detaches; ``wait`` is the container's exit code once it ended. ContainerRuntimeError where
        the runtime cannot attach."""
        ...

    def logs(self, container_id: str, tail: int | None = None, follow: bool = False, *, timestamps: bool = False,
             since: float | None = None) -> AsyncIterator[bytes]:
        """The container's output (the last ``tail`` lines); with ``follow`` it keeps streaming
        until the container exits. ``timestamps``: each line after the time it was written
        (RFC 3339, nanoseconds, UTC) and a space; ``since`` (a UNIX time): only the lines
        written from then on."""
        ...

    async def stats(self, container_id: str) -> tuple[int, int]:
        """(cumulative CPU time in nanoseconds, memory in use in bytes)."""
        ...

    async def list_sandboxes(self) -> builtins.list[str]:
        """Pod uids that have a sandbox."""
        ...

    async def close(self) -> None: ...


STDOUT_STREAM, STDERR_STREAM = 1, 2


class ExecSession(Protocol):
    """A command running inside a container, driven while it runs: what it reads, what it writes
    (stdout and stderr apart; one stream with a terminal), the terminal's size, its exit."""

    async def output(self) -> tuple[int, bytes] | None:
        """The next chunk it wrote, as (STDOUT_STREAM | STDERR_STREAM, bytes); None once it closed both."""
        ...

    async def write(self, data: bytes) -> None:
        """Send ``data`` to its stdin (ignored once stdin is closed or the command ended)."""
        ...

    async def close_stdin(self) -> None: ...

    async def resize(self, width: int, height: int) -> None:
        """Set its terminal's size in columns and rows (no-op without a terminal)."""
        ...

    async def wait(self) -> int:
        """Its exit code, once it ended."""
        ...

    async def kill(self) -> None:
        """End it (SIGKILL), as when the client goes away. Idempotent."""
        ...


@runtime_checkable
class SandboxNetns(Protocol):
    """A runtime whose sandboxes (network "none") have a network namespace CNI can configure."""

    async def sandbox_netns(self, pod_uid: str) -> str | None:
        """The path of the live sandbox's network namespace, None when the pod has no live sandbox."""
        ...


def container_name(namespace: str, pod_name: str, container: str, attempt: int, pod_uid: str) -> str:
    """The engine-side name: ``kyb_<ns>_<pod>_<container>_<attempt>_<uid8>``."""
    return f"kyb_{namespace}_{pod_name}_{container}_{attempt}_{pod_uid.replace('-', '')[:8]}"
