"""A real `kyb up` in a test's own data directory, driven the way a user drives it: the `kyb`
command as a subprocess, the admin credentials found through ``KYB_DATA_DIR``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest

from kyb.natsd import free_port
from tests.cluster import wait_until


class Up:
    """One `kyb up` (process runtime unless told) in a data directory of the test's own."""

    def __init__(self, data: Path, *args: str, env: dict[str, str] | None = None, runtime: str = "process") -> None:
        self.data = data
        self.runtime = runtime
        # One node name per data directory: its pods get a pod range and kubelet state of their own
        # (a restart on the same directory is the same node and adopts them).
        self.node = f"up-{os.getpid()}-{zlib.crc32(str(data.resolve()).encode()) % 100_000}"
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.ingress_port = free_port()
        self.apiserver_port = free_port()
        # loopback unless a test asks for more: CNI mode would change the machine's own namespace
        network = [] if "--network" in args else ["--network", "loopback"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kyb.cli.main", "up", "--data-dir", str(data), "--nats-port", str(self.port),
             "--runtime", runtime, "--node-name", self.node, "--apiserver-port", str(self.apiserver_port),
             "-o", f"ingress_http_port={self.ingress_port}", "-o", f"ingress_https_port={free_port()}",
             "-o", f"dns_port={free_port()}", *network, *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        self.first = self.proc.stdout.readline().strip()
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        wait_until(lambda: self._alive() and self.kyb("get", "ns").returncode == 0, timeout=60, what="kyb up's api")

    def _alive(self) -> bool:
        assert self.proc.poll() is None, f"kyb up exited: {self.first}"
        return True

    @property
    def kubeconfig(self) -> Path:
        return self.data / "kubeconfig.yaml"

    @property
    def admin_creds(self) -> Path:
        return self.data / "auth" / "admin.creds"

    def creds(self, component: str = "admin") -> tuple[str, str]:
        from kyb.auth import read_creds

        return read_creds(self.data / "auth" / f"{component}.creds")

    def kyb(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KYB_NATS_")}
        env["KYB_DATA_DIR"] = str(self.data)
        return subprocess.run([sys.executable, "-m", "kyb.cli.main", "--nats", self.url, *args], input=input,
                              capture_output=True, text=True, timeout=60, env=env)

    def get(self, kind: str, name: str = "", ns: str = "default") -> dict | None:
        done = self.kyb("get", kind, *([name] if name else []), "-n", ns, "-o", "json")
        if done.returncode != 0:
            assert "NotFound" in done.stderr, done.stderr
            return None
        return json.loads(done.stdout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.runtime == "process":  # a stopping kubelet leaves its pods running: end them
            import asyncio

            from tests.cluster import remove_process_pods

            asyncio.run(remove_process_pods(self.node))


@pytest.fixture
def up_factory(tmp_path):
    started: list[Up] = []

    def make(*args: str, data: Path | None = None, env: dict[str, str] | None = None, runtime: str = "process") -> Up:
        up = Up(data or tmp_path / "state", *args, env=env, runtime=runtime)
        started.append(up)
        return up

    yield make
    for up in started:
        up.stop()
    for node in {up.node for up in started if up.runtime == "docker"}:
        import asyncio

        from tests.cluster import remove_containers

        asyncio.run(remove_containers(node))  # the kubelet leaves its pods running when it stops


