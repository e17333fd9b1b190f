"""`kyb up` survives its own kill -9 (what the kernel's OOM killer does): its nats-server goes
with it instead of holding the port and the store, and the next `kyb up` on the same data
directory starts, finds the state and the pods still running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kyb.natsd import NatsServer, free_port, stop_orphan
from tests.cluster import wait_until

pytestmark = pytest.mark.timeout(180)

POD = """
apiVersion: v1
kind: Pod
metadata: {name: survivor}
spec:
  containers:
  - name: main
    image: busybox
    command: [sleep, "3600"]
"""


def _nats_servers_on(store: Path) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"nats-server") and str(store).encode() in args:
            out.append(int(entry.name))
    return out


def test_kill_9_of_kyb_up_then_up_again_finds_state_and_running_pods(up_factory, tmp_path) -> None:
    up = up_factory(data=tmp_path / "state")
    store = up.data / "jetstream"
    assert up.kyb("apply", "-f", "-", input=POD).returncode == 0

    def running() -> dict | None:
        pod = up.get("pod", "survivor")
        return pod if pod and pod["status"].get("phase") == "Running" else None

    before = wait_until(running, timeout=60, what="the pod to run")
    assert _nats_servers_on(store)
    up.proc.send_signal(signal.SIGKILL)
    up.proc.wait(10)
    wait_until(lambda: not _nats_servers_on(store), timeout=10, what="nats-server to end with its parent")

    again = up_factory(data=up.data)  # the same data directory; a fresh port is fine, the store is the state
    after = wait_until(lambda: (p := again.get("pod", "survivor")) and p["status"].get("phase") == "Running" and p,
                       timeout=60, what="the pod after the restart")
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    statuses = after["status"]["containerStatuses"]
    assert statuses[0]["restartCount"] == 0
    assert statuses[0]["state"]["running"]["startedAt"] == before["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]


def test_a_left_over_nats_server_of_the_same_store_is_stopped_by_the_next_up(tmp_path) -> None:
    """A nats-server that did outlive its parent (started from a process that could not tie
    it to itself) still holds the port: `kyb up` recognises it by its pid file and command line."""
    data = tmp_path / "state"
    port = free_port()
    # Started by a child process that exits at once: the server is an orphan of init.
    script = (f"from pathlib import Path\nfrom kyb.natsd import NatsServer\n"
              f"s = NatsServer(store_dir=Path({str(data / 'jetstream')!r}), port={port})\n"
              "import threading\nt = threading.Thread(target=s.start)\nt.start(); t.join()\nprint(s.proc.pid)\n")
    orphan = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                                timeout=30).stdout.strip())
    try:
        assert _nats_servers_on(data / "jetstream") == [orphan]
        proc = subprocess.Popen([sys.executable, "-m", "kyb.cli.main", "up", "--data-dir", str(data), "--nats-port",
                                 str(port), "--runtime", "process", "--node-name", f"orphan-{os.getpid()}",
                                 "-o", f"ingress_http_port={free_port()}", "-o", f"ingress_https_port={free_port()}",
                                 "-o", f"dns_port={free_port()}", "--apiserver-port", str(free_port()), "--network", "loopback"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            lines = [proc.stdout.readline().strip() for _ in range(2)]
            assert f"stopped nats-server {orphan}" in lines[0], lines
            assert lines[1] == f"kybernetes is up: NATS at nats://127.0.0.1:{port} (data in {data})", lines
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
    finally:
        with_pid = NatsServer(store_dir=data / "jetstream")
        stop_orphan(with_pid.pid_file, data / "jetstream")
        if orphan in _nats_servers_on(data / "jetstream"):
            os.kill(orphan, signal.SIGKILL)


def test_stop_orphan_leaves_other_processes_alone(tmp_path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        pid_file = tmp_path / "jetstream.nats-server.pid"
        pid_file.write_text(f"{sleeper.pid}\n")
        assert stop_orphan(pid_file, tmp_path / "jetstream") is None
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
