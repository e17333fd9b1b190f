"""End to end on the real Docker engine: api, scheduler, replication, deployment and a kubelet
running busybox containers. A Deployment rolls out and `kyb rollout status` says so; a rollout to
an image that cannot be pulled ("kyb-test/does-not-exist:1", imagePullPolicy Never) never gets
ready pods, hits its progress deadline, and `kyb rollout status` exits non-zero while the old
pods keep running."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util

import pytest

from tests.images import busybox_image  # noqa: F401  (fixture)
from tests.test_deployment_service import Cluster, _answers, wait_for

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("services.replication.service") is None,
                       reason="the replication service is not here yet"),
    pytest.mark.timeout(150),
]

NODE = "node-deploy"


def web(image: str, replicas: int = 2) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": 6,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "app", "image": image, "imagePullPolicy": "Never",
                                    "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}],
                },
            },
        },
    }


@pytest.fixture
async def docker_cluster(docker_engine, busybox_image, nats_url, nc, tmp_path):  # noqa: F811
    c = Cluster(nc, nats_url)
    c.start("api", "scheduler", "replication", "deployment", "gc")  # gc: the teardown's cascading delete
    await wait_for(lambda: _answers(c.api), 20, "api up")
    stop = asyncio.Event()
    from kyb.serve import run_services

    kubelet_options = {
        "node_name": NODE, "runtime": "docker", "state_dir": str(tmp_path / "kubelet"), "relist": 0.2,
        "pod_cidr": "127.78.0.0/16", "configure_logging": False,
    }
    c.services["kubelet"] = (stop, asyncio.create_task(run_services(["kubelet"], nats_url, kubelet_options, stop)))
    try:
        yield c
    finally:
        with contextlib.suppress(Exception):
            await c.api.delete("deployments", "default", "web")
            await wait_for(_no_pods(c), 30, "pods removed")
        for name in list(c.services):
            await c.stop(name)
        from services.kubelet.runtime.docker import DockerRuntime

        rt = DockerRuntime()
        try:
            for uid in set(await rt.list_sandboxes()) | {i.pod_uid for i in await rt.list()}:
                with contextlib.suppress(Exception):
                    if uid:
                        await rt.remove_sandbox(uid)
        finally:
            await rt.close()


def _no_pods(c: Cluster):
    async def check():
        return not await c.store.list("Pod", "default")

    return check


async def test_rollout_on_docker_and_a_bad_image_hits_the_deadline(docker_cluster, busybox_image):  # noqa: F811
    c = docker_cluster
    await c.api.apply(web(busybox_image))
    code, out = await c.kyb("rollout", "status", "deployment/web", "--timeout", "60")
    assert code == 0 and 'deployment "web" successfully rolled out' in out, out
    good = {p.metadata.name for p in await c.pods()}
    assert len(good) == 2

    code, out = await c.kyb("set", "image", "deploy/web", "app=kyb-test/does-not-exist:1")
    assert code == 0, out
    code, out = await c.kyb("rollout", "status", "deployment/web", "--timeout", "60")
    assert code == 1 and 'deployment "web" exceeded its progress deadline' in out, out
    d = await c.deployment()
    conds = {x["type"]: x for x in d["status"]["conditions"]}
    assert (conds["Progressing"]["status"], conds["Progressing"]["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert d["status"]["availableReplicas"] == 2 and d["status"]["unavailableReplicas"] >= 1
    # maxUnavailable 0: both old pods are still there and Ready.
    pods = {p.metadata.name: p for p in await c.pods()}
    assert good <= set(pods)
    assert all(any(x.type == "Ready" and x.status == "True" for x in pods[n].status.conditions) for n in good)

    code, out = await c.kyb("rollout", "undo", "deployment/web")
    assert code == 0 and "rolled back" in out, out
    code, out = await c.kyb("rollout", "status", "deployment/web", "--timeout", "60")
    assert code == 0 and 'deployment "web" successfully rolled out' in out, out
