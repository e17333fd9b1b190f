"""`kyb up` runs a whole cluster on this machine, stops cleanly on Ctrl-C, and the next
`kyb up` finds the state it left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kyb.natsd import free_port

pytest.importorskip("services.api.service", reason="the api service is not there yet")


def kyb(url: str, *args: str, input: str | None = None, data: Path | None = None) -> subprocess.CompletedProcess[str]:
    # Like a user after `kyb up`: the admin credentials are found in the data directory.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KYB_NATS_")}
    if data is not None:
        env["KYB_DATA_DIR"] = str(data)
    return subprocess.run([sys.executable, "-m", "kyb.cli.main", "--nats", url, *args], input=input,
                          capture_output=True, text=True, timeout=60, env=env)


def start(data: Path, port: int) -> tuple[subprocess.Popen[str], str]:
    """Start `kyb up`; returns the process and its first line (service logs follow it)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "kyb.cli.main", "up", "--data-dir", str(data), "--nats-port", str(port),
         "--runtime", "process", "--apiserver-port", str(free_port()), "--network", "loopback"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    first = proc.stdout.readline().strip()
    # Keep reading, or the service logs would fill the pipe and stall the process.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, first


def wait_answering(url: str, proc: subprocess.Popen[str], data: Path, timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while kyb(url, "get", "configmaps", data=data).returncode != 0:
        assert proc.poll() is None, "kyb up exited early"
        assert time.monotonic() < deadline, "the api of kyb up never answered"
        time.sleep(0.2)


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def test_up_announces_itself_stops_on_ctrl_c_and_keeps_state(tmp_path: Path) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    data = tmp_path / "state"
    first, line = start(data, port)
    try:
        assert line == f"kybernetes is up: NATS at {url} (data in {data})"
        wait_answering(url, first, data)
        refused = kyb(url, "get", "cm")  # no credentials: refused with one line
        assert refused.returncode == 1 and refused.stderr.startswith("error:"), refused.stderr
        applied = kyb(url, "apply", "-f", "-", data=data,
                      input="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kept}\ndata: {colour: blue}\n")
        assert applied.stdout == "configmap/kept created\n", applied.stderr
    finally:
        assert stop(first) == 0
    assert kyb(url, "get", "cm", data=data).returncode == 1  # the bus went away with it

    second, _ = start(data, port)
    try:
        wait_answering(url, second, data)
        got = kyb(url, "get", "cm", "kept", "-o", "name", data=data)
        assert got.stdout == "configmap/kept\n"
    finally:
        assert stop(second) == 0
