"""The process runtime with real host processes: env (POD_IP), working dir, mounts as links,
exit codes, logs, SIGTERM then SIGKILL, adoption by a fresh runtime instance, exec and stats."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from datetime import datetime

import pytest

from services.kubelet.runtime import (
    ContainerConfig,
    ContainerCreateError,
    ContainerInfo,
    ContainerNotFound,
    ContainerRuntime,
    ExecTimeout,
    Mount,
    SandboxConfig,
)
from services.kubelet.runtime.process import ProcessRuntime


@pytest.fixture
async def runtime(tmp_path):
    rt = ProcessRuntime(tmp_path / "state")
    yield rt
    for uid in await rt.list_sandboxes():
        await rt.remove_sandbox(uid)
    assert [c for c in await rt.list() if c.state == "running"] == []
    await rt.close()


@pytest.fixture
async def pod(runtime) -> tuple[str, str]:
    uid = str(uuid.uuid4())
    sandbox = await runtime.create_sandbox(
        SandboxConfig(pod_uid=uid, pod_name="web", namespace="default", pod_ip="127.77.3.4", hostname="web")
    )
    return sandbox, uid


def sh(name: str, script: str, **kw) -> ContainerConfig:
    return ContainerConfig(name=name, image="ignored:latest", command=("sh", "-c"), args=(script,), **kw)


async def wait_exited(rt: ProcessRuntime, container_id: str, deadline: float = 20.0) -> ContainerInfo:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        info = await rt.inspect(container_id)
        if info.state == "exited":
            return info
        await asyncio.sleep(0.05)
    raise AssertionError(f"{container_id} still {info.state} after {deadline}s")


async def read_logs(rt: ProcessRuntime, container_id: str, **kw) -> bytes:
    return b"".join([chunk async for chunk in rt.logs(container_id, **kw)])


async def wait_for_log(rt: ProcessRuntime, container_id: str, text: bytes, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while text not in await read_logs(rt, container_id):
        assert time.monotonic() < end, f"{text!r} never showed in the log of {container_id}"
        await asyncio.sleep(0.05)


async def test_env_working_dir_exit_codes_and_logs(runtime, pod, tmp_path):
    sandbox, uid = pod
    wd = tmp_path / "wd"
    wd.mkdir()
    failing = await runtime.create_and_start(
        sandbox,
        uid,
        sh(
            "greeter",
            'echo "$GREETING $POD_IP $HOSTNAME $(pwd)"; echo oops >&2; exit 3',
            env={"GREETING": "hello"},
            working_dir=str(wd),
        ),
    )
    assert (failing.pod_uid, failing.name, failing.image) == (uid, "greeter", "ignored:latest")
    ok = await runtime.create_and_start(sandbox, uid, sh("quiet", "exit 0", attempt=1))

    done = await wait_exited(runtime, failing.id)
    assert (done.exit_code, done.reason) == (3, "Error")
    assert done.started_at is not None and done.finished_at is not None
    assert await read_logs(runtime, failing.id) == f"hello 127.77.3.4 web {wd}\noops\n".encode()
    done = await wait_exited(runtime, ok.id)
    assert (done.exit_code, done.reason, done.attempt) == (0, "Completed", 1)

    with pytest.raises(ContainerCreateError):
        await runtime.create_and_start(
            sandbox, uid, ContainerConfig(name="missing", image="x", command=("/nonexistent/binary",))
        )
    assert {c.name for c in await runtime.list(uid)} == {"greeter", "quiet"}


async def test_mounts_are_reachable_from_the_default_working_dir(runtime, pod, tmp_path):
    sandbox, uid = pod
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("served\n")
    c = await runtime.create_and_start(
        sandbox, uid, sh("reader", "cat www/index.html", mounts=(Mount(str(www), "/www"),))
    )
    assert (await wait_exited(runtime, c.id)).exit_code == 0
    assert await read_logs(runtime, c.id) == b"served\n"


async def test_stop_sends_sigterm_then_sigkill_after_grace(runtime, pod):
    sandbox, uid = pod
    polite = await runtime.create_and_start(
        sandbox,
        uid,
        sh("polite", "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.1; done"),
    )
    stubborn = await runtime.create_and_start(
        sandbox,
        uid,
        sh("stubborn", "trap 'echo ignoring TERM' TERM; echo ready; while :; do sleep 0.1; done"),
    )
    await wait_for_log(runtime, polite.id, b"ready")
    await wait_for_log(runtime, stubborn.id, b"ready")

    await asyncio.gather(runtime.stop(polite.id, 30), runtime.stop(stubborn.id, 1))

    p, s = await runtime.inspect(polite.id), await runtime.inspect(stubborn.id)
    assert (p.state, p.exit_code) == ("exited", 3)
    assert b"got TERM" in await read_logs(runtime, polite.id)
    assert (s.state, s.exit_code) == ("exited", 137)
    assert b"ignoring TERM" in await read_logs(runtime, stubborn.id)


async def test_fresh_runtime_adopts_running_processes_and_still_gets_exit_codes(runtime, pod, tmp_path):
    sandbox, uid = pod
    started = await runtime.create_and_start(sandbox, uid, sh("sleeper", "exec sleep 600", attempt=2))

    fresh = ProcessRuntime(tmp_path / "state")
    assert isinstance(fresh, ContainerRuntime)
    assert await fresh.list_sandboxes() == [uid]
    [adopted] = await fresh.list(uid)
    assert (adopted.id, adopted.attempt, adopted.state, adopted.started_at) == (
        started.id,
        2,
        "running",
        started.started_at,
    )
    again = await fresh.create_and_start(sandbox, uid, sh("sleeper", "exec sleep 600", attempt=2))
    assert again.id == started.id and again.state == "running"

    await fresh.stop(started.id, 10)
    stopped = await runtime.inspect(started.id)
    assert (stopped.state, stopped.exit_code) == ("exited", 143)  # sleep ended by SIGTERM

    await fresh.remove(started.id)
    with pytest.raises(ContainerNotFound):
        await runtime.inspect(started.id)


async def test_exec_logs_tail_follow_and_stats(runtime, pod):
    sandbox, uid = pod
    counter = await runtime.create_and_start(
        sandbox, uid, sh("counter", "for i in 1 2 3 4 5; do echo $i; sleep 0.2; done")
    )
    assert await read_logs(runtime, counter.id, follow=True) == b"1\n2\n3\n4\n5\n"  # ends when it exits
    assert await read_logs(runtime, counter.id, tail=2) == b"4\n5\n"
    stamped = (await read_logs(runtime, counter.id, timestamps=True)).splitlines()
    assert [line.split(b" ", 1)[1] for line in stamped] == [b"1", b"2", b"3", b"4", b"5"]
    times = [datetime.fromisoformat(line.split(b" ")[0].decode().replace("Z", "+00:00")) for line in stamped]
    assert times == sorted(times) and time.time() - 60 < times[0].timestamp() <= time.time()
    after_first = (times[0].timestamp() + times[1].timestamp()) / 2
    assert await read_logs(runtime, counter.id, since=after_first) == b"2\n3\n4\n5\n"
    assert await read_logs(runtime, counter.id, since=after_first, tail=1) == b"5\n"
    assert await read_logs(runtime, counter.id, since=time.time() + 60) == b""

    busy = await runtime.create_and_start(
        sandbox,
        uid,
        sh(
            "busy",
            "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo spun; exec sleep 600",
            env={"WHO": "pod"},
        ),
    )
    await wait_for_log(runtime, busy.id, b"spun")
    cpu, mem = await runtime.stats(busy.id)
    assert cpu > 0 and mem > 0

    code, out = await runtime.exec(
        busy.id, ["sh", "-c", "echo out $WHO $POD_IP; echo err >&2; exit 4"], timeout=20
    )
    assert (code, out) == (4, b"out pod 127.77.3.4\nerr\n")
    with pytest.raises(ExecTimeout):
        await runtime.exec(busy.id, ["sleep", "60"], timeout=0.3)


async def test_remove_sandbox_kills_every_process(runtime, pod, tmp_path):
    sandbox, uid = pod
    c = await runtime.create_and_start(sandbox, uid, sh("sleeper", "echo $$ > pid; exec sleep 600"))
    await wait_for_log(runtime, c.id, b"")
    pid_file = tmp_path / "state" / "pods" / uid / "sleeper" / "pid"
    end = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < end
        await asyncio.sleep(0.05)
    pid = int(pid_file.read_text())

    await runtime.remove_sandbox(uid)

    assert await runtime.list_sandboxes() == []
    assert await runtime.list(uid) == []
    with open(f"/proc/{pid}/stat") if os.path.exists(f"/proc/{pid}/stat") else open(os.devnull) as f:
        stat = f.read()
    assert stat == "" or stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")  # gone (or an unreaped zombie)


async def test_memory_limit_is_enforced_as_address_space_when_asked(tmp_path):
    rt = ProcessRuntime(tmp_path / "state", enforce_memory_limit=True)
    uid = str(uuid.uuid4())
    sandbox = await rt.create_sandbox(
        SandboxConfig(pod_uid=uid, pod_name="hog", namespace="default", pod_ip="127.77.3.5", hostname="hog")
    )
    try:
        hog = await rt.create_and_start(
            sandbox,
            uid,
            ContainerConfig(
                name="hog",
                image="ignored",
                command=(sys.executable, "-I", "-S", "-c", "b = bytearray(400_000_000); print('survived')"),
                memory_limit_bytes=128 * 1024 * 1024,
            ),
        )
        done = await wait_exited(rt, hog.id)
        assert done.exit_code != 0
        logs = await read_logs(rt, hog.id)
        assert b"MemoryError" in logs and b"survived" not in logs
    finally:
        await rt.remove_sandbox(uid)
