"""The nftables proxy on two test "hosts" (network namespaces the test made, joined by a bridge
in a third one that also plays the outside client at 10.251.0.254): each host runs its kubelet
(``network: cni``), netagent (host-gw) and proxy (``proxy_mode: nftables``, ``netns`` = the host),
so table ``ip kyb-proxy`` exists only inside test namespaces. ClusterIPs come from 10.96.0.0/12,
LoadBalancer addresses from 10.252.0.0/24. Every address used is inside the test's namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kyb.netns import socket_in
from schemas.pod import Pod
from services.kubelet.runtime.process import netns_name
from tests.cluster import wait_for
from tests.netns import Namespaces, netns  # noqa: F401 (fixture)
from tests.podnet_cluster import PodNet, wget

UNDERLAY = {"px-a": "10.251.0.1", "px-b": "10.251.0.2"}
OUTSIDE = "10.251.0.254"
SERVICE_CIDR = "10.96.0.0/12"
LB_POOL = "10.252.0.0/24"


def in_netns(path: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a thread that entered network namespace ``path`` (sockets made there stay there)."""
    out: list[Any] = []

    def body() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(path, os.O_RDONLY)
        try:
            assert libc.setns(target, 0x40000000) == 0, os.strerror(ctypes.get_errno())
            try:
                out.append(fn())
            except BaseException as e:  # noqa: BLE001
                out.append(e)
        finally:
            libc.setns(own, 0x40000000)
            os.close(target)
            os.close(own)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def http_get(ns_path: str, ip: str, port: int, path: str = "/index.html", timeout: float = 3.0) -> tuple[int, str]:
    def go() -> tuple[int, str]:
        with socket.create_connection((ip, port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.decode(errors="replace").replace("\r\n", "\n").partition("\n\n")
        # busybox httpd gives CGI scripts REMOTE_ADDR as [::ffff:a.b.c.d]
        return int(head.split()[1]), body.strip().removeprefix("[::ffff:").removesuffix("]")

    return in_netns(ns_path, go)


class Cluster:
    def __init__(self, net: PodNet, spaces: Namespaces, base: Path) -> None:
        self.net = net
        self.spaces = spaces
        self.base = base

    @property
    def outside(self) -> str:
        return Namespaces.path(self.net.switch)

    def host_ns(self, name: str) -> str:
        return Namespaces.path(self.net.hosts[name].netns)

    def pod_ns(self, pod: Pod) -> str:
        return f"/run/netns/{netns_name(pod.metadata.uid or '')}"

    def start_proxy(self, name: str) -> None:
        self.net.start_agent(self.net.hosts[name], "proxy", proxy_mode="nftables", service_cidr=SERVICE_CIDR)

    async def stop_proxy(self, name: str) -> None:
        await self.net.stop_agent(self.net.hosts[name], "proxy")

    def server(self, name: str, node: str, **spec: Any) -> dict[str, Any]:
        """httpd on 8080 serving its name at /index.html and the client's address at
        /cgi-bin/ip; ready while the file ``ready`` is in its directory."""
        d = self.base / "www" / name
        (d / "cgi-bin").mkdir(parents=True, exist_ok=True)
        (d / "index.html").write_text(name + "\n")
        (d / "ready").write_text("ok\n")
        cgi = d / "cgi-bin" / "ip"
        cgi.write_text('#!/bin/sh\necho "Content-Type: text/plain"\necho\necho "$REMOTE_ADDR"\n')
        cgi.chmod(0o755)
        m = self.net.pod_manifest(name, node, ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", str(d)], **spec)
        c = m["spec"]["containers"][0]
        c["ports"] = [{"containerPort": 8080, "name": "http"}]
        # exec, not httpGet: the kubelet runs in the test's own namespace, from where pod
        # addresses are not to be sent to (its probes would leave by that namespace's routes)
        c["readinessProbe"] = {"exec": {"command": ["/bin/busybox", "test", "-f", str(d / "ready")]},
                               "periodSeconds": 1, "failureThreshold": 1}
        return m

    async def pods(self, app: str, names_nodes: list[tuple[str, str]]) -> list[Pod]:
        for name, node in names_nodes:
            m = self.server(name, node)
            m["metadata"]["labels"] = {"app": app}
            await self.net.apply(m)
        return [await self.net.running(n) for n, _ in names_nodes]

    async def service(self, name: str, app: str, **spec: Any) -> dict[str, Any]:
        m = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
             "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}], **spec}}
        return await self.net.apply(m)


@pytest.fixture
async def cluster(netns: Namespaces, nats_url: str, tmp_path):  # noqa: F811
    net = PodNet(nats_url, netns, tmp_path, "process")
    c = Cluster(net, netns, tmp_path)
    await net.start("endpoints", service_cidr=SERVICE_CIDR, lb_pool=LB_POOL)
    try:
        for host in net.switched_hosts(UNDERLAY, switch_address=OUTSIDE):
            await net.start_kubelet(host)
            net.start_agent(host, "netagent", backend="host-gw", resync_seconds=2)
            c.start_proxy(host.name)
        # LoadBalancer addresses are announced by host a (as MetalLB's L2 mode would)
        netns.exec(net.switch, "ip", "route", "add", LB_POOL, "via", UNDERLAY["px-a"])
        yield c
    finally:
        await net.close()  # agents, kubelets and pods; the namespaces (and tables in them) go with the fixture


async def until(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    return await wait_for(fn, timeout, what, ignoring=(AssertionError, OSError), interval=0.3)


async def reached(c: Cluster, client: Pod, ip: str, port: int = 80, path: str = "/index.html") -> str:
    done = await asyncio.to_thread(c.net.pod_exec, client, wget(ip, port, path))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def spread(c: Cluster, fetch: Callable[[], Any], want: set[str], what: str, tries: int = 60) -> set[str]:
    seen: set[str] = set()
    for _ in range(tries):
        with contextlib.suppress(AssertionError, OSError):
            seen.add(await fetch())
        if want <= seen:
            return seen
    raise AssertionError(f"{what}: saw {seen}, want {want}")


async def test_cluster_ip_node_port_and_load_balancer_spread_over_both_hosts(cluster: Cluster) -> None:
    c = cluster
    await c.pods("web", [("web-a", "px-a"), ("web-b", "px-b")])
    await c.net.apply(c.net.pod_manifest("client", "px-a", ["/bin/busybox", "sleep", "3600"]))
    client = await c.net.running("client")
    svc = await c.service("web", "web", type="LoadBalancer")
    cip, node_port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["nodePort"]
    lb = svc["status"]["loadBalancer"]["ingress"][0]["ip"]
    assert ipaddress.ip_address(cip) in ipaddress.ip_network(SERVICE_CIDR) and ipaddress.ip_address(lb) in ipaddress.ip_network(LB_POOL)
    want = {"web-a", "web-b"}
    await until(lambda: reached(c, client, cip), 30, "the ClusterIP answers")
    await spread(c, lambda: reached(c, client, cip), want, "pod -> ClusterIP")
    for host_ip in UNDERLAY.values():  # a NodePort on every node, from outside the cluster
        await spread(c, lambda ip=host_ip: asyncio.to_thread(lambda: http_get(c.outside, ip, node_port)[1]), want,
                     f"outside -> {host_ip}:{node_port}")
    await spread(c, lambda: asyncio.to_thread(lambda: http_get(c.outside, lb, 80)[1]), want, "outside -> LoadBalancer")
    # from the node itself (output hook: the proxy's kyb-svc route gets the connect past routing)
    await spread(c, lambda: asyncio.to_thread(lambda: http_get(c.host_ns("px-b"), cip, 80)[1]), want, "node -> ClusterIP")
    # unallocated ClusterIPs and unserved ports are refused at once
    for ip, port in (("10.96.255.254", 80), (cip, 81)):
        t0 = time.monotonic()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.to_thread(http_get, c.pod_ns(client), ip, port)
        assert time.monotonic() - t0 < 1.0


async def test_affinity_readiness_and_scale_to_zero(cluster: Cluster) -> None:
    c = cluster
    await c.pods("sticky", [("st-a", "px-a"), ("st-b", "px-b")])
    await c.net.apply(c.net.pod_manifest("client", "px-a", ["/bin/busybox", "sleep", "3600"]))
    client = await c.net.running("client")
    svc = await c.service("sticky", "sticky", sessionAffinity="ClientIP",
                          sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    cip = svc["spec"]["clusterIP"]
    first = await until(lambda: reached(c, client, cip), 30, "the sticky ClusterIP answers")
    for _ in range(15):
        assert await reached(c, client, cip) == first  # affinity pins the client
    # readiness loss: the endpoint leaves new connections
    (c.base / "www" / first / "ready").unlink()
    other = ({"st-a", "st-b"} - {first}).pop()

    async def moved() -> bool:
        return await reached(c, client, cip) == other

    await until(moved, 30, f"{first} out of the Service once unready")
    for _ in range(10):
        assert await reached(c, client, cip) == other
    # scale to zero: refused at once, not a timeout
    for name in ("st-a", "st-b"):
        await c.net.delete_pod(name)

    async def refused() -> bool:
        t0 = time.monotonic()
        try:
            await asyncio.to_thread(http_get, c.pod_ns(client), cip, 80)
        except ConnectionRefusedError:
            return time.monotonic() - t0 < 1.0
        except OSError:
            return False
        return False

    await until(refused, 30, "connections to a Service without endpoints refused at once")


async def test_established_connection_survives_a_proxy_restart(cluster: Cluster) -> None:
    c = cluster
    echo = c.net.pod_manifest("echo-b", "px-b", ["/bin/busybox", "nc", "-ll", "-p", "9000", "-e", "/bin/cat"])
    echo["metadata"]["labels"] = {"app": "echo"}
    await c.net.apply(echo)
    await c.net.apply(c.net.pod_manifest("client", "px-a", ["/bin/busybox", "sleep", "3600"]))
    client = await c.net.running("client")
    await c.net.running("echo-b")
    svc = await c.net.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": "default"},
                             "spec": {"selector": {"app": "echo"}, "ports": [{"port": 9000}]}})
    cip = svc["spec"]["clusterIP"]

    def open_conn() -> socket.socket:
        s = socket.create_connection((cip, 9000), timeout=5)
        s.sendall(b"before\n")
        assert s.recv(100) == b"before\n"
        return s

    conn = await until(lambda: asyncio.to_thread(in_netns, c.pod_ns(client), open_conn), 30, "the echo Service answers")

    try:
        await c.stop_proxy("px-a")
        # a chain no proxy makes: gone once the new proxy's first sync has replaced the table
        c.spaces.exec(c.net.hosts["px-a"].netns, "nft", "add", "chain", "ip", "kyb-proxy", "left-by-the-test")
        c.start_proxy("px-a")

        def replaced() -> bool:
            listed = c.spaces.exec(c.net.hosts["px-a"].netns, "nft", "list", "chains", "ip").stdout
            return "left-by-the-test" not in listed and "kyb-proxy" in listed

        await until(replaced, 30, "the restarted proxy's full resync replaced the table")
        await until(lambda: asyncio.to_thread(lambda: in_netns(c.pod_ns(client), open_conn).close() or True), 30,
                    "the restarted proxy serves the ClusterIP")
        conn.sendall(b"after\n")
        assert await asyncio.to_thread(conn.recv, 100) == b"after\n"  # the old connection still works
    finally:
        conn.close()


async def test_local_traffic_policy_keeps_the_client_address(cluster: Cluster) -> None:
    c = cluster
    await c.pods("loc", [("loc-b", "px-b")])
    svc = await c.service("loc", "loc", type="LoadBalancer", externalTrafficPolicy="Local")
    node_port, health = svc["spec"]["ports"][0]["nodePort"], svc["spec"]["healthCheckNodePort"]
    assert health

    def remote(ip: str) -> str:
        code, body = http_get(c.outside, ip, node_port, "/cgi-bin/ip")
        assert code == 200 and body, (code, body)
        return body

    seen = await until(lambda: asyncio.to_thread(remote, UNDERLAY["px-b"]), 30, "the Local NodePort answers")
    assert seen == OUTSIDE  # not masqueraded
    # the node without an endpoint drops (Local), and its health check says so
    with pytest.raises(OSError):
        await asyncio.to_thread(lambda: http_get(c.outside, UNDERLAY["px-a"], node_port, timeout=1.0))

    async def health_is(ip: str, code: int) -> bool:
        with contextlib.suppress(OSError):
            return (await asyncio.to_thread(http_get, c.outside, ip, health, "/healthz"))[0] == code
        return False

    await until(lambda: health_is(UNDERLAY["px-b"], 200), 20, "health check 200 where an endpoint is")
    await until(lambda: health_is(UNDERLAY["px-a"], 503), 20, "health check 503 where none is")
    # policy Cluster masquerades: the pod sees a node address
    await c.service("loc", "loc", type="LoadBalancer", externalTrafficPolicy="Cluster")
    await until(lambda: asyncio.to_thread(remote, UNDERLAY["px-a"]), 30, "px-a forwards once the policy is Cluster")
    assert await asyncio.to_thread(remote, UNDERLAY["px-a"]) != OUTSIDE


async def test_hairpin_and_pod_to_cluster_ip_on_the_other_host(cluster: Cluster) -> None:
    c = cluster
    [me] = await c.pods("self", [("self-a", "px-a")])
    [far] = await c.pods("far", [("far-b", "px-b")])
    cip = (await c.service("self", "self"))["spec"]["clusterIP"]
    far_ip = (await c.service("far", "far"))["spec"]["clusterIP"]
    # a pod reaching itself through its Service (hairpin: masqueraded to the bridge's address)
    assert await until(lambda: reached(c, me, cip), 30, "a pod reaches itself via its ClusterIP") == "self-a"
    # a pod on px-a -> ClusterIP -> the pod on px-b
    assert await until(lambda: reached(c, me, far_ip), 30, "px-a pod -> ClusterIP -> px-b pod") == "far-b"
    # and the pod on px-b sees the client pod's own address (no NAT between pods)
    seen = await reached(c, me, far_ip, path="/cgi-bin/ip")
    assert seen.removeprefix("[::ffff:").removesuffix("]") == me.status.podIP
    # UDP: a client that keeps sending from one port is moved to the new endpoint when the old
    # one goes (the proxy flushes the conntrack entry; kept, it would stay DNATed to the dead pod)
    await c.net.apply(udp_server(c, "udp-1", "px-b"))
    udp = await c.net.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "udp", "namespace": "default"},
                             "spec": {"selector": {"app": "udp"},
                                      "ports": [{"protocol": "UDP", "port": 53, "targetPort": 5353}]}})
    sock = socket_in(c.pod_ns(me), socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("0.0.0.0", 40053))
        sock.settimeout(0.5)

        def ask() -> str:
            sock.sendto(b"who", (udp["spec"]["clusterIP"], 53))
            return sock.recv(100).decode()

        assert await until(lambda: asyncio.to_thread(ask), 30, "the UDP ClusterIP answers") == "udp-1"
        await c.net.delete_pod("udp-1")
        await c.net.apply(udp_server(c, "udp-2", "px-b"))

        async def moved() -> bool:
            with contextlib.suppress(OSError):
                return await asyncio.to_thread(ask) == "udp-2"
            return False

        await until(moved, 30, "the same client port answered by the new UDP endpoint")
    finally:
        sock.close()


def udp_server(c: Cluster, name: str, node: str) -> dict[str, Any]:
    """Answers every datagram on 5353 with its name."""
    code = ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('0.0.0.0', 5353))\n"
            f"while True:\n    _, peer = s.recvfrom(100)\n    s.sendto(b'{name}', peer)\n")
    m = c.net.pod_manifest(name, node, [sys.executable, "-c", code])
    m["metadata"]["labels"] = {"app": "udp"}
    return m


async def test_a_front_end_reaches_a_redis_service_on_the_other_host_by_dns_name(cluster: Cluster) -> None:
    """Kubernetes' guestbook shape: the front end on px-a finds ``redis`` by its DNS name (the
    cluster DNS on 10.96.0.10 of every host, ClusterFirst resolv.conf) and reaches its pods on
    px-b through the ClusterIP the proxy serves."""
    c = cluster
    for host in c.net.hosts.values():
        c.net.start_agent(host, "dns")  # stopped with the cluster
    await c.pods("redis", [("redis-b", "px-b")])
    svc = await c.service("redis", "redis")
    await c.net.apply(c.net.pod_manifest("frontend", "px-a", ["/bin/busybox", "sleep", "3600"]))
    frontend = await c.net.running("frontend")

    def fetch(name: str) -> str:
        # The pod's own view: its network namespace and the resolv.conf its kubelet wrote.
        script = f"import urllib.request; print(urllib.request.urlopen('http://{name}/index.html', timeout=3).read().decode())"
        done = subprocess.run(["ip", "netns", "exec", netns_name(frontend.metadata.uid or ""), sys.executable,
                               "-c", script], capture_output=True, text=True, timeout=20)
        assert done.returncode == 0, done.stderr[-500:]
        return done.stdout.strip()

    for name in ("redis", "redis.default", "redis.default.svc.cluster.local"):
        assert await until(lambda n=name: asyncio.to_thread(fetch, n), 40,
                           f"the front end on px-a reaches {name} on px-b") == "redis-b"
    assert svc["spec"]["clusterIP"].startswith("10.")
