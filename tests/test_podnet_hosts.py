"""Pod network across hosts: two test "hosts" (network namespaces) joined by veth pairs to a
bridge in a third test namespace (their only link: no route leads out of the test's
namespaces), each with its kubelet (``network: cni``) and its netagent. A pod on one host
reaches a pod on the other, with the host-gw and the vxlan backends; the routes follow Nodes
joining and leaving; the cluster and service CIDRs are unreachable beneath them. On the same
hosts: a pod's hostPort answers on its host's address from the other host (the portmap plugin),
and a hostNetwork pod has its node's address as podIP and serves in its host's namespace."""

from __future__ import annotations

import asyncio
import json

import pytest

from services.netagent.plan import ROUTE_PROTO, VXLAN_DEVICE
from tests.cluster import wait_for
from tests.netns import Namespaces, netns  # noqa: F401 (fixture)
from tests.podnet_cluster import CLUSTER_CIDR, PodNet, httpd, wget

UNDERLAY = {"pn-a": "10.251.0.1", "pn-b": "10.251.0.2"}


@pytest.fixture
async def two_hosts(netns: Namespaces, nats_url: str, tmp_path):  # noqa: F811
    net = PodNet(nats_url, netns, tmp_path, "process")
    await net.start()
    try:
        net.switched_hosts(UNDERLAY)
        yield net
    finally:
        await net.close()


HOST_PORT = 18080  # the hostPort pod's, on pn-b's address
HOST_NETWORK_PORT = 18081  # where the hostNetwork pod listens, in pn-b's namespace


async def hostport_and_host_network(net: PodNet) -> None:
    """From pn-a's own namespace (a host, not a pod): pn-b's address on the hostPort reaches the
    pod behind it, and the hostNetwork pod answers on pn-b's address, which is its podIP."""
    b = UNDERLAY["pn-b"]
    hostnet = await net.running("hostnet")
    assert hostnet.status.podIP == b and [ip.ip for ip in hostnet.status.podIPs] == [b]
    hostport = await net.running("hostport")
    assert hostport.status.podIP.startswith("10.250.")

    def from_pn_a(port: int) -> bool:
        done = net.spaces.exec(net.hosts["pn-a"].netns, *wget(b, port), check=False)
        return done.returncode == 0 and "hello" in done.stdout

    await wait_for(lambda: from_pn_a(HOST_PORT), 20, f"pn-a reaches {b}:{HOST_PORT}, the hostPort on pn-b")
    await wait_for(lambda: from_pn_a(HOST_NETWORK_PORT), 20, f"pn-a reaches the hostNetwork pod on {b}")
    # the hostPort is portmap's DNAT in pn-b's namespace (the kubelet runs its plugins there)
    assert str(HOST_PORT) in net.spaces.exec(net.hosts["pn-b"].netns, "iptables-save", "-t", "nat").stdout


def routes(net: PodNet, name: str) -> list[dict]:
    out = net.spaces.exec(net.hosts[name].netns, "ip", "-j", "route", "show", "proto", ROUTE_PROTO).stdout
    return json.loads(out or "[]")


@pytest.mark.parametrize("backend", [pytest.param("host-gw", id="host-gw"), pytest.param("vxlan", id="vxlan")])
async def test_pods_reach_each_other_across_hosts(two_hosts, backend: str) -> None:
    net = two_hosts
    for name in UNDERLAY:
        await net.start_kubelet(net.hosts[name])
        net.start_agent(net.hosts[name], "netagent", backend=backend, resync_seconds=2)
    await net.apply(net.pod_manifest("server", "pn-b", httpd()))
    await net.apply(net.pod_manifest("client", "pn-a", ["/bin/busybox", "sleep", "3600"]))
    hostport = net.pod_manifest("hostport", "pn-b", httpd(8080))
    hostport["spec"]["containers"][0]["ports"] = [{"containerPort": 8080, "hostPort": HOST_PORT}]
    await net.apply(hostport)
    await net.apply(net.pod_manifest("hostnet", "pn-b", httpd(HOST_NETWORK_PORT), hostNetwork=True))
    server = await net.running("server")
    client = await net.running("client")
    cidr_a, cidr_b = await net.pod_cidr(net.hosts["pn-a"]), await net.pod_cidr(net.hosts["pn-b"])
    assert cidr_a != cidr_b

    async def reached() -> bool:
        done = await asyncio.to_thread(net.pod_exec, client, wget(server.status.podIP))
        return done.returncode == 0 and "hello" in done.stdout

    await wait_for(reached, 30, f"a pod on pn-a reaches a pod on pn-b ({backend})")

    def route_to(name: str, dst: str) -> dict | None:
        return next((r for r in routes(net, name) if r["dst"] == dst and r.get("type") != "unreachable"), None)

    on_a = await wait_for(lambda: route_to("pn-a", cidr_b), 10, "pn-a's route to pn-b's pods")
    if backend == "host-gw":
        assert on_a["gateway"] == UNDERLAY["pn-b"]
    else:
        assert on_a["dev"] == VXLAN_DEVICE
    assert route_to("pn-a", cidr_a) is None  # its own range stays on its bridge
    unreachable = {r["dst"] for r in routes(net, "pn-a") if r.get("type") == "unreachable"}
    assert unreachable == {CLUSTER_CIDR, "10.96.0.0/12"}
    # nothing meant for the cluster leaves: an unallocated pod address is refused on the node
    done = net.spaces.exec(net.hosts["pn-a"].netns, "ip", "route", "get", "10.250.200.7", check=False)
    assert done.returncode != 0 or "unreachable" in done.stdout

    await hostport_and_host_network(net)

    # a Node leaving takes its route along
    await net.stop_kubelet(net.hosts["pn-b"])
    await net.remove_pods(net.hosts["pn-b"])
    node = await net.store.get("Node", None, "pn-b")
    await net.store.delete("Node", None, "pn-b", resource_version=node.metadata.resourceVersion)
    await wait_for(lambda: route_to("pn-a", cidr_b) is None, 10, "pn-b's route gone from pn-a")
