"""Pods use the cluster DNS (``network: cni``): two test "hosts" (network namespaces on a
test-made bridge), each with its kubelet and its dns (the cluster DNS address 10.96.0.10 on a
dummy device of the host's namespace), and an upstream resolver the test runs itself in a third
namespace on the same bridge — no query leaves the test's namespaces. Pods' resolv.conf and
/etc/hosts are read and names resolved from inside the pods with glibc (``getent``)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from kyb.netns import socket_in
from kyb.serve import run_services
from schemas.pod import Pod
from services.kubelet.runtime.process import netns_name
from tests.cluster import QUIET, wait_for
from tests.netns import Namespaces, netns  # noqa: F401 (fixture)
from tests.podnet_cluster import PodNet

UNDERLAY = {"dn-a": "10.251.0.1", "dn-b": "10.251.0.2"}
UPSTREAM = "10.251.0.53"
OUTSIDE = {"outside.example.test": "10.251.0.99"}


class Upstream(asyncio.DatagramProtocol):
    """The test's own resolver: OUTSIDE's names, NXDOMAIN for anything else."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.asked: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: object) -> None:
        request = DNSRecord.parse(data)
        name = str(request.q.qname).rstrip(".").lower()
        self.asked.append(name)
        reply = request.reply()
        if name in OUTSIDE and request.q.qtype == QTYPE.A:
            reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=5, rdata=A(OUTSIDE[name])))
        elif name not in OUTSIDE:
            reply.header.rcode = RCODE.NXDOMAIN
        assert self.transport is not None
        self.transport.sendto(reply.pack(), addr)


@pytest.fixture
async def dns_hosts(netns: Namespaces, nats_url: str, tmp_path: Path):  # noqa: F811
    net = PodNet(nats_url, netns, tmp_path, "process")
    await net.start()
    agents: list[tuple[asyncio.Event, asyncio.Task]] = []
    transport = None
    try:
        switch = netns.add("sw")
        netns.exec(switch, "ip", "link", "add", "br0", "type", "bridge")
        netns.exec(switch, "ip", "link", "set", "br0", "up")
        resolv = tmp_path / "node-resolv.conf"
        resolv.write_text(f"nameserver {UPSTREAM}\nsearch example.test\noptions timeout:1\n")
        up = netns.add("up")
        netns.veth(up, "eth0", switch, "pu")
        netns.exec(switch, "ip", "link", "set", "pu", "master", "br0")
        netns.exec(up, "ip", "addr", "add", f"{UPSTREAM}/24", "dev", "eth0")
        sock = socket_in(Namespaces.path(up), socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((UPSTREAM, 53))
        transport, upstream = await asyncio.get_running_loop().create_datagram_endpoint(Upstream, sock=sock)
        for i, (name, ip) in enumerate(UNDERLAY.items()):
            host = net.add_host(name, node_ip=ip, resolv_conf=str(resolv))
            netns.veth(host.netns, "eth0", switch, f"p{i}")
            netns.exec(switch, "ip", "link", "set", f"p{i}", "master", "br0")
            netns.exec(host.netns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
            await net.start_kubelet(host)
            stop = asyncio.Event()
            options = {**QUIET, "network": "cni", "netns": Namespaces.path(host.netns), "resolv_conf": str(resolv),
                       "supervise": False}
            agents.append((stop, asyncio.create_task(run_services(["dns"], net.url, options, stop))))
        for (_, task), host in zip(agents, net.hosts.values(), strict=True):
            await wait_for(lambda h=host: answers(netns, h.netns), 20, f"the dns of {host.name} answers",
                           explain=lambda t=task: asyncio.sleep(0, repr(t.exception()) if t.done() else "running"))
        yield net, upstream, up
    finally:
        for stop, task in agents:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 20)
        if transport is not None:
            transport.close()
        await net.close()


async def answers(spaces: Namespaces, ns: str) -> bool:
    done = await asyncio.to_thread(spaces.exec, ns, "dig", "@10.96.0.10", "kubernetes.default.svc.cluster.local",
                                   "+time=1", "+tries=1", check=False)
    return "status: " in done.stdout


def in_pod(pod: Pod, *argv: str) -> subprocess.CompletedProcess[str]:
    """``argv`` as the pod's processes run: its network namespace and its /etc files."""
    return subprocess.run(["ip", "netns", "exec", netns_name(pod.metadata.uid or ""), *argv],
                          capture_output=True, text=True, timeout=20)


async def resolves(pod: Pod, name: str) -> str | None:
    done = await asyncio.to_thread(in_pod, pod, "getent", "hosts", name)
    return done.stdout.split()[0] if done.returncode == 0 and done.stdout.strip() else None


async def test_pods_resolve_services_and_forwarded_names(dns_hosts) -> None:
    net, upstream, _ = dns_hosts
    svc = await net.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
    cluster_ip = svc["spec"]["clusterIP"]
    for pod_name, node in (("client-a", "dn-a"), ("client-b", "dn-b")):
        await net.apply(net.pod_manifest(pod_name, node, ["/bin/busybox", "sleep", "3600"]))
    for pod_name in ("client-a", "client-b"):
        pod = await net.running(pod_name)
        conf = in_pod(pod, "cat", "/etc/resolv.conf").stdout
        assert conf == ("nameserver 10.96.0.10\n"
                        "search default.svc.cluster.local svc.cluster.local cluster.local example.test\n"
                        "options ndots:5\n")
        assert f"{pod.status.podIP}\t{pod_name}" in in_pod(pod, "cat", "/etc/hosts").stdout
        for name in ("web.default.svc.cluster.local", "web", "web.default"):
            assert await wait_for(lambda n=name, p=pod: resolves(p, n), 15, f"{pod_name} resolves {name}") == cluster_ip
        # outside the cluster domain: forwarded to the node's resolver (the test's own)
        assert await resolves(pod, "outside.example.test") == OUTSIDE["outside.example.test"]
        assert await resolves(pod, "nowhere.example.test") is None
    assert "outside.example.test" in upstream.asked
    assert not any(n.endswith("cluster.local") for n in upstream.asked)  # the cluster's names stay home


async def test_dns_policy_none_default_and_host_aliases(dns_hosts) -> None:
    net, _, upstream_ns = dns_hosts
    svc = await net.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
    for host in net.hosts.values():  # the upstream answers the pods of dnsPolicy Default directly
        cidr = await wait_for(lambda h=host: net.pod_cidr(h), 20, f"{host.name}'s podCIDR")
        net.spaces.exec(upstream_ns, "ip", "route", "replace", cidr, "via", UNDERLAY[host.name])
    none = net.pod_manifest("custom", "dn-a", ["/bin/busybox", "sleep", "3600"], dnsPolicy="None",
                            dnsConfig={"nameservers": ["10.96.0.10"], "searches": ["example.test"],
                                       "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]},
                            hostAliases=[{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]}])
    await net.apply(none)
    await net.apply(net.pod_manifest("plain", "dn-b", ["/bin/busybox", "sleep", "3600"], dnsPolicy="Default",
                                     dnsConfig={"options": [{"name": "ndots", "value": "1"}]}))
    custom = await net.running("custom")
    assert in_pod(custom, "cat", "/etc/resolv.conf").stdout == (
        "nameserver 10.96.0.10\nsearch example.test\noptions ndots:2 edns0\n")
    hosts = in_pod(custom, "cat", "/etc/hosts").stdout
    assert "# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n" in hosts
    assert await resolves(custom, "foo.local") == "10.1.2.3"
    assert await resolves(custom, "bar.local") == "10.1.2.3"
    assert await resolves(custom, "outside") == OUTSIDE["outside.example.test"]  # its own search domain
    assert await resolves(custom, "web") is None  # no cluster search domains
    assert await resolves(custom, "web.default.svc.cluster.local") == svc["spec"]["clusterIP"]
    plain = await net.running("plain")
    assert in_pod(plain, "cat", "/etc/resolv.conf").stdout == (
        f"nameserver {UPSTREAM}\nsearch example.test\noptions timeout:1 ndots:1\n")
    assert await resolves(plain, "outside") == OUTSIDE["outside.example.test"]
