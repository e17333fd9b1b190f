"""End to end on the real Docker engine: api, scheduler, kubelet, endpoints and proxy in-process;
two busybox httpd pods behind a NodePort Service answer through the ClusterIP and the NodePort,
both of them, and stop answering once the Service is deleted."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator

import httpx
import nats
import pytest

from tests.cluster import docker_kubelet_options
from tests.images import busybox_image  # noqa: F401  (fixture)
from tests.test_proxy_helpers import FAST, NetCluster, wait_for

NODE = "net-e2e"


@contextlib.asynccontextmanager
async def docker_net_cluster(
    nats_url: str, tmp_path, image: str, node: str, services: tuple[str, ...], **options
) -> AsyncIterator[NetCluster]:
    """``services`` with a docker kubelet for ``node`` in-process; on the way out the web pods
    are deleted (and awaited, bounded) before the services stop."""
    nc = await nats.connect(nats_url)
    pod_cidr = f"127.{random.randint(200, 249)}.0.0/16"
    c = NetCluster(nc, nats_url, docker_kubelet_options(node, tmp_path, pod_cidr, **FAST, **options))
    c.image = image
    await c.start(*services)
    try:
        yield c
    finally:
        for name in ("web-0", "web-1"):
            with contextlib.suppress(Exception):
                await c.api.delete("pod", "default", name)

        async def pods_gone():
            return not [p for p in await c.store.list("Pod", "default")]

        with contextlib.suppress(AssertionError):
            await wait_for(pods_gone, 30, "pods removed")
        await c.close()
        await nc.close()


@pytest.fixture
async def cluster(nats_url, tmp_path, busybox_image):  # noqa: F811
    node_address = f"127.{random.randint(60, 90)}.{random.randint(0, 255)}.1"
    services = ("api", "scheduler", "kubelet", "endpoints", "proxy")
    async with docker_net_cluster(nats_url, tmp_path, busybox_image, NODE, services, node_address=node_address) as c:
        c.node_address = node_address
        yield c


def web_pod(name: str, image: str) -> dict:
    script = "mkdir -p /tmp/www && echo $POD_NAME > /tmp/www/index.html && exec busybox httpd -f -p 0.0.0.0:8080 -h /tmp/www"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "httpd",
                "image": image,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", script],
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 1},
            }],
        },
    }


async def test_busybox_pods_answer_through_cluster_ip_and_node_port(cluster):
    for name in ("web-0", "web-1"):
        await cluster.api.apply(web_pod(name, cluster.image))
    svc = await cluster.service("web", "NodePort")
    cip, node_port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["nodePort"]

    async with httpx.AsyncClient(timeout=3) as http:
        async def both(url: str) -> bool:
            try:
                seen = {(await http.get(url, headers={"Connection": "close"})).text.strip() for _ in range(6)}
            except httpx.TransportError:  # reset while no endpoint is ready yet
                return False
            return seen == {"web-0", "web-1"}

        await wait_for(lambda: both(f"http://{cip}/index.html"), 90, "both pods answer on the ClusterIP")
        await wait_for(lambda: both(f"http://{cluster.node_address}:{node_port}/index.html"), 10, "NodePort")

        await cluster.api.delete("svc", "default", "web")

        async def refused() -> bool:
            try:
                await http.get(f"http://{cip}/index.html")
            except httpx.ConnectError:
                return True
            return False

        await wait_for(refused, 10, "ClusterIP listener closed")
