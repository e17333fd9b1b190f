"""The ingress service on a real nats-server with the api and endpoints services in-process:
Ingresses applied through the api are served on the ingress address by either plane, with
status.loadBalancer filled, class filtering, readiness (503 until a pod is ready) and TLS
from a kubernetes.io/tls Secret."""

from __future__ import annotations

import base64
import json
import random

import httpx
import nats
import pytest

from services.ingress.nginx import nginx_binary
from tests.test_ingress_helpers import HttpBackend, self_signed, tls_get, until
from tests.test_proxy_helpers import FAST, NetCluster, random_subnet

PLANES = [
    pytest.param("builtin", id="builtin"),
    pytest.param("nginx", id="nginx", marks=pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed")),
]


@pytest.fixture(params=PLANES)
async def net(request, nats_url):
    nc = await nats.connect(nats_url)
    address = f"127.{random.randint(60, 90)}.{random.randint(0, 255)}.1"
    c = NetCluster(nc, nats_url, {**FAST, "ingress_plane": request.param, "ingress_address": address,
                                  "ingress_http_port": 18080, "ingress_https_port": 18443})
    c.address = address
    c.subnet = random_subnet()
    c.backends = []
    c.http = httpx.AsyncClient(timeout=5)
    await c.start("api", "endpoints", "ingress")
    try:
        yield c
    finally:
        await c.http.aclose()
        for b in c.backends:
            await b.stop()
        await c.close()
        await nc.close()


async def web(net, app: str, *, ready: bool = True) -> HttpBackend:
    ip = f"{net.subnet}.{len(net.backends) + 10}"
    b = await HttpBackend(f"{app}-{len(net.backends)}", ip).start()
    net.backends.append(b)
    await net.pod(b.name, ip, {"app": app}, ready=ready)
    await net.service(app)
    return b


def manifest(name: str, host: str, service: str, *, cls: str | None = "kyb", tls: str | None = None) -> dict:
    spec: dict = {"rules": [{"host": host, "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": service, "port": {"name": "http"}}}}]}}]}
    if cls:
        spec["ingressClassName"] = cls
    if tls:
        spec["tls"] = [{"hosts": [host], "secretName": tls}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


async def status_of(net, host: str, path: str = "/") -> int:
    r = await net.http.get(f"http://{net.address}:18080{path}", headers={"Host": host})
    return r.status_code


async def test_ingress_served_with_load_balancer_status_and_class_filtering(net):
    await web(net, "web")
    await net.api.apply(manifest("mine", "mine.example", "web"))
    await net.api.apply(manifest("theirs", "theirs.example", "web", cls="other"))

    async def served():
        r = await net.http.get(f"http://{net.address}:18080/hello", headers={"Host": "mine.example"})
        return r.status_code == 200 and r.json()["name"] == "web-0"

    await until(served, 15, "mine.example served")

    async def has_status():
        obj = await net.api.get("ingress", "default", "mine")
        return [i["ip"] for i in obj.get("status", {}).get("loadBalancer", {}).get("ingress", [])] == [net.address]

    await until(has_status, 10, "status.loadBalancer.ingress[].ip")
    assert await status_of(net, "theirs.example") == 404
    theirs = await net.api.get("ingress", "default", "theirs")
    assert not theirs.get("status", {}).get("loadBalancer", {}).get("ingress")

    # A class-less Ingress is ours once our IngressClass is the cluster default.
    await net.api.apply(manifest("classless", "classless.example", "web", cls=None))
    assert await status_of(net, "classless.example") == 404
    await net.api.apply({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "public", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "kybernetes.io/ingress"},
    })
    await until(lambda: _is(status_of(net, "classless.example"), 200), 15, "class-less Ingress served by default class")


async def _is(aw, expected) -> bool:
    return (await aw) == expected


async def test_503_until_a_pod_is_ready_then_served(net):
    b = await web(net, "web", ready=False)
    await net.api.apply(manifest("i", "foo.example", "web"))
    await until(lambda: _is(status_of(net, "foo.example"), 503), 15, "503 without ready endpoints")
    await net.set_ready(b.name, True)
    await until(lambda: _is(status_of(net, "foo.example"), 200), 15, "served once ready")
    await net.api.delete("ingress", "default", "i")
    await until(lambda: _is(status_of(net, "foo.example"), 404), 15, "404 after the Ingress is deleted")


async def test_tls_from_a_kubernetes_tls_secret(net):
    await web(net, "web")
    cert, key = self_signed("secure.example")
    await net.api.apply({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "secure-tls", "namespace": "default"},
        "data": {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(key).decode()},
    })
    await net.api.apply(manifest("i", "secure.example", "web", tls="secure-tls"))

    async def secure():
        cn, status, body = await tls_get(net.address, 18443, "secure.example", "/x")
        return cn == "secure.example" and status == 200 and json.loads(body)["headers"]["x-forwarded-proto"] == "https"

    await until(secure, 15, "HTTPS with the Secret's certificate")
