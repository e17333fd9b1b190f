"""Service address allocation through the api: ClusterIP, NodePort, LoadBalancer; stable,
released on delete, never handed out twice under concurrent creates."""

from __future__ import annotations

import asyncio
import ipaddress
import json

import pytest

from services.api.allocator import Allocator, Ranges
from tests.test_api import call


def svc(name: str, type_: str = "ClusterIP", **spec) -> bytes:
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"type": type_, "selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}], **spec},
    }
    return json.dumps(body).encode()


async def test_cluster_ip_from_the_range_and_stable_across_applies(api_nc):
    code, a = await call(api_nc, "apply", svc("a"))
    assert code == 201, a
    ip = a["spec"]["clusterIP"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("127.254.0.0/16")
    assert a["spec"]["clusterIPs"] == [ip]
    assert a["spec"]["ports"][0]["targetPort"] == 8080
    msg = await api_nc.request("kyb.api.apply", svc("a"), timeout=10)
    assert msg.headers["Kyb-Result"] == "unchanged"
    code, changed = await call(api_nc, "apply", svc("a", sessionAffinity="ClientIP"))
    assert code == 200 and changed["spec"]["clusterIP"] == ip
    code, status = await call(api_nc, "apply", svc("a", clusterIP="127.254.9.9"))
    assert code == 422 and status["details"][0]["field"] == "spec.clusterIP"


async def test_headless_and_external_name_get_no_address(api_nc):
    code, h = await call(api_nc, "apply", svc("h", clusterIP="None"))
    assert code == 201 and h["spec"]["clusterIP"] == "None"
    body = json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
                       "spec": {"type": "ExternalName", "externalName": "db.example.com"}}).encode()
    code, e = await call(api_nc, "apply", body)
    assert code == 201 and not e["spec"].get("clusterIP")


async def test_node_port_allocated_and_a_taken_port_is_a_clear_error(api_nc):
    code, n = await call(api_nc, "apply", svc("n", "NodePort"))
    assert code == 201, n
    port = n["spec"]["ports"][0]["nodePort"]
    assert 30000 <= port <= 32767
    code, fixed = await call(api_nc, "apply", svc("m", "NodePort", ports=[{"port": 80, "nodePort": 30080}]))
    assert code == 201 and fixed["spec"]["ports"][0]["nodePort"] == 30080
    code, status = await call(api_nc, "apply", svc("o", "NodePort", ports=[{"port": 80, "nodePort": 30080}]))
    assert code == 422
    assert status["details"][0]["field"] == "spec.ports[0].nodePort"
    assert "already allocated" in status["message"]
    code, _ = await call(api_nc, "get", {"kind": "svc", "namespace": "default", "name": "o"})
    assert code == 404
    code, status = await call(api_nc, "apply", svc("p", "NodePort", ports=[{"port": 80, "nodePort": 80}]))
    assert code == 422 and "30000-32767" in status["message"]


async def test_deleting_a_service_frees_its_address_and_port(api_nc):
    code, m = await call(api_nc, "apply", svc("m", "NodePort", clusterIP="127.254.1.1", ports=[{"port": 80, "nodePort": 30081}]))
    assert code == 201, m
    code, status = await call(api_nc, "apply", svc("m2", "NodePort", clusterIP="127.254.1.1", ports=[{"port": 80, "nodePort": 30082}]))
    assert code == 422 and "spec.clusterIP" in [d["field"] for d in status["details"]]
    code, _ = await call(api_nc, "delete", {"kind": "svc", "namespace": "default", "name": "m"})
    assert code == 200
    code, again = await call(api_nc, "apply", svc("m2", "NodePort", clusterIP="127.254.1.1", ports=[{"port": 80, "nodePort": 30081}]))
    assert code == 201, again


async def test_load_balancer_gets_an_address_from_the_pool(api_nc):
    code, lb = await call(api_nc, "apply", svc("lb", "LoadBalancer"))
    assert code == 201, lb
    ip = lb["status"]["loadBalancer"]["ingress"][0]["ip"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("127.253.0.0/24")
    assert lb["spec"]["ports"][0]["nodePort"]
    code, again = await call(api_nc, "apply", svc("lb", "LoadBalancer", sessionAffinity="ClientIP"))
    assert again["status"]["loadBalancer"]["ingress"][0]["ip"] == ip


async def test_concurrent_creates_never_share_an_address(api_nc):
    results = await asyncio.gather(*(call(api_nc, "apply", svc(f"s{i}", "NodePort")) for i in range(40)))
    assert all(code == 201 for code, _ in results), [r for r in results if r[0] != 201]
    ips = [o["spec"]["clusterIP"] for _, o in results]
    ports = [o["spec"]["ports"][0]["nodePort"] for _, o in results]
    assert len(set(ips)) == 40 and len(set(ports)) == 40


async def test_a_tiny_range_is_shared_fairly_under_contention_then_full(nc):
    ranges = Ranges(service_cidr="127.254.7.0/29", node_port_range=(30000, 30003))
    allocators = [Allocator(nc.jetstream(), ranges) for _ in range(3)]
    from schemas.validation import decode

    def service(i: int):
        return decode({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"t{i}", "namespace": "default"},
                       "spec": {"type": "NodePort", "ports": [{"port": 80}]}})

    results = await asyncio.gather(*(allocators[i % 3].assign(service(i), None) for i in range(4)), return_exceptions=True)
    ok = [r[0] for r in results if not isinstance(r, Exception)]
    assert len(ok) == 4
    assert len({s.spec.clusterIP for s in ok}) == 4 and len({s.spec.ports[0].nodePort for s in ok}) == 4
    from kyb import errors

    with pytest.raises(errors.Invalid) as e:
        await allocators[0].assign(service(9), None)
    assert "full" in str(e.value) or "no free" in str(e.value)
    # The failed assignment claimed nothing it kept: freeing one service lets another in.
    await allocators[1].release(ok[0])
    again, _ = await allocators[2].assign(service(10), None)
    assert again.spec.clusterIP == ok[0].spec.clusterIP or again.spec.ports[0].nodePort == ok[0].spec.ports[0].nodePort


async def test_repair_frees_leaked_allocations_after_a_grace(nc):
    alloc = Allocator(nc.jetstream(), Ranges())
    from schemas.validation import decode

    s = decode({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "leak", "namespace": "default"},
                "spec": {"ports": [{"port": 80}], "clusterIP": "127.254.3.3"}})
    leaked, _ = await alloc.assign(s, None)
    assert await alloc.repair([leaked], older_than=10, now=0) == 0  # held by a service
    assert await alloc.repair([], older_than=10, now=100) == 0  # orphan seen first
    assert await alloc.repair([], older_than=10, now=105) == 0  # not yet past the grace
    assert await alloc.repair([], older_than=10, now=111) == 1
    again, _ = await alloc.assign(s, None)
    assert again.spec.clusterIP == "127.254.3.3"
