"""The Docker runtime: pods as a sandbox container plus app containers sharing its network.

Each pod gets a sandbox ("pause") container that owns the network namespace and publishes
every pod port on the pod's own 127.x.y.z address; app containers join it with
``network_mode=container:<sandbox>``. Every container is labelled with the pod and container
identity, so ``list()`` rebuilds the kubelet's view from the engine alone and a restarted
kubelet adopts running containers instead of starting them again.

The pause image is built locally on first use (``docker import`` of a tar holding the host's
static busybox), so nothing is ever pulled for the sandbox. docker-py is blocking; every call
runs in a small thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import math
import os
import shutil
import signal
import socket
import tarfile
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import docker
import docker.errors
import structlog
from docker.utils import parse_repository_tag

from . import podcgroup
from .base import (
    LABEL_CONTAINER_ATTEMPT,
    LABEL_CONTAINER_NAME,
    LABEL_NODE,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    LABEL_SANDBOX,
    SANDBOX_CONTAINER_NAME,
    STDERR_STREAM,
    STDOUT_STREAM,
    ContainerConfig,
    ContainerInfo,
    ContainerSecurity,
    ContainerState,
    PullPolicy,
    SandboxConfig,
    container_name,
)
from .errors import (
    ContainerConfigError,
    ContainerCreateError,
    ContainerNotFound,
    ContainerRuntimeError,
    DockerAction,
    ExecTimeout,
    ImageNeverPullError,
    ImagePullError,
    from_docker,
)
from .sessions import OutputQueue

log = structlog.get_logger("kyb.kubelet.docker")

T = TypeVar("T")

PAUSE_IMAGE = "kybernetes/pause:local"
# Ends promptly on SIGTERM (PID 1 ignores signals it has no handler for).
PAUSE_COMMAND = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]
BUSYBOX_APPLETS = (
    "sh", "ash", "sleep", "cat", "echo", "ls", "env", "true", "false", "httpd", "nc", "wget",
    "head", "tail", "tr", "grep", "sed", "mkdir", "rm", "cp", "mv", "ps", "kill", "id", "pwd",
    "printf", "test", "[", "wc", "date", "hostname", "dd", "yes", "touch", "chmod", "ln", "uname",
)  # fmt: skip


def find_busybox() -> str | None:
    """The host's static busybox, if there is one."""
    for candidate in (shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def busybox_rootfs(busybox: str, applets: Iterable[str] = BUSYBOX_APPLETS) -> bytes:
    """A root filesystem tar: /bin/busybox, a symlink per applet, /tmp, /etc/passwd and /etc/group."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add_dir(path: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(path)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)

        def add_file(path: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "etc", "root", "www", "var", "proc", "sys", "dev"):
            add_dir(d)
        add_dir("tmp", 0o1777)
        with open(busybox, "rb") as f:
            add_file("bin/busybox", f.read(), 0o755)
        for applet in applets:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()


def import_busybox_image(client: docker.DockerClient, tag: str, cmd: list[str] | None = None) -> str:
    """Blocking: ``docker import`` a busybox rootfs as ``tag`` unless it exists; returns the image id."""
    try:
        return str(client.images.get(tag).id)
    except docker.errors.ImageNotFound:
        pass
    busybox = find_busybox()
    if busybox is None:
        raise ContainerCreateError(
            f"image {tag} is missing and no static busybox was found on this host to build it "
            "(install Debian's busybox-static)"
        )
    repository, image_tag = parse_repository_tag(tag)
    changes = [f"CMD {_json_list(cmd or ['/bin/sh'])}", "ENV PATH=/bin"]
    client.api.import_image_from_data(
        busybox_rootfs(busybox), repository=repository, tag=image_tag or "latest", changes=changes
    )
    return str(client.images.get(tag).id)


def _json_list(items: list[str]) -> str:
    import json

    return json.dumps(items)


def _parse_time(value: str | None) -> datetime | None:
    """Docker timestamps carry nanoseconds; the zero time means 'never'."""
    if not value or value.startswith("0001-01-01"):
        return None
    value = value.rstrip("Z")
    if "." in value:
        head, frac = value.split(".", 1)
        value = f"{head}.{frac[:6]}"
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


_STATE: dict[str, ContainerState] = {
    "created": "created",
    "running": "running",
    "paused": "running",
    "restarting": "running",
    "exited": "exited",
    "dead": "exited",
}


def container_info(attrs: dict[str, Any]) -> ContainerInfo:
    """Our view of a ``docker inspect`` document."""
    labels = attrs.get("Config", {}).get("Labels") or {}
    st = attrs.get("State") or {}
    host = attrs.get("HostConfig") or {}
    state = _STATE.get(str(st.get("Status", "")), "unknown")
    exit_code = int(st["ExitCode"]) if state == "exited" and st.get("ExitCode") is not None else None
    oom = bool(st.get("OOMKilled")) and state == "exited"
    reason: str | None = None
    if state == "exited":
        if oom:
            reason = "OOMKilled"
        elif st.get("Error"):
            reason = "ContainerCannotRun"
        else:
            reason = "Completed" if exit_code == 0 else "Error"
    return ContainerInfo(
        id=str(attrs["Id"]),
        pod_uid=labels.get(LABEL_POD_UID, ""),
        name=labels.get(LABEL_CONTAINER_NAME, ""),
        attempt=int(labels.get(LABEL_CONTAINER_ATTEMPT, "0") or 0),
        image=str(attrs.get("Config", {}).get("Image", "")),
        state=state,
        exit_code=exit_code,
        started_at=_parse_time(st.get("StartedAt")),
        finished_at=_parse_time(st.get("FinishedAt")) if state == "exited" else None,
        oom_killed=oom,
        reason=reason,
        message=st.get("Error") or None,
        image_id=attrs.get("Image"),
        cpu_limit_millis=(int(host.get("NanoCpus") or 0) // 1_000_000) or None,
        memory_limit_bytes=int(host.get("Memory") or 0) or None,
        limits_known=True,
    )


def port_bindings(cfg: SandboxConfig) -> dict[str, list[tuple[str, int]]]:
    """docker-py ``ports``: each container port on pod_ip, plus hostPort where asked."""
    bindings: dict[str, list[tuple[str, int]]] = {}
    for p in cfg.ports:
        key = f"{p.container_port}/{p.protocol.lower()}"
        targets = bindings.setdefault(key, [])
        for target in [(cfg.pod_ip, p.container_port)] + (
            [(p.host_ip or "0.0.0.0", p.host_port)] if p.host_port else []
        ):
            if target not in targets:
                targets.append(target)
    return bindings


def security_options(sec: ContainerSecurity, seccomp_profile: str | None) -> list[str]:
    """The engine's ``SecurityOpt`` for ``sec``; ``seccomp_profile`` is the JSON of a Localhost
    profile (the engine takes the profile itself, as the docker CLI sends it, not a path)."""
    opts = []
    if sec.seccomp == "unconfined":
        opts.append("seccomp=unconfined")
    elif sec.seccomp is not None and seccomp_profile is not None:
        opts.append(f"seccomp={seccomp_profile}")
    if sec.apparmor is not None:
        opts.append(f"apparmor={sec.apparmor}")
    if sec.no_new_privileges:
        opts.append("no-new-privileges:true")
    return opts


def user_spec(sec: ContainerSecurity, image_user: str) -> str | None:
    """``--user``: runAsUser[:runAsGroup]; a group alone goes with the image's user (root when unset)."""
    if sec.user is None and sec.group is None:
        return None
    user = str(sec.user) if sec.user is not None else (image_user.partition(":")[0] or "0")
    return f"{user}:{sec.group}" if sec.group is not None else user


def non_root_problem(sec: ContainerSecurity, image_user: str) -> str | None:
    """runAsNonRoot, as the kubelet's verifyRunAsNonRoot: why the container may not start, or None."""
    if not sec.run_as_non_root:
        return None
    if sec.user is not None:
        return "container's runAsUser breaks non-root policy" if sec.user == 0 else None
    name = image_user.partition(":")[0]
    if name in ("", "root", "0"):
        return "container has runAsNonRoot and image will run as root"
    if not name.isdigit():
        return f"container has runAsNonRoot and image has non-numeric user ({name}), cannot verify user is non-root"
    return None


def _read_profile(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        raise ContainerCreateError(f'cannot load seccomp profile "{path}": {e.strerror or e}') from e


class DockerRuntime:
    """``ContainerRuntime`` on a Docker engine through docker-py."""

    name = "docker"

    def __init__(
        self,
        client: docker.DockerClient | None = None,  # not closed by close() when given
        *,
        pause_image: str = PAUSE_IMAGE,
        pull_timeout: float = 300.0,  # an image pull taking longer than this fails with ErrImagePull
        workers: int = 16,  # threads for blocking docker-py calls (a followed log holds one)
        node_name: str | None = None,  # when set, only containers labelled for this node are seen
    ) -> None:
        self._node = node_name
        self._owns_client = client is None
        if client is None:
            try:
                client = docker.from_env()
            except Exception as e:
                raise from_docker(e, "engine") from e
        self._client = client
        self._api = client.api
        self._pause_image = pause_image
        self._pull_timeout = pull_timeout
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="docker-runtime")
        self._pause_lock = asyncio.Lock()
        self._cgroup_driver: str | None = None  # the engine's, asked once

    async def _call(self, action: DockerAction, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))
        except ContainerRuntimeError:
            raise
        except Exception as e:
            raise from_docker(e, action) from e

    # images

    async def _image_present(self, image: str) -> bool:
        try:
            await self._call("engine", self._api.inspect_image, image)
            return True
        except ContainerRuntimeError as e:
            if isinstance(e.__cause__, docker.errors.NotFound):
                return False
            raise

    async def ensure_image(self, image: str, policy: PullPolicy) -> None:
        if policy == "Never":
            if not await self._image_present(image):
                raise ImageNeverPullError(f'image "{image}" is not present with pull policy of Never')
            return
        if policy == "IfNotPresent" and await self._image_present(image):
            return
        repository, tag = parse_repository_tag(image)
        try:
            await asyncio.wait_for(
                self._call("pull", self._api.pull, repository, tag=tag or "latest"), self._pull_timeout
            )
        except TimeoutError as e:
            raise ImagePullError(f'pulling image "{image}" took longer than {self._pull_timeout}s') from e

    async def _ensure_pause_image(self) -> None:
        async with self._pause_lock:
            await self._call("create", import_busybox_image, self._client, self._pause_image, PAUSE_COMMAND)

    # sandboxes

    async def _find(self, *labels: str) -> list[dict[str, Any]]:
        wanted = [*labels, f"{LABEL_NODE}={self._node}"] if self._node else list(labels)
        return await self._call("engine", self._api.containers, all=True, filters={"label": wanted})

    def _node_label(self) -> dict[str, str]:
        return {LABEL_NODE: self._node} if self._node else {}

    async def create_sandbox(self, cfg: SandboxConfig) -> str:
        for c in await self._find(f"{LABEL_POD_UID}={cfg.pod_uid}", f"{LABEL_SANDBOX}=true"):
            if c.get("State") == "running":
                return str(c["Id"])
            await self._call("container", self._api.remove_container, c["Id"], force=True)
        await self._ensure_pause_image()
        labels = {
            **cfg.labels,
            LABEL_POD_UID: cfg.pod_uid,
            LABEL_POD_NAME: cfg.pod_name,
            LABEL_POD_NAMESPACE: cfg.namespace,
            LABEL_CONTAINER_NAME: SANDBOX_CONTAINER_NAME,
            LABEL_CONTAINER_ATTEMPT: "0",
            LABEL_SANDBOX: "true",
            **self._node_label(),
        }
        name = container_name(cfg.namespace, cfg.pod_name, SANDBOX_CONTAINER_NAME, 0, cfg.pod_uid)
        bindings = port_bindings(cfg) if cfg.network == "loopback" else {}
        network_mode = {"none": "none", "host": "host"}.get(cfg.network)
        host_config = self._api.create_host_config(
            port_bindings=bindings, dns=list(cfg.dns_servers) or None, network_mode=network_mode,
            ipc_mode="shareable",  # the app containers join it (one IPC namespace per pod)
            sysctls=dict(cfg.sysctls) or None,
            cgroup_parent=await self._pod_cgroup(cfg),
        )
        try:
            created = await self._call(
                "create",
                self._api.create_container,
                image=self._pause_image,
                name=name,
                hostname=None if cfg.network == "host" else cfg.hostname[:63],
                labels=labels,
                ports=[(int(key.split("/")[0]), key.split("/")[1]) for key in bindings],
                host_config=host_config,
            )
            await self._call("create", self._api.start, created["Id"])
        except ContainerCreateError:
            await self._call("container", self._remove_quietly, name)
            raise
        return str(created["Id"])

    async def _pod_cgroup(self, cfg: SandboxConfig) -> str | None:
        """The pod's own cgroup, holding its pod-level limits (None when it has none, or when the
        engine's cgroup driver is not cgroupfs or the host refuses: then they are not enforced)."""
        if cfg.pod_cpu_limit_millis is None and cfg.pod_memory_limit_bytes is None:
            return None
        if self._cgroup_driver is None:
            info = await self._call("engine", self._api.info)
            self._cgroup_driver = str(info.get("CgroupDriver") or "")
        if self._cgroup_driver != "cgroupfs":
            log.warning("pod-level limits not enforced: the engine's cgroup driver is not cgroupfs",
                        pod=f"{cfg.namespace}/{cfg.pod_name}", driver=self._cgroup_driver)
            return None
        try:
            return await asyncio.to_thread(podcgroup.ensure, cfg.pod_uid, cfg.pod_cpu_limit_millis,
                                           cfg.pod_memory_limit_bytes)
        except podcgroup.CgroupUnavailable as e:
            log.warning("pod-level limits not enforced", pod=f"{cfg.namespace}/{cfg.pod_name}", why=str(e))
            return None

    def _remove_quietly(self, ref: str) -> None:
        try:
            self._api.remove_container(ref, force=True, v=True)
        except docker.errors.NotFound:
            pass

    async def remove_sandbox(self, pod_uid: str) -> None:
        found = await self._find(f"{LABEL_POD_UID}={pod_uid}")
        # app containers first: they live in the sandbox's network namespace
        found.sort(key=lambda c: (c.get("Labels") or {}).get(LABEL_SANDBOX) == "true")
        for c in found:
            await self._call("container", self._remove_quietly, c["Id"])
        await asyncio.to_thread(podcgroup.remove, pod_uid)  # its own cgroup, when it had one

    async def sandbox_netns(self, pod_uid: str) -> str | None:
        """``/proc/<pid>/ns/net`` of the pod's running sandbox (what CNI configures)."""
        for c in await self._find(f"{LABEL_POD_UID}={pod_uid}", f"{LABEL_SANDBOX}=true"):
            if c.get("State") != "running":
                continue
            try:
                attrs = await self._call("container", self._api.inspect_container, c["Id"])
            except ContainerNotFound:
                continue
            pid = int((attrs.get("State") or {}).get("Pid") or 0)
            if pid > 0 and os.path.exists(f"/proc/{pid}/ns/net"):
                return f"/proc/{pid}/ns/net"
        return None

    async def list_sandboxes(self) -> list[str]:
        found = await self._find(f"{LABEL_SANDBOX}=true")
        return sorted({(c.get("Labels") or {}).get(LABEL_POD_UID, "") for c in found} - {""})

    # containers

    async def create_and_start(self, sandbox_id: str, pod_uid: str, cfg: ContainerConfig) -> ContainerInfo:
        sandbox = await self._call("container", self._api.inspect_container, sandbox_id)
        sandbox_labels = sandbox["Config"].get("Labels") or {}
        if sandbox_labels.get(LABEL_POD_UID) != pod_uid:
            raise ContainerCreateError(f"sandbox {sandbox_id[:12]} does not belong to pod {pod_uid}")
        namespace, pod_name = (
            sandbox_labels.get(LABEL_POD_NAMESPACE, ""),
            sandbox_labels.get(LABEL_POD_NAME, ""),
        )
        name = container_name(namespace, pod_name, cfg.name, cfg.attempt, pod_uid)
        sec = cfg.security
        image_user = ""
        if sec.run_as_non_root or (sec.group is not None and sec.user is None):
            image = await self._call("create", self._api.inspect_image, cfg.image)
            image_user = str((image.get("Config") or {}).get("User") or "")
        problem = non_root_problem(sec, image_user)
        if problem is not None:
            raise ContainerConfigError(f"{problem} (pod: \"{pod_name}_{namespace}({pod_uid})\", container: {cfg.name})")
        seccomp_profile = None
        if sec.seccomp not in (None, "unconfined"):
            seccomp_profile = await asyncio.to_thread(_read_profile, sec.seccomp)
        shareable = (sandbox.get("HostConfig") or {}).get("IpcMode") == "shareable"
        pod_cgroup = (sandbox.get("HostConfig") or {}).get("CgroupParent") or None  # the pod's limits
        labels = {
            LABEL_POD_UID: pod_uid,
            LABEL_POD_NAME: pod_name,
            LABEL_POD_NAMESPACE: namespace,
            LABEL_CONTAINER_NAME: cfg.name,
            LABEL_CONTAINER_ATTEMPT: str(cfg.attempt),
            LABEL_SANDBOX: "false",
            **self._node_label(),
        }
        host_config = self._api.create_host_config(
            network_mode=f"container:{sandbox_id}",
            binds=[f"{m.host_path}:{m.container_path}:{'ro' if m.read_only else 'rw'}" for m in cfg.mounts],
            nano_cpus=cfg.cpu_limit_millis * 1_000_000 if cfg.cpu_limit_millis else None,
            mem_limit=cfg.memory_limit_bytes,
            memswap_limit=cfg.memory_limit_bytes,
            ipc_mode=f"container:{sandbox_id}" if shareable else None,
            pid_mode=f"container:{sandbox_id}" if cfg.share_pid else None,
            privileged=sec.privileged,
            read_only=sec.read_only_root or None,
            cap_add=list(sec.cap_add) or None,
            cap_drop=list(sec.cap_drop) or None,
            group_add=[str(g) for g in sec.supplemental_groups] or None,
            security_opt=security_options(sec, seccomp_profile) or None,
            cgroup_parent=pod_cgroup,
        )
        try:
            config = self._api.create_container_config(
                image=cfg.image,
                entrypoint=list(cfg.command) or None,
                command=list(cfg.args) or None,
                environment=[f"{k}={v}" for k, v in cfg.env.items()],
                working_dir=cfg.working_dir or None,
                labels=labels,
                host_config=host_config,
                user=user_spec(sec, image_user),
                stdin_open=cfg.stdin,
                tty=cfg.tty,
            )
            config["StdinOnce"] = cfg.stdin and cfg.stdin_once  # docker-py would close stdin after any attach
            created = await self._call("create", self._api.create_container_from_config, config, name=name)
            container_id = str(created["Id"])
        except ContainerCreateError as e:
            if not isinstance(e.__cause__, docker.errors.APIError) or e.__cause__.status_code != 409:
                raise
            # this attempt exists already (a retry after a crash): adopt it
            container_id = str((await self._call("container", self._api.inspect_container, name))["Id"])
        info = await self.inspect(container_id)
        if info.state == "created":
            try:
                await self._call("create", self._api.start, container_id)
            except ContainerCreateError:
                await self._call("container", self._remove_quietly, container_id)
                raise
            info = await self.inspect(container_id)
        return info

    async def inspect(self, container_id: str) -> ContainerInfo:
        return container_info(await self._call("container", self._api.inspect_container, container_id))

    async def list(self, pod_uid: str | None = None) -> list[ContainerInfo]:
        labels = [f"{LABEL_SANDBOX}=false"] + ([f"{LABEL_POD_UID}={pod_uid}"] if pod_uid else [])
        infos = []
        for c in await self._find(*labels):
            try:
                infos.append(await self.inspect(str(c["Id"])))
            except ContainerNotFound:
                continue  # removed between the listing and the inspection
        return infos

    async def stop(self, container_id: str, grace_seconds: float) -> None:
        grace = max(0, math.ceil(grace_seconds))
        await self._call("container", self._api.stop, container_id, timeout=grace)
        await self._call("container", self._api.wait, container_id, timeout=grace + 60)

    async def remove(self, container_id: str) -> None:
        await self._call("container", self._remove_quietly, container_id)

    async def exec(self, container_id: str, cmd: list[str], timeout: float,
                   stdin: bytes | None = None) -> tuple[int, bytes]:
        created = await self._call(
            "container", self._api.exec_create, container_id, cmd, stdout=True, stderr=True, stdin=stdin is not None
        )
        exec_id = created["Id"]
        start = self._api.exec_start if stdin is None else functools.partial(self._exec_with_input, data=stdin)
        try:
            output = await asyncio.wait_for(self._call("container", start, exec_id), timeout)
        except TimeoutError as e:
            await self._kill_exec(exec_id)
            raise ExecTimeout(f"{cmd!r} did not finish within {timeout}s") from e
        result = await self._call("container", self._api.exec_inspect, exec_id)
        return int(result.get("ExitCode") or 0), bytes(output or b"")

    async def exec_session(self, container_id: str, cmd: list[str], *, stdin: bool, tty: bool) -> DockerSession:
        created = await self._call("container", self._api.exec_create, container_id, cmd, stdout=True, stderr=True,
                                   stdin=stdin, tty=tty)
        exec_id = created["Id"]
        sock = await self._call("container", self._api.exec_start, exec_id, socket=True, tty=tty)
        return DockerSession(self, exec_id, sock, tty)

    async def update_resources(self, container_id: str, *, cpu_limit_millis: int | None,
                               memory_limit_bytes: int | None) -> None:
        """``docker update`` of the container's NanoCpus and Memory (swap kept at twice the
        memory, as the engine sets it at create); a limit given as None is left as it is (the
        engine cannot remove one from a running container: the kubelet restarts it for that)."""
        body: dict[str, int] = {}
        if cpu_limit_millis is not None:
            body["NanoCpus"] = cpu_limit_millis * 1_000_000
        if memory_limit_bytes is not None:
            body |= {"Memory": memory_limit_bytes, "MemorySwap": 2 * memory_limit_bytes}
        if not body:
            return
        url = self._api._url("/containers/{0}/update", container_id)
        response = await self._call("container", self._api._post_json, url, data=body)
        await self._call("container", self._api._raise_for_status, response)

    async def attach_session(self, container_id: str, *, stdin: bool, tty: bool) -> DockerSession:
        config = (await self._call("container", self._api.inspect_container, container_id)).get("Config") or {}
        if stdin and not config.get("OpenStdin"):
            raise ContainerRuntimeError("the container was not started with stdin: true, so it has no stdin to attach to")
        params = {"stdout": 1, "stderr": 1, "stream": 1, "stdin": 1 if stdin else 0}
        sock = await self._call("container", self._api.attach_socket, container_id, params=params)
        return DockerSession(self, "", sock, bool(config.get("Tty")), container_id=container_id)

    def _exec_with_input(self, exec_id: str, data: bytes) -> bytes:
        """An exec that reads ``data`` on its stdin, then end of file (the engine's attach socket)."""
        from docker.utils.socket import frames_iter

        sock = self._api.exec_start(exec_id, socket=True)
        raw = getattr(sock, "_sock", sock)
        try:
            raw.sendall(data)
            raw.shutdown(socket.SHUT_WR)
            return b"".join(chunk for _, chunk in frames_iter(sock, tty=False))
        finally:
            sock.close()

    async def _kill_exec(self, exec_id: str) -> None:
        """Best effort: the engine has no API to end an exec; its pid is a host pid when local."""
        try:
            pid = int((await self._call("container", self._api.exec_inspect, exec_id)).get("Pid") or 0)
            if pid > 0:
                os.kill(pid, signal.SIGKILL)
        except (ContainerRuntimeError, OSError):
            pass

    async def logs(
        self, container_id: str, tail: int | None = None, follow: bool = False, *, timestamps: bool = False,
        since: float | None = None,
    ) -> AsyncIterator[bytes]:
        extra = {"since": since} if since is not None else {}  # the engine keeps a time per line
        stream = await self._call(
            "container",
            self._api.logs,
            container_id,
            stdout=True,
            stderr=True,
            stream=True,
            follow=follow,
            timestamps=timestamps,
            tail="all" if tail is None else tail,
            **extra,
        )
        chunks = iter(stream)
        try:
            while True:
                chunk = await self._call("container", next, chunks, None)
                if chunk is None:
                    return
                yield chunk
        finally:
            stream.close()

    async def stats(self, container_id: str) -> tuple[int, int]:
        s = await self._call("container", self._api.stats, container_id, stream=False, one_shot=True)
        cpu = int(((s.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage") or 0)
        mem = s.get("memory_stats") or {}
        detail = mem.get("stats") or {}
        inactive = detail.get("total_inactive_file", detail.get("inactive_file", 0)) or 0
        usage = int(mem.get("usage") or 0)
        return cpu, usage - int(inactive) if usage > int(inactive) else usage

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._owns_client:
            self._client.close()


KILL_WAIT = 10.0  # seconds a kill waits for the engine to report the exec's pid


class DockerSession:
    """An exec, or an attach to a container's main process, on the engine's attach socket: a
    thread reads its frames (stdout and stderr apart, one raw stream with a terminal) into an
    :class:`OutputQueue`; stdin is written to the socket."""

    def __init__(self, runtime: DockerRuntime, exec_id: str, sock: Any, tty: bool, container_id: str = "") -> None:
        self._runtime = runtime
        self._exec_id = exec_id  # "" for an attach to the container's main process
        self._container_id = container_id
        self._sock = sock
        self._raw = getattr(sock, "_sock", sock)
        self._stdin_open = True
        self._out = OutputQueue(1)
        self._loop = asyncio.get_running_loop()
        self._reader = threading.Thread(target=self._read_frames, args=(tty,), name=f"exec-{exec_id[:12]}",
                                        daemon=True)
        self._reader.start()

    def _read_frames(self, tty: bool) -> None:
        from docker.utils.socket import frames_iter

        try:
            for stream, chunk in frames_iter(self._sock, tty=tty):
                if chunk:
                    self._loop.call_soon_threadsafe(self._out.put, STDERR_STREAM if stream == 2 else STDOUT_STREAM,
                                                    bytes(chunk))
        except (OSError, ValueError):
            pass  # the socket closed under us (kill)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is gone when the kubelet stops
                self._loop.call_soon_threadsafe(self._out.ended)

    async def output(self) -> tuple[int, bytes] | None:
        return await self._out.get()

    async def write(self, data: bytes) -> None:
        if not self._stdin_open:
            return
        try:
            await asyncio.to_thread(self._raw.sendall, data)
        except OSError:
            self._stdin_open = False

    async def close_stdin(self) -> None:
        if self._stdin_open:
            self._stdin_open = False
            with contextlib.suppress(OSError):
                self._raw.shutdown(socket.SHUT_WR)

    async def resize(self, width: int, height: int) -> None:
        if width > 0 and height > 0:
            api = self._runtime._api
            target = (api.exec_resize, self._exec_id) if self._exec_id else (api.resize, self._container_id)
            with contextlib.suppress(ContainerRuntimeError):
                await self._runtime._call("container", target[0], target[1], height=height, width=width)

    async def wait(self) -> int:
        await asyncio.to_thread(self._reader.join)
        if not self._exec_id:  # attached: the output ended with the container, or we detached
            with contextlib.suppress(OSError):
                self._sock.close()
            state = (await self._runtime._call("container", self._runtime._api.inspect_container,
                                                self._container_id)).get("State") or {}
            return int(state.get("ExitCode") or 0)
        while True:
            result = await self._runtime._call("container", self._runtime._api.exec_inspect, self._exec_id)
            if not result.get("Running"):
                with contextlib.suppress(OSError):
                    self._sock.close()
                return int(result.get("ExitCode") or 0)
            await asyncio.sleep(0.05)  # the output ended a moment before the engine records the exit

    async def kill(self) -> None:
        if not self._exec_id:  # an attach only detaches: the container goes on
            with contextlib.suppress(OSError):
                self._raw.shutdown(socket.SHUT_RDWR)
            return
        # The engine reports the exec's pid a moment after it started; it has no call to end an exec.
        deadline = asyncio.get_running_loop().time() + KILL_WAIT
        while asyncio.get_running_loop().time() < deadline:
            try:
                info = await self._runtime._call("container", self._runtime._api.exec_inspect, self._exec_id)
            except ContainerRuntimeError:
                break
            pid = int(info.get("Pid") or 0)
            if not info.get("Running"):
                break
            if pid > 0:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                break
            await asyncio.sleep(0.05)
        with contextlib.suppress(OSError):
            self._raw.shutdown(socket.SHUT_RDWR)
