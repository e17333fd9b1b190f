"""In-place pod resize (pods/resize): what a resize may change (schemas.podresize), what the
kubelet does about it (services.kubelet.reconcile: change the running container, or restart it
as its resizePolicy says), and the whole path with the real kubectl and Docker engine."""

from __future__ import annotations

import datetime as _dt
import json
import os

import docker
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import podresize
from schemas.validation import decode
from services.kubelet.reconcile import Kill, PodMemory, Resize, plan, with_resize_error
from services.kubelet.runtime.base import ContainerInfo
from tests import images
from tests.cluster import wait_until
from tests.test_apiserver_kubectl import KUBECTL, _kubectl, apiserver_up

NOW = _dt.datetime(2026, 1, 1, tzinfo=_dt.UTC)
busybox_image = images.busybox_image


def pod(cpu: str = "500m", memory: str = "64Mi", policy: str = "NotRequired", requests: dict | None = None,
        restart: str = "Always"):
    return decode({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
                   "spec": {"nodeName": "n", "restartPolicy": restart, "containers": [{
                       "name": "c", "image": "busybox",
                       "resizePolicy": [{"resourceName": "memory", "restartPolicy": policy}],
                       "resources": {"limits": {"cpu": cpu, "memory": memory},
                                     "requests": requests or {"cpu": cpu, "memory": memory}}}]}})


def running(cpu: int | None, mem: int | None, known: bool = True) -> ContainerInfo:
    return ContainerInfo(id="c1", pod_uid="u1", name="c", attempt=0, image="busybox", state="running",
                         started_at=NOW, cpu_limit_millis=cpu, memory_limit_bytes=mem, limits_known=known)


def test_a_changed_cpu_limit_is_resized_in_the_running_container():
    p = plan(pod(cpu="1"), [running(500, 64 << 20)], NOW)
    assert p.resize == (Resize("c1", "c", 1000, None),) and not p.kill
    status = p.status.containerStatuses[0]
    assert status.resources is not None and status.resources.limits == {"cpu": "500m", "memory": "64Mi"}
    assert status.allocatedResources == {"cpu": "1", "memory": "64Mi"}
    after = plan(pod(cpu="1"), [running(1000, 64 << 20)], NOW)
    assert after.resize == () and after.status.containerStatuses[0].resources.limits["cpu"] == "1"


def test_a_restart_policy_or_a_removed_limit_restarts_the_container():
    p = plan(pod(memory="128Mi", policy="RestartContainer"), [running(500, 64 << 20)], NOW)
    assert [type(k) for k in p.kill] == [Kill] and "resize of memory requires a restart" in p.kill[0].message
    assert not p.resize
    unlimited = decode({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "uid": "u1"},
                        "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    assert plan(unlimited, [running(500, None)], NOW).kill


def test_nothing_happens_where_the_runtime_does_not_report_limits():
    p = plan(pod(cpu="1"), [running(None, None, known=False)], NOW)
    assert not p.resize and not p.kill and p.status.containerStatuses[0].resources is None


def test_a_refused_resize_is_not_retried_and_shows_in_a_condition():
    wanted = pod(cpu="2")
    first = plan(wanted, [running(500, 64 << 20)], NOW)
    memory = with_resize_error(first.memory, first.resize[0], "the engine said no")
    again = plan(wanted, [running(500, 64 << 20)], NOW, memory)
    assert again.resize == ()
    cond = next(c for c in again.status.conditions if c.type == "PodResizeInProgress")
    assert (cond.status, cond.reason) == ("True", "Error") and "the engine said no" in cond.message
    # asked for something else, it is tried
    assert plan(pod(cpu="3"), [running(500, 64 << 20)], NOW, again.memory).resize


@given(st.integers(min_value=1, max_value=4000), st.integers(min_value=1, max_value=4000))
def test_a_resize_is_planned_exactly_when_the_limits_differ(want, have):
    p = plan(pod(cpu=f"{want}m"), [running(have, 64 << 20)], NOW, PodMemory())
    assert bool(p.resize) == (want != have)


def test_what_a_resize_may_change():
    old = pod()
    assert podresize.problems(pod(cpu="1"), old) == []
    assert podresize.resized(old, pod(cpu="1")).spec.containers[0].resources.limits["cpu"] == "1"
    lowered = dict(podresize.problems(pod(memory="32Mi"), old))
    assert "memory limits cannot be decreased" in lowered["spec.containers[0].resources.limits[memory]"]
    assert podresize.problems(pod(memory="32Mi", policy="RestartContainer"), pod(policy="RestartContainer")) == []
    qos = podresize.problems(pod(requests={"cpu": "100m", "memory": "64Mi"}), old)
    assert qos == [("", "Invalid value: Pod QoS is immutable")]
    extra = decode({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "uid": "u1"},
                    "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {
                        "limits": {"cpu": "500m", "memory": "64Mi", "ephemeral-storage": "1Gi"},
                        "requests": {"cpu": "500m", "memory": "64Mi"}}}]}})
    assert "only cpu and memory" in podresize.problems(extra, old)[0][1]


# --- the whole path: kubectl, the apiserver, the kubelet and the Docker engine --------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, docker_engine):
    if not os.path.exists(KUBECTL):
        pytest.skip("kubectl is not installed")
    with apiserver_up(tmp_path_factory.mktemp("resize") / "state", runtime="docker") as up:
        yield up


def _container(cluster, name: str) -> dict:
    pod = json.loads(_kubectl(cluster, "get", "pod", name, "-o", "json").stdout)
    cid = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    client = docker.from_env()
    try:
        return client.api.inspect_container(cid)
    finally:
        client.close()


@pytest.mark.docker
def test_kubectl_resizes_a_running_container_in_place(cluster, busybox_image):
    manifest = (f"apiVersion: v1\nkind: Pod\nmetadata: {{name: resize-demo}}\nspec:\n"
                "  terminationGracePeriodSeconds: 1\n  containers:\n  - name: pause\n"
                f"    image: {busybox_image}\n    imagePullPolicy: Never\n    command: [sleep, '3600']\n"
                "    resizePolicy:\n    - {resourceName: cpu, restartPolicy: NotRequired}\n"
                "    - {resourceName: memory, restartPolicy: RestartContainer}\n"
                "    resources:\n      limits: {cpu: 700m, memory: 200Mi}\n      requests: {cpu: 700m, memory: 200Mi}\n")
    _kubectl(cluster, "apply", "-f", "-", input=manifest)
    try:
        wait_until(lambda: _kubectl(cluster, "get", "pod", "resize-demo", "-o", "jsonpath={.status.phase}",
                                    check=False).stdout == "Running", timeout=60, what="the pod running")
        before = _container(cluster, "resize-demo")
        assert before["HostConfig"]["NanoCpus"] == 700_000_000
        _kubectl(cluster, "patch", "pod", "resize-demo", "--subresource", "resize", "--patch",
                 '{"spec":{"containers":[{"name":"pause","resources":{"requests":{"cpu":"800m"},'
                 '"limits":{"cpu":"800m"}}}]}}')
        wait_until(lambda: _container(cluster, "resize-demo")["HostConfig"]["NanoCpus"] == 800_000_000,
                   timeout=30, what="the CPU limit changed in the running container")
        assert _container(cluster, "resize-demo")["Id"] == before["Id"]  # the same container, not restarted
        status = json.loads(_kubectl(cluster, "get", "pod", "resize-demo", "-o", "json").stdout)["status"]
        assert status["containerStatuses"][0]["restartCount"] == 0

        def reported() -> bool:
            st_ = json.loads(_kubectl(cluster, "get", "pod", "resize-demo", "-o", "json").stdout)["status"]
            return st_["containerStatuses"][0].get("resources", {}).get("limits", {}).get("cpu") == "800m"

        wait_until(reported, timeout=30, what="the status showing the applied limits")

        # memory's policy restarts the container, with the new limit
        _kubectl(cluster, "patch", "pod", "resize-demo", "--subresource", "resize", "--patch",
                 '{"spec":{"containers":[{"name":"pause","resources":{"requests":{"memory":"300Mi"},'
                 '"limits":{"memory":"300Mi"}}}]}}')

        def restarted() -> bool:
            try:
                attrs = _container(cluster, "resize-demo")
            except (docker.errors.NotFound, KeyError, IndexError):
                return False
            return attrs["Id"] != before["Id"] and attrs["HostConfig"]["Memory"] == 300 << 20

        wait_until(restarted, timeout=60, what="the container restarted with 300Mi")

        refused = _kubectl(cluster, "patch", "pod", "resize-demo", "--subresource", "resize", "--patch",
                           '{"spec":{"containers":[{"name":"pause","resources":{"requests":{"cpu":"100m"}}}]}}',
                           check=False)
        assert refused.returncode == 1 and "Pod QoS is immutable" in refused.stderr
        image = _kubectl(cluster, "patch", "pod", "resize-demo", "--subresource", "resize", "--patch",
                         '{"spec":{"containers":[{"name":"pause","image":"other"}]}}', check=False)
        # only resources are taken from a resize: the image stays as it is
        assert json.loads(_kubectl(cluster, "get", "pod", "resize-demo", "-o", "json").stdout)["spec"][
            "containers"][0]["image"] == busybox_image, image.stderr
    finally:
        _kubectl(cluster, "delete", "pod", "resize-demo", "--ignore-not-found", "--wait=false", check=False)
