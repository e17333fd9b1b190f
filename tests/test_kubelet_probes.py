"""Probes: hypothesis properties of the pure threshold logic, and the ProbeManager against a
real busybox httpd in a Docker container (readiness, liveness, tcpSocket, exec, named ports)."""

from __future__ import annotations

import random
import uuid

import docker
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.pod import Container, ContainerPort, ExecAction, HTTPGetAction, Probe, TCPSocketAction
from services.kubelet.probes import ProbeManager, resolve_port
from services.kubelet.probestate import ContainerProbes, Timing, due, initial, observe
from services.kubelet.runtime import LABEL_POD_UID, ContainerConfig, PortMapping, SandboxConfig
from tests import images
from tests.cluster import wait_for as until

busybox_image = images.busybox_image

# -- pure state machine ----------------------------------------------------------------------

timings = st.builds(
    Timing,
    initial_delay=st.integers(0, 5).map(float),
    period=st.integers(1, 10).map(float),
    timeout=st.just(1.0),
    success_threshold=st.integers(1, 4),
    failure_threshold=st.integers(1, 4),
)
outcomes = st.lists(st.booleans(), max_size=40)


def run_through(kind, timing, results):
    state = initial(kind, timing, 0.0)
    seen = [state]
    now = timing.initial_delay
    for ok in results:
        state = observe(state, ok, now, None if ok else "boom")
        seen.append(state)
        now = state.next_at
    return seen


@given(timings, outcomes)
def test_readiness_changes_only_after_a_full_run_of_equal_outcomes(timing, results):
    seen = run_through("readiness", timing, results)
    assert seen[0].healthy is False  # not ready until proven
    for i in range(1, len(seen)):
        before, after = seen[i - 1].healthy, seen[i].healthy
        if before is False and after is True:
            window = results[max(0, i - timing.success_threshold) : i]
            assert len(window) == timing.success_threshold and all(window)
        if before is True and after is False:
            window = results[max(0, i - timing.failure_threshold) : i]
            assert len(window) == timing.failure_threshold and not any(window)


@given(timings, outcomes)
def test_a_long_enough_run_decides_readiness(timing, results):
    seen = run_through("readiness", timing, results)
    need = max(timing.success_threshold, timing.failure_threshold)
    if len(results) >= need and len(set(results[-need:])) == 1:
        assert seen[-1].healthy is results[-1]


@given(timings, outcomes)
def test_liveness_fails_exactly_at_failure_threshold_consecutive_failures(timing, results):
    seen = run_through("liveness", timing, results)
    assert seen[0].healthy is True
    streak = 0
    for i, ok in enumerate(results, start=1):
        streak = 0 if ok else streak + 1
        fired = streak == timing.failure_threshold
        if fired:
            streak = 0  # the container restarts and the count begins again
        if ok:
            assert seen[i].healthy is True  # successThreshold is 1 for liveness
        elif fired:
            assert seen[i].healthy is False
        else:
            assert seen[i].healthy is seen[i - 1].healthy


@given(timings, st.integers(0, 30))
def test_probes_wait_for_initial_delay_then_run_every_period(timing, runs):
    state = initial("readiness", timing, 100.0)
    assert not due(state, 100.0 + timing.initial_delay - 0.01)
    assert due(state, 100.0 + timing.initial_delay)
    now = 100.0 + timing.initial_delay
    for _ in range(runs):
        state = observe(state, True, now)
        assert not due(state, now + timing.period - 0.01)
        assert state.next_at == now + timing.period
        now = state.next_at


@given(timings, outcomes)
def test_nothing_but_startup_runs_before_startup_succeeds(timing, results):
    probes = ContainerProbes(
        liveness=initial("liveness", timing, 0.0),
        readiness=initial("readiness", timing, 0.0),
        startup=initial("startup", timing, 0.0),
    )
    late = 1e9
    for ok in results:
        if not probes.startup_done():
            assert not probes.runnable("liveness", late) and not probes.runnable("readiness", late)
            assert not probes.ready()
        probes = ContainerProbes(
            liveness=probes.liveness, readiness=probes.readiness, startup=observe(probes.startup, ok, 0.0)
        )
    first_success = results.index(True) if True in results else None
    failures_before = results[:first_success] if first_success is not None else results
    if first_success is not None and len(failures_before) < timing.failure_threshold:
        assert probes.startup_done() and probes.runnable("liveness", late)
    if first_success is None and len(results) >= timing.failure_threshold:
        assert probes.liveness_failed()  # a startup probe past its threshold kills the container


def test_named_ports_resolve_from_the_container():
    c = Container(name="web", ports=[ContainerPort(name="http", containerPort=8080)])
    assert resolve_port("http", c) == 8080
    assert resolve_port(81, c) == 81
    with pytest.raises(ValueError, match="not a named port"):
        resolve_port("metrics", c)


# -- against a real container ----------------------------------------------------------------

HTTPD = "mkdir -p /www && echo ok > /www/healthz && touch /tmp/healthy && exec httpd -f -p 8080 -h /www"


@pytest.fixture
async def web(docker_engine, busybox_image):
    """A pod serving busybox httpd on <pod_ip>:8080; yields (runtime, container id, pod ip)."""
    from services.kubelet.runtime.docker import DockerRuntime

    uid = str(uuid.uuid4())
    rt = DockerRuntime(docker.from_env())
    ip = f"127.78.{random.randint(1, 254)}.{random.randint(2, 254)}"
    try:
        sandbox = await rt.create_sandbox(
            SandboxConfig(
                pod_uid=uid,
                pod_name="web",
                namespace="default",
                pod_ip=ip,
                hostname="web",
                ports=(PortMapping(container_port=8080),),
            )
        )
        info = await rt.create_and_start(
            sandbox,
            uid,
            ContainerConfig(
                name="web", image=busybox_image, image_pull_policy="Never", command=("/bin/sh", "-c", HTTPD)
            ),
        )
        yield rt, info.id, ip
    finally:
        for c in docker_engine.containers.list(all=True, filters={"label": f"{LABEL_POD_UID}={uid}"}):
            c.remove(force=True)
        await rt.close()


@pytest.fixture
async def manager(web):
    rt, _, _ = web
    pm = ProbeManager(rt)
    yield pm
    await pm.close()


def probe(**kw) -> Probe:
    return Probe(periodSeconds=1, timeoutSeconds=1, **kw)


def container(**kw) -> Container:
    return Container(name="web", ports=[ContainerPort(name="http", containerPort=8080)], **kw)


async def test_readiness_follows_the_http_endpoint(web, manager):
    rt, cid, ip = web
    changes: list[int] = []
    spec = container(
        readinessProbe=probe(httpGet=HTTPGetAction(port="http", path="/healthz"), failureThreshold=1)
    )
    manager.start("pod-a", "web", spec, cid, ip, lambda: changes.append(1))
    assert manager.readiness("pod-a", "web") is False  # not ready before the first success
    await until(lambda: manager.readiness("pod-a", "web"))
    assert changes, "the kubelet is told when readiness changes"
    code, _ = await rt.exec(cid, ["rm", "/www/healthz"], 5)
    assert code == 0
    await until(lambda: not manager.readiness("pod-a", "web"))
    assert (
        manager.last_failure("pod-a", "web")
        == "Readiness probe failed: HTTP probe failed with statuscode: 404"
    )
    assert not manager.liveness_failed("pod-a", "web")  # readiness never kills


async def test_liveness_fails_after_failure_threshold(web, manager):
    _, cid, ip = web
    spec = container(
        livenessProbe=probe(httpGet=HTTPGetAction(port=8080, path="/missing"), failureThreshold=2)
    )
    manager.start("pod-b", "web", spec, cid, ip, lambda: None)
    assert not manager.liveness_failed("pod-b", "web")
    await until(lambda: manager.last_failure("pod-b", "web") is not None)
    assert not manager.liveness_failed("pod-b", "web"), "one failure is below failureThreshold=2"
    await until(lambda: manager.liveness_failed("pod-b", "web"))
    assert (
        manager.last_failure("pod-b", "web")
        == "Liveness probe failed: HTTP probe failed with statuscode: 404"
    )
    assert manager.readiness("pod-b", "web") is True  # no readiness probe: ready


@pytest.mark.parametrize(
    ("action", "healthy"),
    [
        pytest.param({"tcpSocket": TCPSocketAction(port=8080)}, True, id="tcp-open"),
        pytest.param({"tcpSocket": TCPSocketAction(port=9099)}, False, id="tcp-unpublished"),
        pytest.param({"exec": ExecAction(command=["cat", "/tmp/healthy"])}, True, id="exec-ok"),
        pytest.param({"exec": ExecAction(command=["cat", "/tmp/nope"])}, False, id="exec-fails"),
    ],
)
async def test_tcp_and_exec_readiness(web, manager, action, healthy):
    _, cid, ip = web
    manager.start(
        "pod-c", "web", container(readinessProbe=probe(failureThreshold=1, **action)), cid, ip, lambda: None
    )
    if healthy:
        await until(lambda: manager.readiness("pod-c", "web"))
    else:
        await until(lambda: manager.last_failure("pod-c", "web") is not None)
        assert manager.readiness("pod-c", "web") is False
        if "exec" in action:
            assert "No such file or directory" in manager.last_failure("pod-c", "web")
        else:
            assert "connection refused" in manager.last_failure("pod-c", "web")


async def test_startup_probe_gates_liveness(web, manager):
    rt, cid, ip = web
    spec = container(
        startupProbe=probe(exec=ExecAction(command=["cat", "/tmp/started"]), failureThreshold=30),
        livenessProbe=probe(exec=ExecAction(command=["cat", "/tmp/nope"]), failureThreshold=1),
    )
    manager.start("pod-d", "web", spec, cid, ip, lambda: None)
    await until(lambda: manager.last_failure("pod-d", "web") is not None)
    assert manager.last_failure("pod-d", "web").startswith("Startup probe failed")
    assert not manager.startup_done("pod-d", "web") and not manager.readiness("pod-d", "web")
    assert not manager.liveness_failed("pod-d", "web"), "liveness must not run before startup succeeds"
    await rt.exec(cid, ["touch", "/tmp/started"], 5)
    await until(lambda: manager.startup_done("pod-d", "web"))
    await until(lambda: manager.liveness_failed("pod-d", "web"))
    manager.stop("pod-d")
    assert not manager.readiness("pod-d", "web")
