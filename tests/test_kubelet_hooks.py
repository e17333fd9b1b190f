"""Container lifecycle hooks and activeDeadlineSeconds: the pure parts (handler ports and
requests, deadline arithmetic, the planner failing a pod past its deadline) as properties,
and the behaviour on the real Docker engine with the api and the kubelet on a real
nats-server: a postStart hook holds the container in ContainerCreating and its effects are
visible to the container, a failing one kills and restarts it, a preStop httpGet reaches the
pod before SIGTERM does, a pod past its deadline ends Failed/DeadlineExceeded."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kyb.cli.streams import events_filter, read_events
from schemas.helpers import format_time
from schemas.meta import ObjectMeta
from schemas.pod import Container, ContainerPort, HTTPGetAction, HTTPHeader, Pod, PodSpec, PodStatus
from services.kubelet.handlers import (
    DEADLINE_MESSAGE,
    DEADLINE_REASON,
    HOOK_USER_AGENT,
    deadline_left,
    http_request,
    resolve_port,
)
from services.kubelet.reconcile import plan
from services.kubelet.runtime.base import ContainerInfo
from tests.images import busybox_image  # noqa: F401  (fixture)
from tests.test_kubelet_lifecycle import Cluster, cluster_for, status_of

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
names = st.from_regex(r"[a-z][a-z0-9-]{0,13}", fullmatch=True)
ports = st.integers(min_value=1, max_value=65535)


# --- pure: where an httpGet handler goes ------------------------------------------------------


@given(port=ports)
def test_numeric_ports_resolve_to_themselves(port: int):
    c = Container(name="c", image="i")
    assert resolve_port(port, c) == port
    assert resolve_port(str(port), c) == port


@given(named=st.dictionaries(names, ports, min_size=1, max_size=5), data=st.data())
def test_named_ports_resolve_to_the_containers_port_of_that_name(named: dict[str, int], data):
    c = Container(name="c", image="i", ports=[ContainerPort(name=n, containerPort=p) for n, p in named.items()])
    name = data.draw(st.sampled_from(sorted(named)))
    assert resolve_port(name, c) == named[name]
    with pytest.raises(ValueError, match="not a named port"):
        resolve_port("zz-" + name, c)


@pytest.mark.parametrize(
    "action, url",
    [
        pytest.param(HTTPGetAction(port="web", path="stop"), "http://127.77.0.9:8080/stop", id="named-port-pod-ip"),
        pytest.param(HTTPGetAction(port=81, host="127.0.0.5"), "http://127.0.0.5:81/", id="explicit-host"),
        pytest.param(HTTPGetAction(port="8443", scheme="HTTPS", path="/x?y=1"), "https://127.77.0.9:8443/x?y=1",
                     id="https-numeric-string"),
    ],
)
def test_http_handlers_go_to_the_pod_ip_unless_a_host_is_given(action: HTTPGetAction, url: str):
    c = Container(name="c", image="i", ports=[ContainerPort(name="web", containerPort=8080)])
    req = http_request(action, c, "127.77.0.9", HOOK_USER_AGENT)
    assert req.url == url
    assert req.headers["User-Agent"] == HOOK_USER_AGENT


def test_handler_headers_are_sent_and_override_the_defaults():
    action = HTTPGetAction(port=80, httpHeaders=[HTTPHeader(name="X-Hook", value="yes"),
                                                 HTTPHeader(name="User-Agent", value="mine")])
    req = http_request(action, Container(name="c", image="i"), "127.0.0.2", HOOK_USER_AGENT)
    assert req.headers["X-Hook"] == "yes" and req.headers["User-Agent"] == "mine"


# --- pure: activeDeadlineSeconds --------------------------------------------------------------


def deadline_pod(seconds: int | None, started: datetime | None, phase: str = "Running") -> Pod:
    return Pod(
        metadata=ObjectMeta(name="p", namespace="default", uid="u1"),
        spec=PodSpec(containers=[Container(name="main", image="i")], nodeName="n", activeDeadlineSeconds=seconds),
        status=PodStatus(phase=phase, startTime=format_time(started) if started else None),
    )


def running(started: datetime) -> ContainerInfo:
    return ContainerInfo(id="c1", pod_uid="u1", name="main", attempt=0, image="i", state="running", started_at=started)


@given(seconds=st.integers(min_value=1, max_value=10_000), elapsed=st.integers(min_value=0, max_value=20_000))
def test_deadline_counts_from_the_start_time(seconds: int, elapsed: int):
    pod = deadline_pod(seconds, T0)
    assert deadline_left(pod, T0 + timedelta(seconds=elapsed)) == seconds - elapsed
    assert deadline_left(deadline_pod(seconds, None), T0) == seconds  # not started: all of it is left
    assert deadline_left(deadline_pod(None, T0), T0 + timedelta(seconds=elapsed)) is None


@given(seconds=st.integers(min_value=1, max_value=3600), elapsed=st.integers(min_value=0, max_value=7200))
def test_a_pod_past_its_deadline_fails_and_its_containers_are_killed(seconds: int, elapsed: int):
    pod = deadline_pod(seconds, T0)
    p = plan(pod, [running(T0)], T0 + timedelta(seconds=elapsed))
    if elapsed >= seconds:
        assert (p.status.phase, p.status.reason, p.status.message) == ("Failed", DEADLINE_REASON, DEADLINE_MESSAGE)
        assert [k.container_id for k in p.kill] == ["c1"] and not p.start
        assert [(e.type, e.reason) for e in p.events] == [("Warning", DEADLINE_REASON)]
    else:
        assert p.status.phase == "Running" and p.status.reason == "" and not p.kill
        assert p.requeue_after is not None and p.requeue_after <= seconds - elapsed


def test_a_failed_pod_keeps_its_reason_and_restarts_nothing():
    pod = deadline_pod(2, T0, phase="Failed")
    pod = Pod(metadata=pod.metadata, spec=pod.spec,
              status=PodStatus(phase="Failed", reason=DEADLINE_REASON, message=DEADLINE_MESSAGE,
                               startTime=pod.status.startTime))
    exited = ContainerInfo(id="c1", pod_uid="u1", name="main", attempt=0, image="i", state="exited", exit_code=137,
                           started_at=T0, finished_at=T0 + timedelta(seconds=3))
    p = plan(pod, [exited], T0 + timedelta(seconds=60))
    assert (p.status.phase, p.status.reason) == ("Failed", DEADLINE_REASON)
    assert not p.start and not p.events  # the event was recorded once, when it failed
    assert p.status.containerStatuses[0].state.terminated.exitCode == 137


# --- on Docker --------------------------------------------------------------------------------


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


LOOP = "trap 'exit 0' TERM; while true; do sleep 0.1; done"


async def reasons(c: Cluster, name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in await read_events(c.nc, events_filter("default", "Pod", name)):
        out.setdefault(e["reason"], []).append(e["message"])
    return out


async def wait_file(path, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        await asyncio.sleep(0.05)
    return path.read_text()


@pytest.mark.docker
async def test_post_start_runs_before_the_container_counts_as_running(docker_engine, nats_url, tmp_path,
                                                                       busybox_image):  # noqa: F811
    async with cluster_for("docker", nats_url, tmp_path, busybox_image) as c:
        main = (
            "trap 'exit 0' TERM; until [ -f /tmp/hello ]; do sleep 0.1; done; "
            "cp /tmp/hello /data/seen; while true; do sleep 0.1; done"
        )
        hook = "echo from-hook > /tmp/hello; until [ -f /data/go ]; do sleep 0.1; done"
        container = {"name": "main", "command": sh(main), "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                     "lifecycle": {"postStart": {"exec": {"command": sh(hook)}}}}
        await c.apply(c.pod_manifest("hooked", [container], volumes=[{"name": "data", "hostPath": {"path": str(c.data)}}]))

        # the container sees what the hook wrote inside it ...
        assert (await wait_file(c.data / "seen")).strip() == "from-hook"
        # ... while the hook still runs, the container is not Running yet
        pod = await c.pod("hooked")
        assert pod is not None and pod.status.phase == "Pending"
        assert pod.status.containerStatuses, "no container status while the postStart hook runs"
        waiting = status_of(pod, "main").state.waiting
        assert waiting is not None and waiting.reason == "ContainerCreating", status_of(pod, "main").state

        (c.data / "go").write_text("")
        pod = await c.wait_pod("hooked", lambda p: p.status.phase == "Running" and status_of(p, "main").ready)
        assert status_of(pod, "main").restartCount == 0
        assert "FailedPostStartHook" not in await reasons(c, "hooked")


@pytest.mark.docker
async def test_failing_post_start_kills_and_restarts_the_container(docker_engine, nats_url, tmp_path,
                                                                   busybox_image):  # noqa: F811
    async with cluster_for("docker", nats_url, tmp_path, busybox_image) as c:
        container = {"name": "main", "command": sh(LOOP),
                     "lifecycle": {"postStart": {"exec": {"command": sh("echo hook-broke; exit 3")}}}}
        await c.apply(c.pod_manifest("badhook", [container]))
        deadline = time.monotonic() + 30
        seen_running = False
        while True:
            pod = await c.pod("badhook")
            st_ = status_of(pod, "main") if pod and pod.status.containerStatuses else None
            seen_running = seen_running or (st_ is not None and st_.state.running is not None)
            if st_ is not None and st_.restartCount >= 2:
                break
            assert time.monotonic() < deadline, f"the container was never restarted: {st_}"
            await asyncio.sleep(0.1)
        assert not seen_running, "a container whose postStart hook failed was reported Running"
        assert st_.lastState.terminated is not None
        events = await reasons(c, "badhook")
        assert "FailedPostStartHook" in events, events
        assert all("hook-broke" in m for m in events["FailedPostStartHook"]), events
        assert any("postStart hook failed" in m for m in events.get("Killing", []))


@pytest.mark.docker
async def test_pre_stop_http_get_reaches_the_pod_before_sigterm(docker_engine, nats_url, tmp_path,
                                                                busybox_image):  # noqa: F811
    import httpx

    async with cluster_for("docker", nats_url, tmp_path, busybox_image) as c:
        www = c.data / "www"
        (www / "cgi-bin").mkdir(parents=True)
        (www / "index.html").write_text("up\n")
        cgi = www / "cgi-bin" / "stop"
        cgi.write_text(
            "#!/bin/sh\n"
            'echo "prestop $HTTP_X_HOOK $HTTP_USER_AGENT" >> /data/order\n'
            'printf "Content-Type: text/plain\\r\\n\\r\\nok\\n"\n'
        )
        cgi.chmod(0o755)
        web = {
            "name": "web",
            "command": sh("httpd -p 8080 -h /data/www; trap 'echo TERM >> /data/order; exit 0' TERM; "
                          "while true; do sleep 0.1; done"),
            "ports": [{"containerPort": 8080, "name": "http"}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            "lifecycle": {"preStop": {"httpGet": {"path": "/cgi-bin/stop", "port": "http",
                                                  "httpHeaders": [{"name": "X-Hook", "value": "yes"}]}}},
        }
        # nothing listens on 8081: its preStop fails, and the pod is deleted all the same
        broken = {"name": "broken", "command": sh(LOOP),
                  "lifecycle": {"preStop": {"httpGet": {"path": "/bye", "port": 8081}}}}
        await c.apply(c.pod_manifest("stopper", [web, broken],
                                     volumes=[{"name": "data", "hostPath": {"path": str(c.data)}}]))
        pod = await c.wait_pod("stopper", lambda p: p.status.phase == "Running")
        ip = pod.status.podIP
        assert ip.startswith("127.")
        deadline = time.monotonic() + 15
        async with httpx.AsyncClient(trust_env=False) as client:
            while True:
                try:
                    if (await client.get(f"http://{ip}:8080/index.html", timeout=2)).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "httpd in the pod never answered"
                await asyncio.sleep(0.1)
        assert not (c.data / "order").exists()

        await c.delete("stopper")
        deadline = time.monotonic() + 20
        while await c.pod("stopper") is not None:
            assert time.monotonic() < deadline, "the pod object was never removed"
            await asyncio.sleep(0.05)
        lines = (c.data / "order").read_text().splitlines()
        assert lines == [f"prestop yes {HOOK_USER_AGENT}", "TERM"], lines
        events = await reasons(c, "stopper")
        failed = events.get("FailedPreStopHook", [])
        assert len(failed) == 1 and 'Container "broken"' in failed[0] and "/bye" in failed[0], events


@pytest.mark.docker
async def test_active_deadline_fails_the_pod(docker_engine, nats_url, tmp_path, busybox_image):  # noqa: F811
    async with cluster_for("docker", nats_url, tmp_path, busybox_image) as c:
        await c.apply(c.pod_manifest("slow", [{"name": "main", "command": ["sleep", "3600"]}],
                                     activeDeadlineSeconds=2, terminationGracePeriodSeconds=1))
        pod = await c.wait_pod("slow", lambda p: p.status.phase != "Pending", 20)
        assert pod.status.phase == "Running"
        pod = await c.wait_pod("slow", lambda p: p.status.phase == "Failed", 20)
        assert (pod.status.reason, pod.status.message) == (DEADLINE_REASON, DEADLINE_MESSAGE)
        pod = await c.wait_pod("slow", lambda p: status_of(p, "main").state.terminated is not None, 20)
        assert status_of(pod, "main").restartCount == 0
        assert not any(cond.type == "Ready" and cond.status == "True" for cond in pod.status.conditions)
        events = await reasons(c, "slow")
        assert events.get(DEADLINE_REASON) == [DEADLINE_MESSAGE], events
