"""Probes at the pod level on the real Docker engine: readiness gates the pod's Ready
condition, a failing liveness probe restarts the container (restartCount, Unhealthy event)."""

from __future__ import annotations

import asyncio
import time

import pytest

from kyb.cli.streams import events_filter, read_events
from tests.images import busybox_image  # noqa: F401  (fixture)
from tests.test_kubelet_lifecycle import cluster_for

pytestmark = pytest.mark.docker

# httpd serves /www/healthz; /tmp/ready follows /data/ready; /data/sick removes the health file.
SCRIPT = (
    "mkdir -p /www && echo ok > /www/healthz && httpd -p 8080 -h /www && "
    "while true; do "
    "if [ -f /data/ready ]; then touch /tmp/ready; else rm -f /tmp/ready; fi; "
    "if [ -f /data/sick ]; then rm -f /www/healthz; fi; "
    "sleep 0.2; done"
)


def ready(pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


async def test_readiness_gates_ready_and_failing_liveness_restarts(docker_engine, nats_url, tmp_path, busybox_image):  # noqa: F811
    async with cluster_for("docker", nats_url, tmp_path, busybox_image) as c:
        container = {
            "name": "web",
            "command": ["sh", "-c", SCRIPT],
            "ports": [{"containerPort": 8080, "name": "http"}],
            "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1},
            "livenessProbe": {
                "httpGet": {"path": "/healthz", "port": "http"},
                "periodSeconds": 1,
                "failureThreshold": 2,
            },
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        }
        await c.apply(c.pod_manifest("probed", [container], volumes=[{"name": "data", "hostPath": {"path": str(c.data)}}]))

        running = await c.wait_pod("probed", lambda p: p.status.phase == "Running", 60)
        # Running but not ready: the readiness probe fails until /tmp/ready exists. Watch it
        # through several probe periods; it must never turn Ready.
        assert running.status.containerStatuses[0].ready is False
        window = time.monotonic() + 2.5
        while time.monotonic() < window:
            pod = await c.pod("probed")
            assert pod is not None and not ready(pod), "Ready before the readiness probe ever succeeded"
            await asyncio.sleep(0.1)

        (c.data / "ready").write_text("yes")
        pod = await c.wait_pod("probed", ready, 20)
        assert pod.status.containerStatuses[0].ready is True
        assert pod.status.containerStatuses[0].restartCount == 0
        first_id = pod.status.containerStatuses[0].containerID

        (c.data / "ready").unlink()
        pod = await c.wait_pod("probed", lambda p: not ready(p), 20)

        # Liveness: the health file goes, the probe fails twice, the kubelet restarts the container.
        (c.data / "sick").write_text("yes")
        deadline = time.monotonic() + 60
        while True:
            pod = await c.pod("probed")
            cs = pod.status.containerStatuses[0] if pod and pod.status.containerStatuses else None
            if cs is not None and cs.restartCount >= 1:
                break
            assert time.monotonic() < deadline, f"liveness failure never restarted the container: {cs}"
            await asyncio.sleep(0.2)
        (c.data / "sick").unlink()
        assert cs.containerID != first_id
        events = await read_events(c.nc, events_filter("default", "Pod", "probed"))
        reasons = [e["reason"] for e in events]
        assert "Unhealthy" in reasons, reasons
        assert any("Liveness probe failed" in e["message"] for e in events if e["reason"] == "Unhealthy")
