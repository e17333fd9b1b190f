"""Pod-level ``spec.resources`` (Kubernetes' PodLevelResources): validated and defaulted as
Kubernetes does, the pod's requests wherever a pod's requests count (the scheduler's fit on a
real nats-server, quota and LimitRanger sums, the downward API's unset limits), and on Docker
a cgroup of the pod's own that holds its containers within the pod-level limits."""

from __future__ import annotations

import asyncio
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kyb.store import Store
from schemas.helpers import pod_requests, pod_resources
from schemas.limitrange import pod_totals
from schemas.pod import Container, Pod, PodSpec, ResourceRequirements
from schemas.validation import SchemaError, decode
from services.kubelet.env import resource_value
from services.scheduler.service import Scheduler
from tests import images
from tests.cluster import wait_for
from tests.test_scheduler_service import node

busybox_image = images.busybox_image


def manifest(pod_resources_: dict[str, Any], *containers: dict[str, Any], name: str = "p") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"resources": pod_resources_,
                     "containers": [{"name": f"c{i}", "image": "busybox", "resources": r}
                                    for i, r in enumerate(containers)]}}


def test_pod_level_requests_default_from_the_limits_or_the_containers():
    pod = decode(manifest({"limits": {"cpu": "2", "memory": "1Gi"}},
                          {"requests": {"cpu": "500m"}}, {"limits": {"cpu": "250m"}}))
    assert isinstance(pod, Pod) and pod.spec.resources is not None
    # cpu: some container asks, so the containers' effective sum; memory: none does, so the limit
    assert pod.spec.resources.requests == {"cpu": "750m", "memory": "1Gi"}
    assert pod_requests(pod) == (750, 1024**3)
    assert pod_totals(pod) == ({"cpu": "750m", "memory": "1Gi"}, {"cpu": "2", "memory": "1Gi"})


@pytest.mark.parametrize(("resources", "containers", "field", "message"), [
    pytest.param({"requests": {"ephemeral-storage": "1Gi"}}, [{}], "spec.resources.requests[ephemeral-storage]",
                 'Unsupported value: "ephemeral-storage": supported values: "cpu", "memory"', id="unsupported"),
    pytest.param({"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}, [{}], "spec.resources.requests[cpu]",
                 "must be less than or equal to cpu limit of 1", id="request-over-limit"),
    pytest.param({"requests": {"cpu": "1"}}, [{"requests": {"cpu": "600m"}}, {"requests": {"cpu": "600m"}}],
                 "spec.resources.requests[cpu]",
                 "must be greater than or equal to aggregate container requests of 1200m", id="under-aggregate"),
    pytest.param({"limits": {"memory": "1Gi"}}, [{"limits": {"memory": "2Gi"}}],
                 "spec.containers[0].resources.limits[memory]", "must be less than or equal to pod limits of 1Gi",
                 id="container-over-pod-limit"),
    pytest.param({"limits": {"cpu": "lots"}}, [{}], "spec.resources.limits[cpu]", "quantities must match",
                 id="not-a-quantity"),
])
def test_invalid_pod_level_resources_are_refused_naming_the_field(resources, containers, field, message):
    with pytest.raises(SchemaError) as e:
        decode(manifest(resources, *containers))
    details = dict(e.value.details)
    assert field in details and message in details[field], details


quantities = st.integers(0, 64_000)


@given(pod_level=st.dictionaries(st.sampled_from(["cpu", "memory"]), quantities),
       containers=st.lists(st.dictionaries(st.sampled_from(["cpu", "memory"]), quantities), min_size=1, max_size=4))
def test_a_pod_level_value_is_the_pods_and_the_containers_sum_otherwise(pod_level, containers):
    pod = Pod(spec=PodSpec(
        containers=[Container(name=f"c{i}", resources=ResourceRequirements(
            requests={k: f"{v}m" for k, v in c.items()})) for i, c in enumerate(containers)],
        resources=ResourceRequirements(requests={k: f"{v}m" for k, v in pod_level.items()}) if pod_level else None,
    ))
    need = pod_resources(pod, lambda r: {k: Fraction(int(v[:-1]), 1000) for k, v in r.requests.items()})
    for key in ("cpu", "memory"):
        summed = sum((Fraction(c[key], 1000) for c in containers if key in c), Fraction(0))
        if key in pod_level:
            assert need[key] == Fraction(pod_level[key], 1000)
        elif any(key in c for c in containers):
            assert need[key] == summed
        else:
            assert key not in need


def test_an_unset_container_limit_in_the_downward_api_is_the_pod_level_one():
    pod = decode(manifest({"limits": {"cpu": "1500m"}}, {}))
    assert isinstance(pod, Pod)
    assert resource_value(pod, pod.spec.containers[0], "limits.cpu", "1m", {"cpu": "8"}) == "1500"
    assert resource_value(pod, pod.spec.containers[0], "limits.memory", "1Mi", {"memory": "1Gi"}) == "1024"


async def test_the_scheduler_fits_the_pod_level_request_not_the_containers(nc):
    store = Store(nc.jetstream())
    from schemas.registry import resolve

    await store.ensure_buckets([resolve("pods"), resolve("nodes")])
    scheduler = Scheduler(nc, store, identity="sched", batch_size=8, rng=np.random.default_rng(0))
    await scheduler.start()
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    try:
        await store.create(node("small", cpu="1"))
        # the containers ask for 200m, the pod as a whole for 2 cpus: it does not fit on 1 cpu
        big = decode(manifest({"requests": {"cpu": "2"}}, {"requests": {"cpu": "100m"}},
                              {"requests": {"cpu": "100m"}}, name="big"))
        await store.create(big)

        async def unschedulable() -> str | None:
            p = await store.get("pods", "default", "big")
            return next((c.message for c in p.status.conditions if c.type == "PodScheduled" and c.status == "False"),
                        None)

        assert await wait_for(unschedulable) == ("0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are "
                                                 "available: 1 No preemption victims found for incoming pod..")
        await store.create(node("large", cpu="4"))

        async def bound() -> str:
            return (await store.get("pods", "default", "big")).spec.nodeName  # type: ignore[attr-defined, no-any-return]

        assert await wait_for(bound) == "large"
    finally:
        stop.set()
        await task
        await scheduler.stop()


@pytest.mark.docker
async def test_on_docker_the_pod_level_memory_limit_bounds_containers_without_their_own(nats_url, tmp_path,
                                                                                          busybox_image,
                                                                                          docker_engine):
    from services.kubelet.runtime import podcgroup
    from tests.cluster import containers_of
    from tests.test_kubelet_lifecycle import cluster_for

    async with cluster_for("docker", nats_url, tmp_path, busybox_image) as c:
        hog = {"name": "hog", "command": ["sh", "-c", "sleep 1; head -c 300m /dev/zero | tail > /dev/null"]}
        idle = {"name": "idle", "command": ["sleep", "3600"]}
        pod_manifest = c.pod_manifest("bounded", [idle, hog], restartPolicy="Never",
                                      resources={"limits": {"memory": "48Mi", "cpu": "500m"}})
        await c.apply(pod_manifest)
        pod = await c.wait_pod("bounded", lambda p: any(
            s.name == "hog" and s.state.terminated is not None for s in p.status.containerStatuses), timeout=60)
        hog_status = next(s for s in pod.status.containerStatuses if s.name == "hog")
        assert hog_status.state.terminated is not None and hog_status.state.terminated.exitCode != 0, hog_status
        uid = pod.metadata.uid or ""
        parent = podcgroup.parent_of(uid)
        assert {ct.attrs["HostConfig"]["CgroupParent"] for ct in containers_of(docker_engine, uid)} == {parent}
        if podcgroup.version() == 2:
            limit_file = podcgroup.ROOT / parent.lstrip("/") / "memory.max"
        else:
            limit_file = podcgroup.ROOT / "memory" / parent.lstrip("/") / "memory.limit_in_bytes"
        assert limit_file.read_text().strip() == str(48 * 1024**2)
        await c.delete("bounded")
        await wait_for(lambda: not limit_file.parent.exists(), timeout=30, what="the pod's cgroup removed")


@pytest.mark.parametrize("cgroup_version", [pytest.param(1, id="v1"), pytest.param(2, id="v2")])
def test_the_pod_cgroup_gets_the_pod_level_limits_and_goes_with_the_pod(tmp_path, cgroup_version):
    from services.kubelet.runtime import podcgroup

    root = tmp_path / "cgroup"
    root.mkdir()
    if cgroup_version == 2:
        (root / "cgroup.controllers").write_text("cpu memory pids")
        (root / "cgroup.subtree_control").write_text("")
    else:
        for controller in ("cpu", "memory", "pids"):
            (root / controller).mkdir()
    assert podcgroup.ensure("u1", 250, 64 * 1024**2, root) == "/kyb-pods/podu1"
    if cgroup_version == 2:
        pod_dir = root / "kyb-pods" / "podu1"
        assert (pod_dir / "cpu.max").read_text() == "25000 100000"
        assert (pod_dir / "memory.max").read_text() == str(64 * 1024**2)
        places = [pod_dir]
    else:
        assert (root / "cpu" / "kyb-pods" / "podu1" / "cpu.cfs_quota_us").read_text() == "25000"
        assert (root / "memory" / "kyb-pods" / "podu1" / "memory.limit_in_bytes").read_text() == str(64 * 1024**2)
        (root / "pids" / "kyb-pods" / "podu1").mkdir(parents=True)  # what the engine makes beside them
        places = [root / c / "kyb-pods" / "podu1" for c in ("cpu", "memory", "pids")]
    for place in places:  # a real cgroup directory empties itself; here the files go first
        for f in place.iterdir():
            f.unlink()
    podcgroup.remove("u1", root)
    assert not any(p.exists() for p in places)
