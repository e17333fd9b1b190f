"""End to end on the Docker engine: a CPU-burning Deployment with requests is scaled up by the
HorizontalPodAutoscaler within two syncs of its first usage sample, and back down to its
minimum once the load stops (api, scheduler, replication, deployment, hpa and kubelet
in-process; the sync period, metrics interval and scale-down window are shortened through
options and the HPA's behavior).

The pods burn CPU while their ConfigMap-mounted file reads "on"; turning it "off" in the
ConfigMap stops every replica at once (projected volumes update in place)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import nats
import pytest

import services.hpa.service as hpa_service
from kyb.cli.nodeclient import latest_samples
from kyb.cli.streams import read_events
from kyb.client import ApiClient
from kyb.serve import run_services
from kyb.store import events_subject
from tests.cluster import remove_containers, wait_for
from tests.images import busybox_image  # noqa: F401  (fixture)

NODE = "hpa-e2e"
SYNC = 2.0  # hpa_sync_period, seconds
OPTIONS: dict[str, Any] = {
    "configure_logging": False, "lease_seconds": 1.5, "renew_seconds": 0.3, "retry_seconds": 0.2,
    "hpa_sync_period": SYNC, "metrics_interval": 2.0,
    "node_name": NODE, "runtime": "docker", "relist": 0.2, "pod_cidr": "127.82.0.0/16",
}
# Builtins only, so the loop burns without forking (`read` fails on the last line without a
# newline but still sets it, hence `;`); `sleep` keeps the pod running afterwards.
BURN = 'while read -r s < /load/state; [ "$s" = on ]; do :; done; exec sleep 100000'


def load(state: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "load"}, "data": {"state": state}}


def deployment(image: str) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "burner"},
        "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app": "burner"}},
            "template": {
                "metadata": {"labels": {"app": "burner"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "burn", "image": image, "imagePullPolicy": "Never",
                        "command": ["sh", "-c", BURN],
                        "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "200m"}},
                        "volumeMounts": [{"name": "load", "mountPath": "/load"}],
                    }],
                    "volumes": [{"name": "load", "configMap": {"name": "load"}}],
                },
            },
        },
    }


HPA = {
    "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "burner"},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "burner"},
        "minReplicas": 1, "maxReplicas": 3,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": 50}}}],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 5}},
    },
}


class Decisions:
    """Every decision the autoscaler takes for burner, in order: (monotonic time, scale_to).
    Recorded by wrapping the pure ``decide`` the service calls once per sync."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, int | None]] = []

    def wrap(self, decide):
        def recording(hpa, *args, **kwargs):
            d = decide(hpa, *args, **kwargs)
            if hpa.metadata.name == "burner":
                self.seen.append((time.monotonic(), d.scale_to))
            return d
        return recording

    def syncs_until_scaled(self, start: float) -> list[int | None]:
        """The periodic syncs from ``start`` up to and including the first that scales. A sync
        the controller's slow resync adds less than half a period after another is not a new
        period."""
        out: list[int | None] = []
        last = -1e9
        for at, scale_to in self.seen:
            if at < start:
                continue
            if at - last >= SYNC / 2 or not out:
                out.append(scale_to)
                last = at
            elif scale_to is not None:
                out[-1] = scale_to
            if scale_to is not None:
                break
        return out


@pytest.mark.docker
async def test_cpu_burning_deployment_scales_up_and_back_down(
    nats_url, tmp_path, monkeypatch, docker_engine, busybox_image,  # noqa: F811
):
    decisions = Decisions()
    monkeypatch.setattr(hpa_service, "decide", decisions.wrap(hpa_service.decide))
    stop = asyncio.Event()
    options = {**OPTIONS, "state_dir": str(tmp_path / "kubelet")}
    task = asyncio.create_task(run_services(
        ["api", "scheduler", "replication", "deployment", "hpa", "kubelet"], nats_url, options, stop))
    nc = await nats.connect(nats_url)
    api = ApiClient(nc, timeout=10)
    first_sample: list[float] = []

    async def on_sample(msg) -> None:
        sample = json.loads(msg.data)
        if not first_sample and any(p["name"].startswith("burner-") for p in sample["pods"]):
            first_sample.append(time.monotonic())

    await nc.subscribe(f"kyb.metrics.{NODE}", cb=on_sample)
    try:
        async def node_ready():
            if task.done():
                task.result()
            try:
                n = await api.get("node", None, NODE)
            except Exception:
                return False
            return any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))

        await wait_for(node_ready, 30, "node ready")
        await api.apply(load("on"))
        await api.apply(deployment(busybox_image))
        await api.apply(HPA)

        async def explain() -> str:
            with contextlib.suppress(Exception):
                hpa = await api.get("hpa", "default", "burner")
                pods = await api.list("pods", "default", label_selector="app=burner")
                seen = [(p["metadata"]["name"], p["status"].get("phase"), p["status"].get("conditions")) for p in pods]
                samples = await latest_samples(nc)
                return f"hpa status: {hpa.get('status')}; decisions: {decisions.seen}; pods {seen}; samples {samples}"
            return f"decisions: {decisions.seen}"

        async def replicas() -> int:
            return int((await api.get("deploy", "default", "burner"))["spec"]["replicas"])

        async def scaled_up():
            return await replicas() > 1

        await wait_for(scaled_up, 60, "scaled up", explain)
        assert first_sample, "the deployment was scaled before any usage sample of its pods"
        taken = decisions.syncs_until_scaled(first_sample[0])
        assert taken and taken[-1] is not None and taken[-1] > 1, decisions.seen
        assert len(taken) <= 2, f"scaled up only at sync {len(taken)} after the first sample: {decisions.seen}"

        async def settled():
            # The target is written first, then the event, then the HPA's status.
            hpa = await api.get("hpa", "default", "burner")
            up = await replicas()
            return (hpa, up) if hpa.get("status", {}).get("desiredReplicas") == up else None

        hpa, up = await wait_for(settled, 30, "HPA status matching the target", explain)
        assert up > 1 and hpa["status"]["lastScaleTime"]
        cpu = hpa["status"]["currentMetrics"][0]["resource"]["current"]
        assert cpu["averageUtilization"] > 55, hpa["status"]
        events = await read_events(nc, events_subject("default", "HorizontalPodAutoscaler", "burner"))
        assert any(e["reason"] == "SuccessfulRescale" and e["message"] ==
                   f"New size: {up}; reason: cpu resource utilization (percentage of request) above target"
                   for e in events), events

        async def all_running():
            pods = await api.list("pods", "default", label_selector="app=burner")
            return len([p for p in pods if p.get("status", {}).get("phase") == "Running"]) >= up

        await wait_for(all_running, 40, f"{up} burner pods running on Docker")

        # The load stops in every replica; after the 5 s window the HPA comes back to its minimum.
        await api.apply(load("off"))

        async def scaled_down():
            return await replicas() == 1

        await wait_for(scaled_down, 60, "scaled back down to 1", explain)
        hpa, down = await wait_for(settled, 30, "HPA status matching the target", explain)  # status after target
        assert down == 1 and hpa["status"]["desiredReplicas"] == 1
        events = await read_events(nc, events_subject("default", "HorizontalPodAutoscaler", "burner"))
        assert any(e["reason"] == "SuccessfulRescale" and e["message"] ==
                   "New size: 1; reason: All metrics below target" for e in events), events
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 30)
        finally:
            await nc.close()
            await remove_containers(NODE)
