"""Properties of the kubelet's pure parts: the pod plan, env resolution and the pod IP allocator."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.core import ConfigMap, Secret
from schemas.meta import ObjectMeta
from schemas.pod import (
    Container,
    EnvVar,
    EnvVarSource,
    ObjectFieldSelector,
    Pod,
    PodSpec,
    PodStatus,
    SecretKeySelector,
)
from services.kubelet.env import ConfigError, command_line, container_env, expand
from services.kubelet.ipam import PodIPAllocator, check_cidr, default_cidr
from services.kubelet.reconcile import Failure, PodMemory, Settings, duration, plan, with_failure
from services.kubelet.runtime.base import ContainerInfo

T0 = datetime(2024, 1, 1, tzinfo=UTC)
SET = Settings(base_backoff=10, max_backoff=300, reset_after=600)


def make_pod(containers=("app",), inits=(), policy="Always", phase="Pending") -> Pod:
    return Pod(
        metadata=ObjectMeta(name="p", namespace="default", uid="u1"),
        spec=PodSpec(
            nodeName="n",
            restartPolicy=policy,
            containers=[Container(name=n, image="img") for n in containers],
            initContainers=[Container(name=n, image="img") for n in inits],
        ),
        status=PodStatus(phase=phase),
    )


def info(name, attempt=0, state="running", code=None, started=T0, finished=None, cid=None) -> ContainerInfo:
    return ContainerInfo(id=cid or f"{name}-{attempt}", pod_uid="u1", name=name, attempt=attempt, image="img",
                         state=state, exit_code=code, started_at=started, finished_at=finished)


# --- the plan --------------------------------------------------------------------------------

policies = st.sampled_from(["Always", "OnFailure", "Never"])


@st.composite
def observed_for(draw, names):
    out = []
    for name in names:
        n = draw(st.integers(0, 3))
        for attempt in range(n):
            last = attempt == n - 1
            state = draw(st.sampled_from(["running", "exited"])) if last else "exited"
            code = draw(st.sampled_from([0, 1, 137])) if state == "exited" else None
            fin = T0 + timedelta(seconds=draw(st.integers(0, 700))) if state == "exited" else None
            out.append(info(name, attempt, state, code, T0, fin))
    return out


@given(
    policy=policies,
    inits=st.lists(st.sampled_from(["i1", "i2"]), unique=True, max_size=2),
    data=st.data(),
    elapsed=st.integers(0, 1000),
)
@settings(max_examples=300, deadline=None)
def test_plan_invariants(policy, inits, data, elapsed):
    pod = make_pod(containers=("a", "b"), inits=tuple(inits), policy=policy)
    observed = data.draw(observed_for(["a", "b", *inits]))
    now = T0 + timedelta(seconds=elapsed)
    p = plan(pod, observed, now, PodMemory(), settings=SET, runtime="docker", pod_ip="127.20.0.2")
    latest = {}
    for i in observed:
        if i.name not in latest or i.attempt > latest[i.name].attempt:
            latest[i.name] = i
    init_done = all(i in latest and latest[i].state == "exited" and latest[i].exit_code == 0 for i in inits)
    for s in p.start:
        # never a second copy of a running container
        assert not (s.name in latest and latest[s.name].state == "running")
        # app containers only after every init container completed; init containers one at a time
        if not s.init:
            assert init_done
    assert len([s for s in p.start if s.init]) <= 1
    # Never: nothing that has run is started again
    if policy == "Never":
        assert all(s.name not in latest for s in p.start)
    # attempts only grow: a restart is the next attempt number
    for s in p.start:
        if s.name in latest and latest[s.name].state == "exited":
            assert s.attempt == latest[s.name].attempt + 1
    # restartCount is the latest attempt number
    for cs in [*p.status.containerStatuses, *p.status.initContainerStatuses]:
        assert cs.restartCount == (latest[cs.name].attempt if cs.name in latest else 0)
    # phases as documented
    assert p.status.phase in ("Pending", "Running", "Succeeded", "Failed")
    if p.status.phase == "Succeeded":
        assert all(latest[c].exit_code == 0 for c in ("a", "b"))
        assert policy != "Always"
    if p.status.phase in ("Succeeded", "Failed"):
        assert not p.start
    ready = next(c for c in p.status.conditions if c.type == "Ready")
    if ready.status == "True":
        assert p.status.phase == "Running" and all(latest[c].state == "running" for c in ("a", "b"))
    assert p.status.podIP == "127.20.0.2"


def test_crash_back_off_doubles_up_to_the_cap_and_resets_after_a_long_run():
    pod = make_pod()
    memory = PodMemory()
    delays = []
    now = T0
    attempt = 0
    for _ in range(8):
        exited = info("app", attempt, "exited", 1, now - timedelta(seconds=1), now)
        # just after the crash: either restart now (first time) or wait
        p = plan(pod, [exited], now, memory, settings=SET)
        if p.start:
            assert p.start[0].attempt == attempt + 1
        else:
            w = p.status.containerStatuses[0].state.waiting
            assert w.reason == "CrashLoopBackOff" and "restarting failed container=app" in w.message
            assert p.requeue_after is not None and p.requeue_after > 0
            delays.append(p.requeue_after)
            now = now + timedelta(seconds=p.requeue_after)
            p = plan(pod, [exited], now, memory, settings=SET)
            assert p.start and p.start[0].attempt == attempt + 1
        memory = p.memory
        attempt += 1
    assert delays == [10, 20, 40, 80, 160, 300, 300]
    # a container that ran for more than reset_after restarts at once
    long_run = info("app", attempt, "exited", 1, now - timedelta(seconds=700), now)
    assert plan(pod, [long_run], now, memory, settings=SET).start


def test_backoff_message_names_the_delay():
    pod = make_pod()
    exited = info("app", 1, "exited", 1, T0, T0)
    p = plan(pod, [exited], T0 + timedelta(seconds=1), PodMemory(crash_backoff={"app": 20.0}), settings=SET)
    assert p.status.containerStatuses[0].state.waiting.message.startswith("back-off 20s restarting failed container=app")
    assert p.status.containerStatuses[0].lastState.terminated.exitCode == 1
    assert [e.reason for e in p.events] == ["BackOff"]


@pytest.mark.parametrize(
    "policy, code, phase",
    [
        pytest.param("Always", 0, "Running", id="always-restarts-success"),
        pytest.param("OnFailure", 0, "Succeeded", id="onfailure-success"),
        pytest.param("OnFailure", 1, "Running", id="onfailure-restarts-failure"),
        pytest.param("Never", 1, "Failed", id="never-failure"),
        pytest.param("Never", 0, "Succeeded", id="never-success"),
    ],
)
def test_phase_after_exit(policy, code, phase):
    pod = make_pod(policy=policy)
    p = plan(pod, [info("app", 0, "exited", code, T0, T0)], T0, settings=SET)
    assert p.status.phase == phase


def test_pull_failure_shows_errimagepull_then_imagepullbackoff():
    pod = make_pod()
    fail = Failure("ErrImagePull", "no such host", T0, 10.0)
    memory = with_failure(PodMemory(), "app", fail)
    first = plan(pod, [], T0, memory, settings=SET)
    assert first.status.containerStatuses[0].state.waiting.reason == "ErrImagePull" and not first.start
    later = plan(pod, [], T0 + timedelta(seconds=2), first.memory, settings=SET)
    assert later.status.containerStatuses[0].state.waiting.reason == "ImagePullBackOff" and not later.start
    due = plan(pod, [], T0 + timedelta(seconds=11), first.memory, settings=SET)
    assert [s.name for s in due.start] == ["app"]


def test_init_failure_with_never_fails_the_pod_and_blocks_apps():
    pod = make_pod(inits=("setup",), policy="Never")
    p = plan(pod, [info("setup", 0, "exited", 2, T0, T0)], T0, settings=SET)
    assert p.status.phase == "Failed" and not p.start
    assert p.status.containerStatuses[0].state.waiting.reason == "PodInitializing"


def test_duration_format():
    assert [duration(x) for x in (0.5, 10, 20, 80, 300)] == ["500ms", "10s", "20s", "1m20s", "5m0s"]


# --- env -------------------------------------------------------------------------------------

names = st.from_regex(r"[A-Z][A-Z0-9_]{0,6}", fullmatch=True)


@given(env=st.dictionaries(names, st.text(alphabet="ab-", max_size=5), max_size=4), name=names)
def test_expand_replaces_defined_and_keeps_undefined(env, name):
    text = f"x$({name})y"
    out = expand(text, env)
    assert out == (f"x{env[name]}y" if name in env else text)
    assert expand(f"$$({name})", env) == f"$({name})"


def test_env_from_secret_fieldref_and_expansion():
    pod = Pod(metadata=ObjectMeta(name="web", namespace="ns", uid="u", labels={"app": "x"}),
              spec=PodSpec(nodeName="n1"), status=PodStatus(podIP="127.20.0.5"))
    c = Container(name="c", command=["echo", "$(GREETING)", "$(MISSING)"], env=[
        EnvVar(name="PASS", valueFrom=EnvVarSource(secretKeyRef=SecretKeySelector(name="s", key="k"))),
        EnvVar(name="ME", valueFrom=EnvVarSource(fieldRef=ObjectFieldSelector(fieldPath="metadata.name"))),
        EnvVar(name="APP", valueFrom=EnvVarSource(fieldRef=ObjectFieldSelector(fieldPath="metadata.labels['app']"))),
        EnvVar(name="IP", valueFrom=EnvVarSource(fieldRef=ObjectFieldSelector(fieldPath="status.podIP"))),
        EnvVar(name="GREETING", value="hi $(ME)"),
    ])
    secret = Secret(metadata=ObjectMeta(name="s", namespace="ns"), data={"k": base64.b64encode(b"pw").decode()})
    env = container_env(pod, c, lambda ns, n: None, lambda ns, n: secret if (ns, n) == ("ns", "s") else None)
    assert env == {"PASS": "pw", "ME": "web", "APP": "x", "IP": "127.20.0.5", "GREETING": "hi web"}
    assert command_line(c, env) == (("echo", "hi web", "$(MISSING)"), ())
    with pytest.raises(ConfigError, match='secret "s" not found'):
        container_env(pod, c, lambda ns, n: None, lambda ns, n: None)
    optional = Container(name="c", env=[EnvVar(name="X", valueFrom=EnvVarSource(
        secretKeyRef=SecretKeySelector(name="s", key="k", optional=True)))])
    assert container_env(pod, optional, lambda ns, n: None, lambda ns, n: None) == {}
    _ = ConfigMap  # (ConfigMap lookups share the code path of Secrets)


# --- pod IPs ---------------------------------------------------------------------------------


@given(node=st.text(min_size=1, max_size=20))
def test_default_cidr_is_a_valid_loopback_16(node):
    net = check_cidr(default_cidr(node))
    assert net.prefixlen == 16 and 16 <= net.network_address.packed[1] <= 250


@given(ops=st.lists(st.tuples(st.booleans(), st.integers(0, 30)), max_size=200))
def test_allocator_never_gives_one_address_to_two_pods(ops):
    alloc = PodIPAllocator("127.30.0.0/24")
    held: dict[str, str] = {}
    for allocate, n in ops:
        uid = f"pod-{n}"
        if allocate:
            ip = alloc.allocate(uid)
            assert held.get(uid, ip) == ip  # stable per pod
            held[uid] = ip
            assert ip in alloc and ip not in ("127.30.0.0", "127.30.0.1", "127.30.0.255")
        else:
            alloc.release(uid)
            held.pop(uid, None)
        assert len(set(held.values())) == len(held)


def test_allocator_rebuilt_from_stored_ips_keeps_them():
    alloc = PodIPAllocator("127.30.0.0/16")
    assert alloc.reserve("a", "127.30.0.2") and not alloc.reserve("b", "127.30.0.2")
    assert not alloc.reserve("c", "127.31.0.9")
    assert alloc.allocate("a") == "127.30.0.2" and alloc.allocate("b") != "127.30.0.2"
    with pytest.raises(ValueError):
        PodIPAllocator("127.0.0.0/16")
