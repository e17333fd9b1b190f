"""End to end on the Docker engine: data on a provisioned claim outlives its pod. A pod writes a
file to its claim, is deleted, and a replacement pod on the same claim reads it
(api + scheduler + kubelet + volumebinder in-process)."""

from __future__ import annotations

import asyncio

import nats

from kyb.client import ApiClient
from kyb.serve import run_services
from tests.cluster import remove_containers, wait_for
from tests.images import busybox_image  # noqa: F401  (fixture)

NODE = "vb-node"


def pod(name: str, image: str, script: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": image, "imagePullPolicy": "Never",
                            "command": ["sh", "-c", script],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        },
    }


async def test_data_outlives_the_pod(nats_url, tmp_path, docker_engine, busybox_image):  # noqa: F811
    options = {
        "configure_logging": False, "lease_seconds": 1.5, "renew_seconds": 0.3, "retry_seconds": 0.2,
        "node_name": NODE, "runtime": "docker", "state_dir": str(tmp_path / "kubelet"), "relist": 0.2,
        "pod_cidr": "127.79.0.0/16", "volume_dir": str(tmp_path / "volumes"),
    }
    stop = asyncio.Event()
    task = asyncio.create_task(run_services(["api", "scheduler", "volumebinder", "kubelet"], nats_url, options, stop))
    nc = await nats.connect(nats_url)
    api = ApiClient(nc, timeout=10)
    try:
        async def node_ready():
            if task.done():
                task.result()
            try:
                n = await api.get("node", None, NODE)
            except Exception:
                return False
            return any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))

        await wait_for(node_ready, what="node ready")
        await api.apply({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                         "metadata": {"name": "local",
                                      "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                         "provisioner": "kybernetes.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"})
        await api.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
                         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
        await api.apply(pod("writer", busybox_image, "echo kept > /data/f && sleep 3600"))

        async def phase(name: str, want: str):
            p = await api.get("po", "default", name)
            got = p.get("status", {}).get("phase")
            assert got not in ("Failed",) or want == "Failed", p.get("status")
            return got == want

        await wait_for(lambda: phase("writer", "Running"), what="writer running")
        claim = await api.get("pvc", "default", "data")
        assert claim["status"]["phase"] == "Bound" and claim["spec"]["storageClassName"] == "local"
        f = tmp_path / "volumes" / NODE / claim["spec"]["volumeName"] / "f"
        await wait_for(lambda: asyncio.sleep(0, f.exists()), what="file written")
        await api.delete("po", "default", "writer")

        async def gone():
            try:
                await api.get("po", "default", "writer")
            except Exception:
                return True
            return False

        await wait_for(gone, what="writer deleted")
        await api.apply(pod("reader", busybox_image, "grep -q kept /data/f"))
        await wait_for(lambda: phase("reader", "Succeeded"), what="reader read the file")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await nc.close()
        await remove_containers(NODE)  # the finished reader's sandbox stays until its pod goes
