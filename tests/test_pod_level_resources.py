"""Pod-level ``spec.resources`` (Kubernetes' PodLevelResources): validated and defaulted as
Kubernetes does, and the pod's requests wherever a pod's requests count (the scheduler's fit
on a real nats-server, quota and LimitRanger sums, the downward API's unset limits)."""

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
from tests.cluster import wait_for
from tests.test_scheduler_service import node


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

        assert await wait_for(unschedulable) == "0/1 nodes are available: 1 Insufficient cpu."
        await store.create(node("large", cpu="4"))

        async def bound() -> str:
            return (await store.get("pods", "default", "big")).spec.nodeName  # type: ignore[attr-defined, no-any-return]

        assert await wait_for(bound) == "large"
    finally:
        stop.set()
        await task
        await scheduler.stop()
