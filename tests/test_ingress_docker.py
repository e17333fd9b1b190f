"""End to end on the real Docker engine: api, scheduler, kubelet, endpoints and ingress
in-process; two busybox httpd pods behind a Service, routed by host and path through the
builtin ingress, with the Ingress's status showing the address it is served on."""

from __future__ import annotations

import random

import httpx
import pytest

from tests.images import busybox_image  # noqa: F401  (fixture)
from tests.test_proxy_docker import docker_net_cluster, web_pod
from tests.test_proxy_helpers import wait_for

NODE = "ingress-e2e"


@pytest.fixture
async def cluster(nats_url, tmp_path, busybox_image):  # noqa: F811
    address = f"127.{random.randint(60, 90)}.{random.randint(0, 255)}.1"
    services = ("api", "scheduler", "kubelet", "endpoints", "ingress")
    ports = {"ingress_http_port": 18080, "ingress_https_port": 18443}
    async with docker_net_cluster(
        nats_url, tmp_path, busybox_image, NODE, services, ingress_address=address, **ports
    ) as c:
        c.address = address
        yield c


async def test_busybox_pods_answer_through_the_ingress(cluster):
    for name in ("web-0", "web-1"):
        await cluster.api.apply(web_pod(name, cluster.image))
    await cluster.service("web")
    await cluster.api.apply({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"ingressClassName": "kyb", "rules": [{"host": "web.example", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]},
    })
    url = f"http://{cluster.address}:18080/index.html"
    async with httpx.AsyncClient(timeout=3) as http:
        async def both() -> bool:
            seen = set()
            for _ in range(8):
                r = await http.get(url, headers={"Host": "web.example"})
                if r.status_code != 200:
                    return False
                seen.add(r.text.strip())
            return seen == {"web-0", "web-1"}

        await wait_for(both, 90, "both pods answer through the ingress")
        assert (await http.get(url, headers={"Host": "other.example"})).status_code == 404
    ing = await cluster.api.get("ingress", "default", "web")
    assert [i["ip"] for i in ing["status"]["loadBalancer"]["ingress"]] == [cluster.address]
