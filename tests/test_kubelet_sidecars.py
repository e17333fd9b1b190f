"""Sidecar containers (init containers with restartPolicy Always) in the kubelet's pure pod
plan, and their schema: started in the init sequence, restarted whatever the pod's policy,
ignored by the phase, killed once the app containers ended, stopped last."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.meta import ObjectMeta
from schemas.pod import Container, Pod, PodSpec, PodStatus, Probe
from schemas.validation import SchemaError, decode
from services.kubelet.reconcile import Kill, PodMemory, ProbeView, Settings, plan, stop_waves
from services.kubelet.runtime.base import ContainerInfo
from tests.test_kubelet_reconcile import observed_for  # attempts of each container, as the runtime lists them

T0 = datetime(2024, 1, 1, tzinfo=UTC)
SET = Settings(base_backoff=10, max_backoff=300, reset_after=600)


def make_pod(inits=(), sidecars=frozenset(), containers=("app",), policy="Always", probed=frozenset()) -> Pod:
    def init(n: str) -> Container:
        return Container(name=n, image="img", restartPolicy="Always" if n in sidecars else None,
                         startupProbe=Probe() if n in probed else None)

    return Pod(
        metadata=ObjectMeta(name="p", namespace="default", uid="u1"),
        spec=PodSpec(nodeName="n", restartPolicy=policy, initContainers=[init(n) for n in inits],
                     containers=[Container(name=n, image="img") for n in containers]),
        status=PodStatus(phase="Pending"),
    )


def info(name, attempt=0, state="running", code=None, started=T0, finished=None) -> ContainerInfo:
    return ContainerInfo(id=f"{name}-{attempt}", pod_uid="u1", name=name, attempt=attempt, image="img",
                         state=state, exit_code=code, started_at=started, finished_at=finished)


def exited(name, code, attempt=0) -> ContainerInfo:
    return info(name, attempt, "exited", code, T0, T0 + timedelta(seconds=1))


def starts(p) -> list[str]:
    return [s.name for s in p.start]


def status(p, name):
    return next(s for s in [*p.status.initContainerStatuses, *p.status.containerStatuses] if s.name == name)


def condition(p, type_) -> str:
    return next(c.status for c in p.status.conditions if c.type == type_)


# --- the init sequence -------------------------------------------------------------------------


def test_a_started_sidecar_lets_the_next_init_container_run():
    pod = make_pod(inits=("proxy", "setup"), sidecars={"proxy"})
    assert starts(plan(pod, [], T0, settings=SET)) == ["proxy"]
    p = plan(pod, [info("proxy")], T0, settings=SET)
    assert starts(p) == ["setup"] and all(s.init for s in p.start)
    assert status(p, "proxy").started and status(p, "proxy").state.running is not None
    assert p.status.phase == "Pending" and condition(p, "Initialized") == "False"
    # the regular init container still runs to completion before the app starts
    assert starts(plan(pod, [info("proxy"), info("setup")], T0, settings=SET)) == []
    p = plan(pod, [info("proxy"), exited("setup", 0)], T0, settings=SET)
    assert starts(p) == ["app"] and condition(p, "Initialized") == "True"


def test_the_next_init_container_waits_for_the_sidecars_startup_probe():
    pod = make_pod(inits=("proxy", "setup"), sidecars={"proxy"}, probed={"proxy"})
    waiting = plan(pod, [info("proxy")], T0, settings=SET, probes={"proxy": ProbeView(started=False)})
    assert starts(waiting) == [] and not status(waiting, "proxy").started
    assert status(waiting, "setup").state.waiting.reason == "PodInitializing"
    done = plan(pod, [info("proxy")], T0, settings=SET, probes={"proxy": ProbeView(started=True)})
    assert starts(done) == ["setup"]


def test_app_containers_wait_for_every_sidecar_started():
    pod = make_pod(inits=("log", "proxy"), sidecars={"log", "proxy"}, containers=("a", "b"))
    p = plan(pod, [info("log")], T0, settings=SET)
    assert starts(p) == ["proxy"]
    assert status(p, "a").state.waiting.reason == "PodInitializing"
    p = plan(pod, [info("log"), info("proxy")], T0, settings=SET)
    assert starts(p) == ["a", "b"]
    assert p.status.phase == "Pending"
    p = plan(pod, [info("log"), info("proxy"), info("a"), info("b")], T0, settings=SET)
    assert p.status.phase == "Running" and condition(p, "Ready") == "True" and not p.start


# --- restarts, readiness, the phase ------------------------------------------------------------


@pytest.mark.parametrize("policy", ["Never", "OnFailure", "Always"])
@pytest.mark.parametrize("code", [0, 1])
def test_a_sidecar_is_restarted_whatever_the_pods_restart_policy(policy, code):
    pod = make_pod(inits=("proxy",), sidecars={"proxy"}, policy=policy)
    p = plan(pod, [exited("proxy", code), info("app")], T0 + timedelta(seconds=1), settings=SET)
    assert [(s.name, s.attempt) for s in p.start] == [("proxy", 1)]
    assert p.status.phase == "Running"
    # with the usual crash back-off the second time
    later = plan(pod, [exited("proxy", code, 1), info("app")], T0 + timedelta(seconds=2), p.memory, settings=SET)
    assert not later.start and status(later, "proxy").state.waiting.reason == "CrashLoopBackOff"
    assert status(later, "proxy").restartCount == 1 and later.status.phase == "Running"


def test_a_restarting_sidecar_does_not_hold_back_running_app_containers():
    pod = make_pod(inits=("proxy", "setup"), sidecars={"proxy"})
    observed = [exited("proxy", 1, 2), exited("setup", 0), info("app")]
    p = plan(pod, observed, T0 + timedelta(seconds=5), PodMemory(crash_backoff={"proxy": 40.0}), settings=SET)
    assert status(p, "app").state.running is not None and condition(p, "Initialized") == "True"
    assert not p.start and p.status.phase == "Running"
    assert condition(p, "Ready") == "False"  # the sidecar is not ready while it is down


def test_sidecar_readiness_counts_for_the_pod_and_its_liveness_restarts_it():
    pod = make_pod(inits=("proxy",), sidecars={"proxy"})
    observed = [info("proxy"), info("app")]
    unready = plan(pod, observed, T0, settings=SET, probes={"proxy": ProbeView(ready=False)})
    assert condition(unready, "Ready") == "False" and not status(unready, "proxy").ready
    assert next(c for c in unready.status.conditions if c.type == "Ready").message == \
        "containers with unready status: [proxy]"
    ready = plan(pod, observed, T0, settings=SET, probes={"proxy": ProbeView(ready=True)})
    assert condition(ready, "Ready") == "True" and status(ready, "proxy").ready
    dead = plan(pod, observed, T0, settings=SET, probes={"proxy": ProbeView(liveness_failed=True)})
    assert [k.name for k in dead.kill] == ["proxy"]


@pytest.mark.parametrize("policy, code, phase", [
    pytest.param("Never", 0, "Succeeded", id="never-success"),
    pytest.param("Never", 1, "Failed", id="never-failure"),
    pytest.param("OnFailure", 0, "Succeeded", id="onfailure-success"),
])
def test_the_phase_ignores_running_sidecars_and_kills_them(policy, code, phase):
    pod = make_pod(inits=("log", "proxy"), sidecars={"log", "proxy"}, policy=policy)
    p = plan(pod, [info("log"), info("proxy"), exited("app", code)], T0, settings=SET)
    assert p.status.phase == phase and not p.start
    assert [k.name for k in p.kill] == ["log", "proxy"]
    assert [[k.name for k in w] for w in stop_waves(pod, p.kill)] == [["proxy"], ["log"]]
    # the killed sidecars are not started again
    done = Pod(metadata=pod.metadata, spec=pod.spec, status=p.status)
    after = plan(done, [exited("log", 137), exited("proxy", 137), exited("app", code)], T0, settings=SET)
    assert after.status.phase == phase and not after.start and not after.kill


def test_stop_waves_app_containers_first_then_sidecars_last_started_first():
    pod = make_pod(inits=("a-side", "setup", "b-side"), sidecars={"a-side", "b-side"}, containers=("x", "y"))
    kills = [Kill(n, n, "Killing", "") for n in ("a-side", "x", "b-side", "y")]
    assert [[k.name for k in w] for w in stop_waves(pod, kills)] == [["x", "y"], ["b-side"], ["a-side"]]
    assert stop_waves(pod, []) == []


# --- a property ---------------------------------------------------------------------------------



@given(policy=st.sampled_from(["Always", "OnFailure", "Never"]),
       kinds=st.lists(st.booleans(), min_size=1, max_size=3), data=st.data(),
       elapsed=st.integers(0, 1000))
@settings(max_examples=300, deadline=None)
def test_sidecar_plan_invariants(policy, kinds, data, elapsed):
    inits = tuple(f"i{n}" for n in range(len(kinds)))
    sidecars = {n for n, side in zip(inits, kinds, strict=True) if side}
    pod = make_pod(inits=inits, sidecars=sidecars, containers=("a", "b"), policy=policy)
    observed = data.draw(observed_for([*inits, "a", "b"]))
    p = plan(pod, observed, T0 + timedelta(seconds=elapsed), PodMemory(), settings=SET)
    latest = {}
    for i in observed:
        if i.name not in latest or i.attempt > latest[i.name].attempt:
            latest[i.name] = i
    app_ran = any(n in latest for n in ("a", "b"))
    regular = [n for n in inits if n not in sidecars]
    for s in p.start:
        assert not (s.name in latest and latest[s.name].state == "running")
        if not s.init and not app_ran:  # a first start of the app: every init container is through
            for k, n in enumerate(inits):
                last = latest.get(n)
                if n in sidecars:  # running, or passed already (something after it has started)
                    assert (last is not None and last.state == "running") or any(m in latest for m in inits[k + 1:])
                else:
                    assert last is not None and last.state == "exited" and last.exit_code == 0
        if s.name in latest and latest[s.name].state == "exited":
            assert s.attempt == latest[s.name].attempt + 1
    # the phase is the app containers' alone
    if p.status.phase == "Succeeded":
        assert all(latest[c].state == "exited" and latest[c].exit_code == 0 for c in ("a", "b"))
    if p.status.phase in ("Succeeded", "Failed"):
        assert not p.start
        killed = {k.name for k in p.kill}
        assert all(i.name in killed for i in observed if i.state == "running")
    elif all(n in latest and latest[n].exit_code == 0 and latest[n].state == "exited" for n in regular) and all(
            c in latest and latest[c].state == "running" for c in ("a", "b")):
        # a sidecar that exited comes back (now or after its back-off), whatever the policy
        for n in sidecars:
            if n in latest and latest[n].state == "exited":
                w = status(p, n).state.waiting
                assert n in starts(p) or (w is not None and w.reason == "CrashLoopBackOff")


# --- the schema ---------------------------------------------------------------------------------


def pod_manifest(init: dict, app: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"initContainers": [{"name": "side", "image": "i", **init}],
                     "containers": [{"name": "app", "image": "i", **app}]}}


def test_restart_policy_always_on_an_init_container_is_a_sidecar():
    pod = decode(pod_manifest({"restartPolicy": "Always"}, {}))
    assert pod.spec.initContainers[0].restartPolicy == "Always"


@pytest.mark.parametrize("init, app, field", [
    pytest.param({"restartPolicy": "OnFailure"}, {}, "spec.initContainers[0].restartPolicy", id="init-not-always"),
    pytest.param({}, {"restartPolicy": "Always"}, "spec.containers[0].restartPolicy", id="app-container"),
])
def test_restart_policy_is_refused_elsewhere(init, app, field):
    with pytest.raises(SchemaError) as e:
        decode(pod_manifest(init, app))
    assert field in str(e.value)


def test_restart_policy_in_a_pod_template():
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
           "spec": {"template": {"spec": {"restartPolicy": "Never", **pod_manifest({"restartPolicy": "Always"}, {})["spec"]}}}}
    assert decode(job).spec.template.spec.initContainers[0].restartPolicy == "Always"
    job["spec"]["template"]["spec"]["containers"][0]["restartPolicy"] = "Always"
    with pytest.raises(SchemaError, match=r"spec\.template\.spec\.containers\[0\]\.restartPolicy: Forbidden"):
        decode(job)
