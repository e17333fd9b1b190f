"""The hpa service on a real nats-server with the api in front: `kyb autoscale` creates the HPA,
samples published on kyb.metrics.<node> (as kubelets publish them) drive the Deployment's
spec.replicas up and back down, with status, conditions and SuccessfulRescale events."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json

import nats
from click.testing import CliRunner

from kyb.cli.main import cli
from kyb.cli.nodeclient import metrics_stream_config
from kyb.cli.streams import read_events
from kyb.client import ApiClient
from kyb.serve import run_services
from kyb.store import Store, events_subject
from schemas.meta import ObjectMeta
from schemas.pod import Container, Pod, PodCondition, PodSpec, PodStatus, ResourceRequirements
from tests.cluster import wait_for

OPTIONS = {"lease_seconds": 1.5, "renew_seconds": 0.3, "retry_seconds": 0.2, "configure_logging": False,
           "hpa_sync_period": 0.5}

DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web"},
    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}},
                          "spec": {"containers": [{"name": "c", "image": "busybox",
                                                   "resources": {"requests": {"cpu": "100m"}}}]}}},
}


@contextlib.asynccontextmanager
async def cluster(nats_url):
    stop = asyncio.Event()
    task = asyncio.create_task(run_services(["api", "hpa"], nats_url, OPTIONS, stop))
    nc = await nats.connect(nats_url)
    api = ApiClient(nc)

    async def up():
        if task.done():
            task.result()
        with contextlib.suppress(Exception):
            return await api.get("ns", None, "default")

    await wait_for(up, what="api up")
    try:
        yield nc, api
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await nc.close()


def running_pod(i: int) -> Pod:
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Pod(
        metadata=ObjectMeta(name=f"web-{i}", namespace="default", labels={"app": "web"}),
        spec=PodSpec(nodeName="hollow-0", containers=[Container(
            name="c", image="busybox", resources=ResourceRequirements(requests={"cpu": "100m"}))]),
        status=PodStatus(phase="Running", conditions=[PodCondition(type="Ready", status="True", lastTransitionTime=now)]),
    )


async def publish_usage(nc, millis: dict[str, int]) -> None:
    js = nc.jetstream()
    with contextlib.suppress(Exception):
        await js.add_stream(metrics_stream_config())
    sample = {
        "node": "hollow-0", "timestamp": _dt.datetime.now(_dt.UTC).isoformat(), "window": 1.0,
        "node_usage": {"cpu_millis": 0, "memory_bytes": 0},
        "pods": [{"namespace": "default", "name": n, "uid": n,
                  "containers": [{"name": "c", "cpu_millis": m, "memory_bytes": 1 << 20}]} for n, m in millis.items()],
    }
    await js.publish("kyb.metrics.hollow-0", json.dumps(sample).encode())


async def test_autoscale_scales_a_deployment_up_on_load_and_down_after(nats_url):
    async with cluster(nats_url) as (nc, api):
        store = Store(nc.jetstream())
        await api.apply(DEPLOYMENT)
        for i in range(2):
            await store.create(running_pod(i))
        await publish_usage(nc, {"web-0": 100, "web-1": 100})  # 100% of request each

        result = await asyncio.to_thread(
            CliRunner().invoke, cli, ["--nats", nats_url, "autoscale", "deploy/web", "--min", "1", "--max", "5",
                                      "--cpu-percent", "50"])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == "horizontalpodautoscaler.autoscaling/web autoscaled"

        async def replicas(n):
            d = await api.get("deploy", "default", "web")
            return d["spec"]["replicas"] == n

        await wait_for(lambda: replicas(4), what="scaled up to 4")

        async def status_written():  # the HPA writes its status after it scales the target
            return (await api.get("hpa", "default", "web"))["status"].get("desiredReplicas") == 4

        await wait_for(status_written, what="HPA status shows the rescale")
        hpa = await api.get("hpa", "default", "web")
        assert hpa["status"]["desiredReplicas"] == 4 and hpa["status"]["currentCPUUtilizationPercentage"] == 100
        conds = {c["type"]: c for c in hpa["status"]["conditions"]}
        assert conds["ScalingActive"]["status"] == "True"
        events = await read_events(nc, events_subject("default", "HorizontalPodAutoscaler", "web"))
        assert any(e["reason"] == "SuccessfulRescale" and e["message"] ==
                   "New size: 4; reason: cpu resource utilization (percentage of request) above target"
                   for e in events), events

        # Load stops; with a short scale-down stabilization window it comes back down to min.
        await api.replace({**hpa, "apiVersion": "autoscaling/v2", "spec": {
            "scaleTargetRef": hpa["spec"]["scaleTargetRef"], "minReplicas": 1, "maxReplicas": 5,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": 50}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 1}}}})
        for i in range(2, 4):
            await store.create(running_pod(i))
        await publish_usage(nc, {f"web-{i}": 1 for i in range(4)})
        await wait_for(lambda: replicas(1), what="scaled down to min")


async def test_pods_without_requests_leave_scaling_inactive(nats_url):
    async with cluster(nats_url) as (nc, api):
        store = Store(nc.jetstream())
        bare = {**DEPLOYMENT, "spec": {**DEPLOYMENT["spec"], "template": {
            "metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
        await api.apply(bare)
        pod = running_pod(0)
        pod = Pod(metadata=pod.metadata, spec=PodSpec(nodeName="hollow-0", containers=[Container(name="c", image="busybox")]),
                  status=pod.status)
        await store.create(pod)
        await publish_usage(nc, {"web-0": 100})
        await api.create({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
                          "metadata": {"name": "web"},
                          "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                                   "maxReplicas": 5, "targetCPUUtilizationPercentage": 50}})

        async def inactive():
            hpa = await api.get("hpa", "default", "web")
            conds = {c["type"]: c for c in hpa.get("status", {}).get("conditions", [])}
            c = conds.get("ScalingActive")
            return c if c and c["status"] == "False" else None

        cond = await wait_for(inactive, what="ScalingActive False")
        assert cond["reason"] == "FailedGetResourceMetric" and "missing request for cpu" in cond["message"]
        assert (await api.get("deploy", "default", "web"))["spec"]["replicas"] == 2
