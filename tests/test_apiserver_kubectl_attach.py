"""kubectl run -it and kubectl attach -i against a real `kyb up` on the Docker runtime: a live
session with a container's main process (its stdin, its terminal), over the WebSocket channel
protocol the apiserver carries to the kubelet. Real kubectl v1.32, no mocks."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import struct
import subprocess
import termios
import time

import pytest

from tests import images
from tests.cluster import wait_until
from tests.test_apiserver_kubectl import KUBECTL, _kubectl, apiserver_up

pytestmark = [pytest.mark.docker,
              pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")]
busybox_image = images.busybox_image  # the session fixture, shared with other test modules


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, docker_engine):
    with apiserver_up(tmp_path_factory.mktemp("apiserver-attach") / "state", runtime="docker") as up:  # loopback
        yield up


class Terminal:
    """kubectl on a pseudo-terminal of the test's own, as a user at a shell runs it."""

    def __init__(self, cluster, *args: str, columns: int = 97, rows: int = 29) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        env |= {"KUBECONFIG": str(cluster.kubeconfig), "HOME": str(cluster.data), "TERM": "dumb"}
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.proc = subprocess.Popen([KUBECTL, *args], stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True)
        os.close(slave)
        self.seen = bytearray()

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def read_until(self, marker: bytes, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{marker!r} not seen; the terminal showed {bytes(self.seen)!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                with contextlib.suppress(OSError):
                    self.seen.extend(os.read(self.master, 4096))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


def test_run_it_rm_is_a_shell_in_a_new_pod(cluster, busybox_image):
    """kubectl run -it --rm: the pod's shell answers each line as it is typed, on a terminal of
    kubectl's size; when it exits the pod is deleted."""
    term = Terminal(cluster, "run", "shell", "-it", "--rm", "--restart=Never", f"--image={busybox_image}",
                    "--image-pull-policy=Never", "--", "sh")
    try:
        term.type("echo attached-$((6*7))\n")  # what is typed before the attach is read once it is
        term.read_until(b"attached-42")
        term.type("stty size\n")
        term.read_until(b"29 97")
        term.type("exit\n")
        term.proc.wait(timeout=60)
        term.read_until(b'pod "shell" deleted')
    finally:
        term.close()
        _kubectl(cluster, "delete", "pod", "shell", "--ignore-not-found", "--wait=false", check=False)


def test_attach_i_reaches_the_main_process_and_detaches_without_stopping_it(cluster, busybox_image):
    """kubectl attach -i to a pod started with stdin: what is typed reaches its main process;
    leaving the attach leaves the container running."""
    manifest = (f"apiVersion: v1\nkind: Pod\nmetadata: {{name: reader}}\nspec:\n  terminationGracePeriodSeconds: 1\n"
                f"  containers:\n  - name: main\n    image: {busybox_image}\n    imagePullPolicy: Never\n"
                "    stdin: true\n    command: [sh, -c, 'while read line; do echo heard-$line; done']\n")
    _kubectl(cluster, "apply", "-f", "-", input=manifest)
    try:
        wait_until(lambda: _kubectl(cluster, "get", "pod", "reader", "-o", "jsonpath={.status.phase}",
                                    check=False).stdout == "Running", timeout=60, what="the reader pod running")
        term = Terminal(cluster, "attach", "-i", "reader")
        try:
            term.type("one\n")
            term.read_until(b"heard-one")
            term.type("two\n")
            term.read_until(b"heard-two")
        finally:
            term.close()  # the client goes away: a detach
        wait_until(lambda: _kubectl(cluster, "get", "pod", "reader", "-o",
                                    "jsonpath={.status.containerStatuses[0].state.running}",
                                    check=False).stdout not in ("", "{}"), timeout=10,
                   what="the container still running after the attach went")
        assert _kubectl(cluster, "get", "pod", "reader", "-o",
                        "jsonpath={.status.containerStatuses[0].restartCount}").stdout == "0"
    finally:
        _kubectl(cluster, "delete", "pod", "reader", "--ignore-not-found", "--wait=false", check=False)
