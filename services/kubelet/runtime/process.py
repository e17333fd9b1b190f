"""The process runtime: containers as plain host processes, for nodes without a container engine.

Like Nomad's raw_exec there is no isolation: a pod's "sandbox" is a directory
``<state_dir>/pods/<uid>/``; a container is its command + args started by a small keeper
(``shim.py``) in its own process group, with the given env plus ``POD_IP``. Everything the
runtime knows lives in one JSON record per container attempt next to its log, so a new runtime
instance (a restarted kubelet) lists and adopts processes that are still alive; a pid only counts
as the container's when its start time in /proc matches the record (pids get reused).
See README.md for how images, ports, mounts and limits map onto this.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from . import crilog
from .base import ContainerConfig, ContainerInfo, ContainerState, PullPolicy, SandboxConfig
from .errors import ContainerCreateError, ContainerNotFound, ContainerRuntimeError, ExecTimeout
from .sessions import ProcessSession, start_process_session

SHIM = Path(__file__).with_name("shim.py")
_UID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ID = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*)_([a-z0-9]([-a-z0-9]*[a-z0-9])?)_([0-9]+)$")
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_POLL = 0.05


NETNS_DIR = "/run/netns"


def netns_name(pod_uid: str) -> str:
    return f"kyb-{pod_uid.replace('-', '')[:24]}"


ETC_NETNS_DIR = "/etc/netns"


def _in_netns(netns: str) -> list[str]:
    """The prefix that runs a command in the pod's network namespace. ``ip netns exec`` execs it
    (so the pid the keeper records is the command's) in a mount namespace of its own where
    ``/etc/netns/<name>/resolv.conf`` and ``hosts`` are bind-mounted over /etc's."""
    return ["ip", "netns", "exec", netns]


def _netns_of(argv: list[str]) -> str:
    """The namespace path a container's recorded argv runs in ("" for none)."""
    if argv[:3] == ["ip", "netns", "exec"] and len(argv) > 3:
        return f"{NETNS_DIR}/{argv[3]}"
    return next((a.split("=", 1)[1] for a in argv[:2] if a.startswith("--net=")), "")


def _install_etc(netns: str, cfg: SandboxConfig) -> None:
    """The pod's resolv.conf and hosts where ``ip netns exec`` finds them."""
    pairs = [(cfg.resolv_conf, "resolv.conf"), (cfg.hosts_file, "hosts")]
    if not any(src for src, _ in pairs):
        return
    target = Path(ETC_NETNS_DIR) / netns
    target.mkdir(parents=True, exist_ok=True)
    for src, name in pairs:
        if src:
            tmp = target / f".{name}.tmp"
            shutil.copyfile(src, tmp)
            tmp.replace(target / name)


async def _ip(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "ip", *args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise ContainerCreateError(f"ip {' '.join(args)}: {err.decode(errors='replace').strip()}")


class Sandbox(msgspec.Struct, kw_only=True):
    pod_uid: str
    pod_name: str
    namespace: str
    pod_ip: str
    hostname: str
    labels: dict[str, str] = {}
    netns: str = ""  # network "none": the pod's own network namespace (ip netns name), set up by CNI
    host_netns: str = ""  # network "host" on a node whose namespace is not ours: that namespace (a path)


class Record(msgspec.Struct, kw_only=True):
    """One container attempt; written by the runtime (pending) and then by its shim."""

    id: str
    pod_uid: str
    name: str
    attempt: int
    image: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    log_path: str
    memory_limit_bytes: int | None = None
    state: str = "pending"  # pending | running | exited
    shim_pid: int | None = None
    shim_start_ticks: int | None = None
    pid: int | None = None
    pgid: int | None = None
    start_ticks: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    error: str | None = None


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat fields from field 3 (state) on; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _alive(pid: int | None, ticks: int | None) -> bool:
    """The process still runs and is the one we started (zombies count as gone)."""
    if not pid:
        return False
    fields = _proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X") and (ticks is None or int(fields[19]) == ticks)


def _when(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


def _info(rec: Record) -> ContainerInfo:
    state: ContainerState
    exit_code, reason, message, finished = rec.exit_code, None, rec.error, rec.finished_at
    if rec.state == "pending":
        state = "created"
    elif rec.state == "running" and (
        _alive(rec.pid, rec.start_ticks) or _alive(rec.shim_pid, rec.shim_start_ticks)
    ):
        state = "running"  # (a live shim with a dead command is about to record the exit code)
    elif rec.state == "running":
        state, exit_code, reason = "exited", 137, "ContainerStatusUnknown"
        message = "the process and its keeper are gone without recording an exit code"
    else:
        state = "exited"
        reason = "ContainerCannotRun" if rec.error else ("Completed" if exit_code == 0 else "Error")
    return ContainerInfo(
        id=rec.id,
        pod_uid=rec.pod_uid,
        name=rec.name,
        attempt=rec.attempt,
        image=rec.image,
        state=state,
        exit_code=exit_code if state == "exited" else None,
        started_at=_when(rec.started_at),
        finished_at=_when(finished) if state == "exited" else None,
        oom_killed=False,
        reason=reason,
        message=message,
    )


class ProcessRuntime:
    """``ContainerRuntime`` with host processes; state under ``state_dir``."""

    name = "process"

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        enforce_memory_limit: bool = False,  # memory limit as RLIMIT_AS (breaks programs that reserve address space)
        base_env: dict[str, str]
        | None = None,  # env every container starts from; default: the host's PATH only
        host_netns: str | None = None,  # the node's network namespace when it is not ours (hostNetwork pods run there)
    ) -> None:
        self._host_netns = host_netns or ""
        self._root = Path(state_dir) / "pods"
        self._root.mkdir(parents=True, exist_ok=True)
        self._enforce_memory = enforce_memory_limit
        self._base_env = (
            dict(base_env) if base_env is not None else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        )

    # paths and records

    def _pod_dir(self, pod_uid: str) -> Path:
        if not _UID.match(pod_uid):
            raise ContainerCreateError(f"invalid pod uid {pod_uid!r}")
        return self._root / pod_uid

    def _record_path(self, container_id: str) -> Path:
        m = _ID.match(container_id)
        if not m:
            raise ContainerNotFound(f"no such container: {container_id}")
        return self._root / m.group(1) / m.group(2) / f"{m.group(4)}.json"

    def _read(self, container_id: str) -> Record:
        try:
            return msgspec.json.decode(self._record_path(container_id).read_bytes(), type=Record)
        except FileNotFoundError as e:
            raise ContainerNotFound(f"no such container: {container_id}") from e

    # images: there are none; the image name is only recorded

    async def ensure_image(self, image: str, policy: PullPolicy) -> None:
        return None

    # sandboxes

    async def create_sandbox(self, cfg: SandboxConfig) -> str:
        """The pod's directory and record; with network "none" also its own network namespace
        (``ip netns add kyb-<uid>``). Called again with a pod IP (once CNI gave one), it records it."""
        pod_dir = self._pod_dir(cfg.pod_uid)
        path = pod_dir / "sandbox.json"
        existing: Sandbox | None = None
        with contextlib.suppress(FileNotFoundError, msgspec.DecodeError):
            existing = msgspec.json.decode(path.read_bytes(), type=Sandbox)
        netns = existing.netns if existing is not None else ""
        if cfg.network == "none" and not netns:
            netns = netns_name(cfg.pod_uid)
        if netns and not os.path.exists(f"{NETNS_DIR}/{netns}"):
            await _ip("netns", "add", netns)
            await _ip("-n", netns, "link", "set", "lo", "up")
        if netns:
            try:
                _install_etc(netns, cfg)
            except OSError as e:
                raise ContainerCreateError(f"pod {cfg.pod_uid}: resolv.conf and hosts: {e}") from e
        host_netns = self._host_netns if cfg.network == "host" else ""
        if (existing is not None and (existing.pod_ip == cfg.pod_ip or not cfg.pod_ip) and existing.netns == netns
                and existing.host_netns == host_netns):
            return cfg.pod_uid
        pod_dir.mkdir(parents=True, exist_ok=True)
        sandbox = Sandbox(
            pod_uid=cfg.pod_uid,
            pod_name=cfg.pod_name,
            namespace=cfg.namespace,
            pod_ip=cfg.pod_ip or (existing.pod_ip if existing is not None else ""),
            hostname=cfg.hostname,
            labels=dict(cfg.labels),
            netns=netns,
            host_netns=host_netns,
        )
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.encode(sandbox))
        tmp.replace(path)
        return cfg.pod_uid

    def _sandbox(self, pod_uid: str) -> Sandbox | None:
        try:
            return msgspec.json.decode((self._pod_dir(pod_uid) / "sandbox.json").read_bytes(), type=Sandbox)
        except (FileNotFoundError, msgspec.DecodeError):
            return None

    async def sandbox_netns(self, pod_uid: str) -> str | None:
        sandbox = self._sandbox(pod_uid)
        if sandbox is None or not sandbox.netns or not os.path.exists(f"{NETNS_DIR}/{sandbox.netns}"):
            return None
        return f"{NETNS_DIR}/{sandbox.netns}"

    async def remove_sandbox(self, pod_uid: str) -> None:
        for info in await self.list(pod_uid):
            await self._kill(self._read(info.id), signal.SIGKILL)
        for info in await self.list(pod_uid):
            await self._wait_exited(info.id, 10.0)
        sandbox = self._sandbox(pod_uid)
        if sandbox is not None and sandbox.netns and os.path.exists(f"{NETNS_DIR}/{sandbox.netns}"):
            with contextlib.suppress(ContainerRuntimeError):
                await _ip("netns", "del", sandbox.netns)
        if sandbox is not None and sandbox.netns:
            shutil.rmtree(Path(ETC_NETNS_DIR) / sandbox.netns, ignore_errors=True)
        shutil.rmtree(self._pod_dir(pod_uid), ignore_errors=True)

    async def list_sandboxes(self) -> list[str]:
        return sorted(p.parent.name for p in self._root.glob("*/sandbox.json"))

    # containers

    async def create_and_start(self, sandbox_id: str, pod_uid: str, cfg: ContainerConfig) -> ContainerInfo:
        if sandbox_id != pod_uid:
            raise ContainerCreateError(f"sandbox {sandbox_id} does not belong to pod {pod_uid}")
        if not _NAME.match(cfg.name):
            raise ContainerCreateError(f"invalid container name {cfg.name!r}")
        pod_dir = self._pod_dir(pod_uid)
        try:
            sandbox = msgspec.json.decode((pod_dir / "sandbox.json").read_bytes(), type=Sandbox)
        except FileNotFoundError as e:
            raise ContainerCreateError(f"pod {pod_uid} has no sandbox") from e
        container_id = f"{pod_uid}_{cfg.name}_{cfg.attempt}"
        path = self._record_path(container_id)
        if path.exists():
            existing = self._read(container_id)
            if existing.state != "pending":
                return _info(existing)  # this attempt exists already: adopt it
        argv = [*cfg.command, *cfg.args]
        if not argv:
            raise ContainerCreateError(
                f"container {cfg.name!r}: the process runtime needs a command (there is no image)"
            )
        if sandbox.netns:
            argv = [*_in_netns(sandbox.netns), *argv]
        elif sandbox.host_netns:
            argv = ["nsenter", f"--net={sandbox.host_netns}", "--", *argv]
        container_dir = path.parent
        container_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._link_mounts(container_dir, cfg)
            cwd = self._working_dir(container_dir, cfg.working_dir)
        except OSError as e:
            raise ContainerCreateError(f"container {cfg.name!r}: {e}") from e
        env = {
            **self._base_env,
            "HOME": str(container_dir),
            "HOSTNAME": sandbox.hostname,
            "POD_IP": sandbox.pod_ip,
            **cfg.env,
        }
        record = Record(
            id=container_id,
            pod_uid=pod_uid,
            name=cfg.name,
            attempt=cfg.attempt,
            image=cfg.image,
            argv=argv,
            env=env,
            cwd=str(cwd),
            log_path=str(container_dir / f"{cfg.attempt}.log"),
            memory_limit_bytes=cfg.memory_limit_bytes if self._enforce_memory else None,
        )
        path.write_bytes(msgspec.json.encode(record))
        # The launcher's errors go to a file, not a pipe: the keeper it forks outlives it, and
        # some event loops (uvloop) wait for every inherited end of a pipe before they call
        # the launcher done.
        err_path = container_dir / f"{cfg.attempt}.launch.err"
        with open(err_path, "wb") as err_file:
            launcher = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                "-S",
                str(SHIM),
                str(path),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err_file,
            )
        await launcher.wait()
        try:
            err = err_path.read_bytes()
            err_path.unlink()
        except OSError:
            err = b""
        record = self._read(container_id)
        if launcher.returncode != 0 or record.state == "pending":
            raise ContainerCreateError(
                f"container {cfg.name!r}: the keeper failed: {err.decode(errors='replace').strip()}"
            )
        if record.error:
            self._forget(path)
            raise ContainerCreateError(f"container {cfg.name!r}: {record.error}")
        return _info(record)

    @staticmethod
    def _link_mounts(container_dir: Path, cfg: ContainerConfig) -> None:
        """Each mount becomes a symlink at <container dir>/<container path> to the host path."""
        for m in cfg.mounts:
            relative = os.path.normpath("/" + m.container_path).lstrip("/")
            if not relative:
                raise OSError(
                    errno.EINVAL, f"cannot mount over the container directory itself ({m.container_path!r})"
                )
            link = container_dir / relative
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink():
                link.unlink()
            link.symlink_to(m.host_path)

    @staticmethod
    def _working_dir(container_dir: Path, working_dir: str | None) -> Path:
        """An existing absolute host directory is used as is; anything else lives under the container dir."""
        if not working_dir:
            return container_dir
        if os.path.isabs(working_dir) and os.path.isdir(working_dir):
            return Path(working_dir)
        path = container_dir / working_dir.lstrip("/")
        path.mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def _forget(path: Path) -> None:
        path.unlink(missing_ok=True)
        path.with_suffix(".log").unlink(missing_ok=True)

    async def inspect(self, container_id: str) -> ContainerInfo:
        return _info(self._read(container_id))

    async def list(self, pod_uid: str | None = None) -> list[ContainerInfo]:
        pattern = f"{pod_uid if pod_uid else '*'}/*/[0-9]*.json"
        if pod_uid:
            self._pod_dir(pod_uid)  # validates
        infos = []
        for path in sorted(self._root.glob(pattern)):
            try:
                infos.append(_info(msgspec.json.decode(path.read_bytes(), type=Record)))
            except (FileNotFoundError, msgspec.DecodeError):
                continue  # removed or half-written meanwhile
        return infos

    async def _kill(self, rec: Record, sig: signal.Signals) -> None:
        if rec.state == "running" and rec.pgid and _alive(rec.pid, rec.start_ticks):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(rec.pgid, sig)

    async def _wait_exited(self, container_id: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while True:
            rec = self._read(container_id)
            if _info(rec).state != "running" and not _alive(rec.pid, rec.start_ticks):
                return True
            if time.monotonic() >= end:
                return False
            await asyncio.sleep(_POLL)

    async def stop(self, container_id: str, grace_seconds: float) -> None:
        await self._kill(self._read(container_id), signal.SIGTERM)
        if await self._wait_exited(container_id, max(0.0, grace_seconds)):
            return
        await self._kill(self._read(container_id), signal.SIGKILL)
        if not await self._wait_exited(container_id, 10.0):
            raise ContainerRuntimeError(f"container {container_id} did not exit after SIGKILL")

    async def remove(self, container_id: str) -> None:
        try:
            rec = self._read(container_id)
        except ContainerNotFound:
            return
        await self._kill(rec, signal.SIGKILL)
        await self._wait_exited(container_id, 10.0)
        self._forget(self._record_path(container_id))

    def _exec_argv(self, container_id: str, cmd: list[str]) -> tuple[Record, list[str]]:
        """The running container's record, and ``cmd`` as run in its network namespace."""
        rec = self._read(container_id)
        if _info(rec).state != "running":
            raise ContainerRuntimeError(f"container {container_id} is not running")
        netns = _netns_of(rec.argv)
        if netns.startswith(f"{NETNS_DIR}/"):
            cmd = [*_in_netns(netns.removeprefix(f"{NETNS_DIR}/")), *cmd]
        elif netns:
            cmd = ["nsenter", f"--net={netns}", "--", *cmd]
        return rec, cmd

    async def exec_session(self, container_id: str, cmd: list[str], *, stdin: bool, tty: bool) -> ProcessSession:
        rec, argv = self._exec_argv(container_id, cmd)
        try:
            return await start_process_session(argv, cwd=rec.cwd, env=dict(rec.env), stdin=stdin, tty=tty)
        except OSError as e:
            raise ContainerRuntimeError(f"cannot run {cmd[0]!r}: {e.strerror}") from e

    async def update_resources(self, container_id: str, *, cpu_limit_millis: int | None,
                               memory_limit_bytes: int | None) -> None:
        """Nothing to change: the process runtime applies no CPU or memory limits (README), so
        it never reports limits a resize would have to change (``limits_known`` is False)."""
        return None

    async def attach_session(self, container_id: str, *, stdin: bool, tty: bool) -> ProcessSession:
        raise ContainerRuntimeError("attaching to a container's stdin is not served by the process runtime "
                                    "(its keeper holds no terminal); kubectl attach without -i streams the output")

    async def exec(self, container_id: str, cmd: list[str], timeout: float,
                   stdin: bytes | None = None) -> tuple[int, bytes]:
        rec, cmd = self._exec_argv(container_id, cmd)
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                cwd=rec.cwd,
                env=rec.env,
                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as e:
            return (
                127 if e.errno == errno.ENOENT else 126
            ), f"cannot run {cmd[0]!r}: {e.strerror}\n".encode()
        try:
            out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout)
        except TimeoutError as e:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise ExecTimeout(f"{cmd!r} did not finish within {timeout}s") from e
        code = proc.returncode or 0
        return (128 - code if code < 0 else code), out

    async def logs(
        self, container_id: str, tail: int | None = None, follow: bool = False, *, timestamps: bool = False,
        since: float | None = None,
    ) -> AsyncIterator[bytes]:
        rec = self._read(container_id)
        try:
            f = open(rec.log_path, "rb")  # noqa: SIM115 (closed below; the generator outlives a with block)
        except FileNotFoundError:
            return
        reader = crilog.Reader(timestamps=timestamps, since=since)
        try:
            if tail is None:
                lines = reader.lines(f.read())
                if not follow:
                    lines += reader.rest()
            else:
                last: collections.deque[bytes] = collections.deque(maxlen=max(tail, 0))
                while block := f.read(1 << 20):
                    last.extend(reader.lines(block))
                if not follow:
                    last.extend(reader.rest())
                lines = list(last)
            if lines:
                yield b"".join(lines)
            while follow:
                block = f.read(65536)
                if block:
                    if lines := reader.lines(block):
                        yield b"".join(lines)
                    continue
                if (await self.inspect(container_id)).state != "running":
                    lines = reader.lines(f.read()) + reader.rest()
                    if lines:
                        yield b"".join(lines)
                    return
                await asyncio.sleep(0.1)
        finally:
            f.close()

    async def stats(self, container_id: str) -> tuple[int, int]:
        rec = self._read(container_id)
        if not (rec.pgid and _alive(rec.pid, rec.start_ticks)):
            return 0, 0
        ticks = rss = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            fields = _proc_stat(int(entry.name))
            if fields and int(fields[2]) == rec.pgid:
                ticks += int(fields[11]) + int(fields[12])
                rss += int(fields[21])
        return ticks * 1_000_000_000 // _CLK_TCK, rss * _PAGE

    async def close(self) -> None:
        return None
