"""The Docker runtime against the real engine: pods reachable on their own 127.x address,
Kubernetes command/args semantics, exit codes, OOM kills, graceful stop, adoption by a fresh
runtime, pull policies, exec, logs and stats."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import UTC, datetime

import docker
import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from services.kubelet.runtime import (
    LABEL_POD_UID,
    ContainerConfig,
    ContainerInfo,
    ContainerRuntime,
    ExecTimeout,
    ImageNeverPullError,
    ImagePullError,
    Mount,
    PortMapping,
    SandboxConfig,
)
from services.kubelet.runtime.docker import DockerRuntime, container_info, port_bindings
from tests import images

pytestmark = pytest.mark.docker
busybox_image = images.busybox_image  # the session fixture, shared with other test modules


@pytest.fixture
def pod_uid(docker_engine):
    uid = str(uuid.uuid4())
    yield uid
    for c in docker_engine.containers.list(all=True, filters={"label": f"{LABEL_POD_UID}={uid}"}):
        c.remove(force=True)


@pytest.fixture
async def runtime(docker_engine):
    rt = DockerRuntime(docker.from_env())
    yield rt
    await rt.close()


def sandbox_cfg(uid: str, ports: tuple[PortMapping, ...] = (), pod_ip: str | None = None) -> SandboxConfig:
    ip = pod_ip or f"127.77.{random.randint(1, 254)}.{random.randint(2, 254)}"
    return SandboxConfig(
        pod_uid=uid, pod_name="web", namespace="default", pod_ip=ip, hostname="web", ports=ports
    )


def app(image: str, name: str = "app", **kw) -> ContainerConfig:
    return ContainerConfig(name=name, image=image, image_pull_policy="Never", **kw)


async def wait_exited(rt: DockerRuntime, container_id: str, deadline: float = 30.0) -> ContainerInfo:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        info = await rt.inspect(container_id)
        if info.state == "exited":
            return info
        await asyncio.sleep(0.05)
    raise AssertionError(f"container {container_id[:12]} still {info.state} after {deadline}s")


async def read_logs(rt: DockerRuntime, container_id: str, **kw) -> bytes:
    return b"".join([chunk async for chunk in rt.logs(container_id, **kw)])


async def test_pod_serves_http_on_its_pod_ip(runtime, pod_uid, busybox_image, tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hello from a kybernetes pod\n")
    cfg = sandbox_cfg(pod_uid, ports=(PortMapping(container_port=8080),))
    sandbox = await runtime.create_sandbox(cfg)
    assert await runtime.create_sandbox(cfg) == sandbox  # idempotent
    info = await runtime.create_and_start(
        sandbox,
        pod_uid,
        app(
            busybox_image,
            "web",
            command=("httpd",),
            args=("-f", "-p", "8080", "-h", "/www"),
            mounts=(Mount(str(www), "/www", read_only=True),),
        ),
    )
    assert info.state == "running" and info.pod_uid == pod_uid and info.name == "web"

    url = f"http://{cfg.pod_ip}:8080/index.html"
    end, body = time.monotonic() + 20, None
    while time.monotonic() < end and body is None:
        try:
            r = requests.get(url, timeout=2)
            body = r.text if r.status_code == 200 else None
        except requests.ConnectionError:
            await asyncio.sleep(0.1)
    assert body == "hello from a kybernetes pod\n"

    await runtime.remove_sandbox(pod_uid)
    assert await runtime.list(pod_uid) == []
    assert pod_uid not in await runtime.list_sandboxes()


async def test_command_args_env_and_working_dir_follow_kubernetes_semantics(runtime, pod_uid, busybox_image):
    sandbox = await runtime.create_sandbox(sandbox_cfg(pod_uid))
    full = await runtime.create_and_start(
        sandbox,
        pod_uid,
        app(
            busybox_image,
            "full",
            command=("sh", "-c"),
            args=('echo "$GREETING from $(pwd)"; exit 3',),
            env={"GREETING": "hello"},
            working_dir="/tmp",
        ),
    )
    args_only = await runtime.create_and_start(
        sandbox, pod_uid, app(busybox_image, "argsonly", args=("echo", "args only"))
    )

    done = await wait_exited(runtime, full.id)
    assert (done.exit_code, done.reason, done.oom_killed) == (3, "Error", False)
    assert done.started_at is not None and done.finished_at is not None
    assert b"hello from /tmp" in await read_logs(runtime, full.id)

    done = await wait_exited(runtime, args_only.id)
    assert (done.exit_code, done.reason) == (0, "Completed")
    assert await read_logs(runtime, args_only.id) == b"args only\n"


async def test_memory_limit_kills_with_oom(runtime, pod_uid, busybox_image):
    sandbox = await runtime.create_sandbox(sandbox_cfg(pod_uid))
    hog = await runtime.create_and_start(
        sandbox,
        pod_uid,
        app(
            busybox_image,
            "hog",
            command=("sh", "-c", 'x=$(head -c 60000000 /dev/zero | tr "\\0" a); echo survived'),
            memory_limit_bytes=8 * 1024 * 1024,
        ),
    )
    done = await wait_exited(runtime, hog.id)
    assert done.oom_killed and done.reason == "OOMKilled"
    assert done.exit_code == 137
    assert b"survived" not in await read_logs(runtime, hog.id)


async def test_stop_sends_sigterm_then_sigkill_after_grace(runtime, pod_uid, busybox_image):
    sandbox = await runtime.create_sandbox(sandbox_cfg(pod_uid))
    polite = await runtime.create_and_start(
        sandbox,
        pod_uid,
        app(
            busybox_image,
            "polite",
            command=(
                "sh",
                "-c",
                "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.1; done",
            ),
        ),
    )
    stubborn = await runtime.create_and_start(
        sandbox,
        pod_uid,
        app(
            busybox_image,
            "stubborn",
            command=("sh", "-c", "trap 'echo ignoring TERM' TERM; echo ready; while :; do sleep 0.1; done"),
        ),
    )
    for c in (polite, stubborn):  # both have installed their trap
        end = time.monotonic() + 20
        while b"ready" not in await read_logs(runtime, c.id):
            assert time.monotonic() < end, "container never became ready"
            await asyncio.sleep(0.05)

    await asyncio.gather(runtime.stop(polite.id, 30), runtime.stop(stubborn.id, 1))

    p, s = await runtime.inspect(polite.id), await runtime.inspect(stubborn.id)
    assert (p.state, p.exit_code) == ("exited", 3)
    assert b"got TERM" in await read_logs(runtime, polite.id)
    assert (s.state, s.exit_code) == ("exited", 137)
    assert b"ignoring TERM" in await read_logs(runtime, stubborn.id)


async def test_fresh_runtime_adopts_running_containers(runtime, pod_uid, busybox_image):
    cfg = sandbox_cfg(pod_uid)
    sandbox = await runtime.create_sandbox(cfg)
    started = await runtime.create_and_start(
        sandbox, pod_uid, app(busybox_image, "sleeper", args=("sleep", "600"), attempt=2)
    )

    fresh = DockerRuntime(docker.from_env())
    assert isinstance(fresh, ContainerRuntime)
    try:
        assert pod_uid in await fresh.list_sandboxes()
        assert await fresh.create_sandbox(cfg) == sandbox
        [adopted] = await fresh.list(pod_uid)
        assert (adopted.id, adopted.name, adopted.attempt, adopted.state) == (
            started.id,
            "sleeper",
            2,
            "running",
        )
        assert adopted.started_at == started.started_at
        # asking again for the same attempt returns the same container instead of a second one
        again = await fresh.create_and_start(
            sandbox, pod_uid, app(busybox_image, "sleeper", args=("sleep", "600"), attempt=2)
        )
        assert again.id == started.id
    finally:
        await fresh.close()


async def test_pull_policies(runtime, busybox_image):
    await runtime.ensure_image(busybox_image, "Never")
    await runtime.ensure_image(busybox_image, "IfNotPresent")
    with pytest.raises(ImageNeverPullError) as never:
        await runtime.ensure_image("kyb-test/missing:v1", "Never")
    assert never.value.reason == "ErrImageNeverPull"
    # a registry on a closed loopback port: the pull fails, and fast
    quick = DockerRuntime(docker.from_env(), pull_timeout=15)
    try:
        with pytest.raises(ImagePullError) as pulled:
            await quick.ensure_image("127.0.0.1:1/kyb-test/missing:v1", "IfNotPresent")
        assert pulled.value.reason == "ErrImagePull"
        assert not isinstance(pulled.value, ImageNeverPullError)
    finally:
        await quick.close()


async def test_exec_returns_output_and_exit_code(runtime, pod_uid, busybox_image):
    sandbox = await runtime.create_sandbox(sandbox_cfg(pod_uid))
    c = await runtime.create_and_start(
        sandbox, pod_uid, app(busybox_image, "shell", args=("sleep", "600"), env={"WHO": "pod"})
    )
    code, out = await runtime.exec(c.id, ["sh", "-c", "echo out $WHO; echo err >&2; exit 4"], timeout=20)
    assert code == 4
    assert b"out pod" in out and b"err" in out
    with pytest.raises(ExecTimeout):
        await runtime.exec(c.id, ["sleep", "60"], timeout=0.5)


async def _drain(session) -> list[tuple[int, bytes]]:
    out = []
    while (item := await asyncio.wait_for(session.output(), 30)) is not None:
        out.append(item)
    return out


async def test_exec_session_streams_stdin_and_output_live(runtime, pod_uid, busybox_image):
    """kubectl exec -i/-it: stdin reaches the command while it runs, stderr stays apart without
    a terminal, a terminal echoes and has the size asked for, a kill ends a session."""
    sandbox = await runtime.create_sandbox(sandbox_cfg(pod_uid))
    c = await runtime.create_and_start(sandbox, pod_uid, app(busybox_image, "shell", args=("sleep", "600")))
    piped = await runtime.exec_session(c.id, ["sh", "-c", "read x; echo got $x; echo oops >&2; exit 5"],
                                       stdin=True, tty=False)
    await piped.write(b"hello\n")
    chunks = await _drain(piped)
    assert await piped.wait() == 5
    assert b"".join(d for s, d in chunks if s == 1) == b"got hello\n"
    assert b"".join(d for s, d in chunks if s == 2) == b"oops\n"
    tty = await runtime.exec_session(c.id, ["sh", "-c", "read x; stty size; echo got $x"], stdin=True, tty=True)
    await tty.resize(123, 45)
    await tty.write(b"there\n")
    tty_chunks = await _drain(tty)
    assert await tty.wait() == 0
    text = b"".join(d for _, d in tty_chunks)
    assert b"45 123" in text and b"got there" in text
    assert {s for s, _ in tty_chunks} == {1}  # a terminal is one stream
    sleeper = await runtime.exec_session(c.id, ["sleep", "600"], stdin=False, tty=False)
    await sleeper.kill()
    assert await _drain(sleeper) == []
    assert await asyncio.wait_for(sleeper.wait(), 30) != 0


async def test_logs_tail_and_follow_and_stats(runtime, pod_uid, busybox_image):
    sandbox = await runtime.create_sandbox(sandbox_cfg(pod_uid))
    counter = await runtime.create_and_start(
        sandbox,
        pod_uid,
        app(
            busybox_image, "counter", command=("sh", "-c", "for i in 1 2 3 4 5; do echo $i; sleep 0.2; done")
        ),
    )
    followed = await read_logs(runtime, counter.id, follow=True)  # ends when the container exits
    assert followed == b"1\n2\n3\n4\n5\n"
    assert await read_logs(runtime, counter.id, tail=2) == b"4\n5\n"
    stamped = (await read_logs(runtime, counter.id, timestamps=True)).splitlines()  # the engine's own times
    assert [line.split(b" ", 1)[1] for line in stamped] == [b"1", b"2", b"3", b"4", b"5"]
    times = [datetime.fromisoformat(line.split(b" ")[0].decode().replace("Z", "+00:00")) for line in stamped]
    after_first = (times[0].timestamp() + times[1].timestamp()) / 2
    assert await read_logs(runtime, counter.id, since=after_first) == b"2\n3\n4\n5\n"

    busy = await runtime.create_and_start(
        sandbox,
        pod_uid,
        app(
            busybox_image,
            "busy",
            command=("sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 600"),
        ),
    )
    end = time.monotonic() + 20
    cpu, mem = await runtime.stats(busy.id)
    while cpu == 0 and time.monotonic() < end:
        await asyncio.sleep(0.1)
        cpu, mem = await runtime.stats(busy.id)
    assert cpu > 0 and mem > 0


# Pure translation between our config types and the engine's documents (no engine needed).

ports_strategy = st.lists(
    st.builds(
        PortMapping,
        container_port=st.integers(1, 65535),
        protocol=st.sampled_from(["TCP", "UDP"]),
        host_port=st.none() | st.integers(1, 65535),
        host_ip=st.none() | st.just("127.0.0.1"),
    ),
    max_size=8,
)


@given(ports=ports_strategy)
def test_every_pod_port_is_published_once_on_the_pod_ip(ports):
    cfg = SandboxConfig(
        pod_uid="u", pod_name="p", namespace="ns", pod_ip="127.77.1.2", hostname="p", ports=tuple(ports)
    )
    bindings = port_bindings(cfg)
    assert set(bindings) == {f"{p.container_port}/{p.protocol.lower()}" for p in ports}
    for p in ports:
        targets = bindings[f"{p.container_port}/{p.protocol.lower()}"]
        assert targets.count(("127.77.1.2", p.container_port)) == 1
        if p.host_port:
            assert (p.host_ip or "0.0.0.0", p.host_port) in targets
    assert all(len(set(t)) == len(t) for t in bindings.values())


@given(
    status=st.sampled_from(["created", "running", "paused", "restarting", "exited", "dead", "removing"]),
    exit_code=st.integers(0, 255),
    oom=st.booleans(),
)
def test_container_state_translation(status, exit_code, oom):
    info = container_info(
        {
            "Id": "abc",
            "Image": "sha256:1",
            "Config": {"Image": "img", "Labels": {LABEL_POD_UID: "u", "io.kybernetes.container.name": "c"}},
            "State": {
                "Status": status,
                "ExitCode": exit_code,
                "OOMKilled": oom,
                "StartedAt": "2024-05-01T10:00:00.123456789Z",
                "FinishedAt": "0001-01-01T00:00:00Z",
            },
        }
    )
    assert (info.pod_uid, info.name, info.image) == ("u", "c", "img")
    assert info.started_at == datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert info.finished_at is None
    if info.state == "exited":
        assert info.exit_code == exit_code
        assert info.reason == ("OOMKilled" if oom else "Completed" if exit_code == 0 else "Error")
    else:
        assert info.exit_code is None and info.reason is None and not info.oom_killed
