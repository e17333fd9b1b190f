"""kubectl's streaming commands against a real `kyb up` (process runtime): exec (with and
without stdin, exit codes), cp, logs -f and attach, over the WebSocket channel protocol the
apiserver carries to the kubelet. Real kubectl v1.32, no mocks."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import threading
import time
from datetime import UTC, datetime

import pytest

from tests.cluster import wait_until
from tests.test_apiserver_kubectl import KUBECTL, _kubectl

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

TICKER = """\
apiVersion: v1
kind: Pod
metadata: {name: ticker}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: [sh, -c, "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done"]
  - name: side
    image: busybox
    command: [sh, -c, "echo side-started; exec sleep 3600"]
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from tests.kybup import Up

    up = Up(tmp_path_factory.mktemp("apiserver-streams") / "state", "--network", "loopback")  # pod traffic stays on 127/8
    try:
        wait_until(lambda: _kubectl(up, "get", "--raw", "/version", check=False).returncode == 0, timeout=30,
                   what="the apiserver")
        _kubectl(up, "apply", "-f", "-", input=TICKER)
        wait_until(lambda: _kubectl(up, "get", "pod", "ticker", "-o", "jsonpath={.status.phase}",
                                    check=False).stdout == "Running", timeout=60, what="the ticker pod running")
        yield up
    finally:
        up.stop()


class Streamed:
    """A long-running kubectl whose output is collected as it comes."""

    def __init__(self, cluster, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        env |= {"KUBECONFIG": str(cluster.kubeconfig), "HOME": str(cluster.data)}
        self.proc = subprocess.Popen([KUBECTL, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env)
        self.lines: list[str] = []
        threading.Thread(target=lambda: [self.lines.append(line) for line in self.proc.stdout], daemon=True).start()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def test_exec_prints_the_output(cluster):
    done = _kubectl(cluster, "exec", "ticker", "-c", "main", "--", "cat", "/etc/hostname")
    with open("/etc/hostname") as f:  # the process runtime runs commands on the host
        assert done.stdout == f.read()
    assert _kubectl(cluster, "exec", "ticker", "-c", "side", "--", "echo", "hi", "there").stdout == "hi there\n"


def test_exec_exit_code_is_kubectls(cluster):
    done = _kubectl(cluster, "exec", "ticker", "-c", "main", "--", "sh", "-c", "echo out; exit 3", check=False)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "out\n"
    assert "command terminated with exit code 3" in done.stderr
    missing = _kubectl(cluster, "exec", "ticker", "-c", "nope", "--", "true", check=False)
    assert missing.returncode == 1 and "nope" in missing.stderr


def test_exec_with_stdin(cluster):
    text = "".join(f"line {i}\n" for i in range(2000))
    done = _kubectl(cluster, "exec", "-i", "ticker", "-c", "main", "--", "cat", input=text)
    assert done.stdout == text
    counted = _kubectl(cluster, "exec", "-i", "ticker", "-c", "main", "--", "wc", "-l", input=text)
    assert counted.stdout.strip() == "2000"


def test_exec_it_is_an_interactive_terminal(cluster):
    """kubectl exec -it on a terminal: a shell reads each line as it is typed and answers it at
    once, its stdin is a terminal sized like kubectl's, and its exit code is kubectl's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env |= {"KUBECONFIG": str(cluster.kubeconfig), "HOME": str(cluster.data), "TERM": "dumb"}
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    proc = subprocess.Popen([KUBECTL, "exec", "-it", "ticker", "-c", "main", "--", "sh"], stdin=slave,
                            stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    seen = bytearray()

    def read_until(marker: bytes, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while marker not in seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{marker!r} not seen; the terminal showed {bytes(seen)!r}"
            ready, _, _ = select.select([master], [], [], left)
            if ready:
                with contextlib.suppress(OSError):
                    seen.extend(os.read(master, 4096))

    try:
        os.write(master, b"echo first-$((20+22))\n")
        read_until(b"first-42")  # answered while the session is still open
        os.write(master, b"test -t 0 && echo on-a-tty; stty size\n")
        read_until(b"on-a-tty")
        read_until(b"33 111")
        os.write(master, b"exit 7\n")
        assert proc.wait(timeout=30) == 7
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_python_client_exec_session_reads_stdin_as_it_comes(cluster):
    """The official client's interactive exec: each line written gets its answer before the next
    is sent, stderr arrives on its own channel, and the exit code is the command's."""
    from kubernetes import client, config
    from kubernetes.stream import stream

    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    core = client.CoreV1Api(api_client)
    resp = stream(core.connect_get_namespaced_pod_exec, "ticker", "default", container="side",
                  command=["sh"], stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False)
    try:
        out = err = ""
        resp.write_stdin("echo to-out; echo to-err >&2\n")
        deadline = time.monotonic() + 30
        while ("to-out" not in out or "to-err" not in err) and time.monotonic() < deadline:
            resp.update(timeout=1)
            out += resp.read_stdout(timeout=0) or ""
            err += resp.read_stderr(timeout=0) or ""
        assert (out, err) == ("to-out\n", "to-err\n")
        resp.write_stdin("exit 6\n")
        while resp.is_open() and time.monotonic() < deadline:
            resp.update(timeout=1)
        assert resp.returncode == 6
    finally:
        resp.close()
        api_client.close()


def test_attach_with_stdin_says_the_process_runtime_cannot(cluster):
    done = _kubectl(cluster, "attach", "-i", "ticker", "-c", "main", input="hello\n", check=False, timeout=30)
    assert done.returncode != 0 and "not served by the process runtime" in done.stderr


def test_cp_to_and_from_the_pod(cluster, tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(bytes(range(256)) * 64)
    _kubectl(cluster, "cp", "-c", "side", str(source), "ticker:copied.bin")
    listed = _kubectl(cluster, "exec", "ticker", "-c", "side", "--", "wc", "-c", "copied.bin").stdout
    assert listed.split()[0] == str(256 * 64)
    back = tmp_path / "back.bin"
    _kubectl(cluster, "cp", "-c", "side", "ticker:copied.bin", str(back))
    assert back.read_bytes() == source.read_bytes()


def test_logs_follow_tail_and_container(cluster):
    assert _kubectl(cluster, "logs", "ticker", "-c", "side").stdout == "side-started\n"
    assert len(_kubectl(cluster, "logs", "ticker", "-c", "main", "--tail=2").stdout.splitlines()) == 2
    assert len(_kubectl(cluster, "logs", "ticker", "-c", "main", "--limit-bytes=5").stdout) == 5
    last = int(_kubectl(cluster, "logs", "ticker", "-c", "main", "--tail=1").stdout.split("-")[1])
    followed = Streamed(cluster, "logs", "-f", "ticker", "-c", "main", "--tail=1")
    try:
        wait_until(lambda: any(f"tick-{last + 5}\n" == line for line in followed.lines), timeout=30,
                   what="kubectl logs -f to show lines written after it started")
    finally:
        followed.stop()


def test_logs_timestamps_and_since(cluster):
    """Each line carries the time the kubelet read it, as on Kubernetes (RFC 3339, nanoseconds)."""
    [stamped] = _kubectl(cluster, "logs", "ticker", "-c", "side", "--timestamps").stdout.splitlines()
    when, text = stamped.split(" ", 1)
    started = datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
    assert text == "side-started" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", when)
    assert time.time() - 600 < started <= time.time()
    assert _kubectl(cluster, "logs", "ticker", "-c", "side", "--since=1h").stdout == "side-started\n"
    later = datetime.fromtimestamp(started + 1, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert _kubectl(cluster, "logs", "ticker", "-c", "side", f"--since-time={later}").stdout == ""
    asked = time.time()
    recent = _kubectl(cluster, "logs", "ticker", "-c", "main", "--since=2s", "--timestamps").stdout.splitlines()
    assert recent and all(line.split(" ", 1)[1].startswith("tick-") for line in recent)
    assert all(datetime.fromisoformat(line.split(" ")[0].replace("Z", "+00:00")).timestamp() >= asked - 3
               for line in recent)
    refused = _kubectl(cluster, "get", "--raw", "/api/v1/namespaces/default/pods/ticker/log?sinceSeconds=0",
                       check=False)
    assert refused.returncode == 1 and "sinceSeconds" in refused.stderr and "greater than 0" in refused.stderr


def test_attach_streams_the_output(cluster):
    attached = Streamed(cluster, "attach", "ticker", "-c", "main")
    try:
        wait_until(lambda: sum(line.startswith("tick-") for line in attached.lines) >= 3, timeout=30,
                   what="kubectl attach to stream the container's output")
    finally:
        attached.stop()


WEB = """\
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: python
    command: [sh, -c, "mkdir -p www && echo hello-through-the-forward > www/index.html && exec %(py)s -m http.server --bind $POD_IP --directory www 8080"]
    ports: [{containerPort: 8080}]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
"""


@pytest.fixture(scope="module")
def web(cluster):
    import sys

    _kubectl(cluster, "apply", "-f", "-", input=WEB % {"py": sys.executable})
    wait_until(lambda: _kubectl(cluster, "get", "pod", "web", "-o", "jsonpath={.status.containerStatuses[0].ready}",
                                check=False).stdout == "true", timeout=60, what="the web pod ready")
    return "web"


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def test_port_forward_carries_http_requests(cluster, web):
    import re

    forwarded = Streamed(cluster, "port-forward", f"pod/{web}", ":8080", "--address", "127.0.0.1")
    try:
        def local_port() -> int | None:
            for line in forwarded.lines:
                if m := re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> 8080", line):
                    return int(m.group(1))
            assert forwarded.proc.poll() is None, "".join(forwarded.lines)
            return None

        port = wait_until(local_port, timeout=30, what="kubectl port-forward listening")
        for _ in range(3):  # each request is a connection of its own: a pair of streams each
            assert _get(f"http://127.0.0.1:{port}/index.html") == "hello-through-the-forward\n"
    finally:
        forwarded.stop()


def test_python_client_port_forward_uses_the_channel_protocol(cluster, web):
    from kubernetes import client, config
    from kubernetes.stream import portforward

    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    core = client.CoreV1Api(api_client)
    pf = portforward(core.connect_get_namespaced_pod_portforward, web, "default", ports="8080")
    try:
        sock = pf.socket(8080)
        sock.settimeout(30)
        sock.sendall(b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"hello-through-the-forward\n")
        sock.close()
        assert pf.error(8080) is None
    finally:
        pf.close()
        api_client.close()
