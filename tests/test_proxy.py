"""The proxy on a real nats-server with api and endpoints in-process; backends are hollow pods
whose "container" is an asyncio echo server bound on the pod's own 127.x address."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time

import nats
import pytest

from tests.test_proxy_helpers import FAST, Backend, NetCluster, ask, ask_udp, random_subnet, wait_for


@pytest.fixture
async def net(nats_url):
    nc = await nats.connect(nats_url)
    node = f"127.{random.randint(60, 90)}.{random.randint(0, 255)}.1"
    c = NetCluster(nc, nats_url, {**FAST, "node_address": node})
    c.node = node
    c.subnet = random_subnet()
    c.backends = []
    await c.start("api", "endpoints", "proxy")
    try:
        yield c
    finally:
        for b in c.backends:
            await b.stop()
        await c.close()
        await nc.close()


async def pods(net, app: str, n: int, *, udp: bool = False, protocol: str = "TCP") -> list[Backend]:
    out = []
    for i in range(n):
        ip = f"{net.subnet}.{len(net.backends) + 10}"
        b = Backend(f"{app}-{i}", ip)
        await b.start(udp=udp)
        net.backends.append(b)
        await net.pod(f"{app}-{i}", ip, {"app": app}, protocol=protocol)
        out.append(b)
    return out


async def replies(ip: str, port: int, n: int) -> list[str]:
    return [(await ask(ip, port)).split(":")[0] for _ in range(n)]


async def test_cluster_ip_node_port_and_load_balancer_reach_every_pod(net):
    await pods(net, "web", 3)
    svc = await net.service("web", "LoadBalancer")
    cip = svc["spec"]["clusterIP"]
    node_port = svc["spec"]["ports"][0]["nodePort"]
    lb = svc["status"]["loadBalancer"]["ingress"][0]["ip"]
    expected = {"web-0", "web-1", "web-2"}

    async def spread(ip, port):
        return set(await replies(ip, port, 6)) == expected

    for ip, port in [(cip, 80), (net.node, node_port), (lb, 80)]:
        await wait_for(lambda ip=ip, port=port: spread(ip, port), 15, f"traffic to {ip}:{port} spread over all pods")
    assert await ask(cip, 80, "hello") in {f"{n}:hello" for n in expected}


async def test_pod_failing_readiness_gets_no_new_traffic_but_keeps_its_connection(net):
    await pods(net, "web", 2)
    svc = await net.service("web")
    cip = svc["spec"]["clusterIP"]
    await wait_for(lambda: _all_seen(cip, {"web-0", "web-1"}), 15, "both pods serve")
    # An established connection to web-0.
    held = None
    for _ in range(10):
        reader, writer = await asyncio.open_connection(cip, 80)
        writer.write(b"first\n")
        if (await reader.readline()).startswith(b"web-0:"):
            held = (reader, writer)
            break
        writer.close()
    assert held is not None
    await net.set_ready("web-0", False)

    async def only_web1():
        return set(await replies(cip, 80, 6)) == {"web-1"}

    await wait_for(only_web1, 5, "not-ready pod dropped from rotation")
    reader, writer = held
    writer.write(b"again\n")
    assert await asyncio.wait_for(reader.readline(), 3) == b"web-0:again\n"
    writer.close()


async def _all_seen(ip: str, names: set[str]) -> bool:
    return set(await replies(ip, 80, 2 * len(names))) == names


async def test_scaling_to_zero_refuses_new_connections_at_once(net):
    await pods(net, "web", 1)
    svc = await net.service("web")
    cip = svc["spec"]["clusterIP"]
    await wait_for(lambda: _all_seen(cip, {"web-0"}), 15, "pod serves")
    await net.store.delete("Pod", "default", "web-0", grace_period_seconds=0)

    async def refused():
        try:
            await ask(cip, 80)
        except (ConnectionResetError, ConnectionRefusedError):
            return True
        return False

    await wait_for(refused, 5, "connections refused with no endpoints")
    started = time.monotonic()
    with pytest.raises((ConnectionResetError, ConnectionRefusedError)):
        await ask(cip, 80, timeout=5)
    # Refused, not left hanging until a timeout.
    assert time.monotonic() - started < 4


async def test_a_dead_endpoint_is_skipped_for_another(net):
    await pods(net, "web", 1)
    # A second ready pod whose address has nothing listening.
    await net.pod("web-dead", f"{net.subnet}.250", {"app": "web"})
    svc = await net.service("web")
    cip = svc["spec"]["clusterIP"]

    async def two_endpoints():
        ep = await net.store.get("Endpoints", "default", "web")
        return sum(len(s.addresses) for s in ep.subsets) == 2

    await wait_for(two_endpoints, 10, "both pods are endpoints")
    await wait_for(lambda: _all_seen(cip, {"web-0"}), 10, "proxy knows the pods")
    assert await replies(cip, 80, 8) == ["web-0"] * 8


async def test_client_ip_affinity_keeps_a_client_on_one_pod(net):
    await pods(net, "web", 3)
    svc = await net.service("web", sessionAffinity="ClientIP")
    cip = svc["spec"]["clusterIP"]
    await wait_for(lambda: ask(cip, 80), 15, "service answers")
    assert len(set(await replies(cip, 80, 9))) == 1


async def test_deleting_a_service_closes_its_listener(net):
    await pods(net, "web", 1)
    svc = await net.service("web", "NodePort")
    cip, node_port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["nodePort"]
    await wait_for(lambda: _all_seen(cip, {"web-0"}), 15, "pod serves")
    await net.api.delete("svc", "default", "web")

    async def closed():
        for ip, port in [(cip, 80), (net.node, node_port)]:
            try:
                await ask(ip, port, timeout=1)
                return False
            except ConnectionRefusedError:
                continue
        return True

    await wait_for(closed, 5, "listeners closed")
    # The address and port are free again: anyone may bind them.
    with socket.socket() as s:
        s.bind((cip, 80))


async def test_udp_reaches_the_pods(net):
    await pods(net, "dns", 2, udp=True, protocol="UDP")
    svc = await net.service("dns", ports=[{"name": "http", "port": 53, "targetPort": "http", "protocol": "UDP"}])
    cip = svc["spec"]["clusterIP"]

    async def answered():
        with contextlib.suppress(TimeoutError):
            return await ask_udp(cip, 53, b"q1")
        return None

    reply = await wait_for(answered, 15, "UDP answer")
    assert reply in (b"dns-0:q1", b"dns-1:q1")
    # The same client keeps its session (and backend) for later datagrams.
    assert (await ask_udp(cip, 53, b"q2")).endswith(b":q2")
