"""NetworkPolicy enforced across hosts: two test "hosts" (network namespaces on a test-made
bridge), each with its kubelet (``network: cni``), netagent and netpol agent. Real HTTP
connections between pods must pass or must fail for the Kubernetes documentation's policies
(default-deny-ingress, allow-all-ingress, default-deny-egress, allow-all-egress,
default-deny-all, the podSelector + namespaceSelector + ipBlock + ports example, multi-port
egress with endPort; addresses adapted to the test's own ranges), and follow changes of pod
labels, namespace labels and policies. Nothing leaves the test's namespaces."""

from __future__ import annotations

import asyncio
import json

import pytest

from services.netpol.plan import TABLE
from tests.cluster import wait_for
from tests.netns import Namespaces, netns  # noqa: F401 (fixture)
from tests.podnet_cluster import CLUSTER_CIDR, PodNet

UNDERLAY = {"np-a": "10.251.0.1", "np-b": "10.251.0.2"}


@pytest.fixture
async def cluster(netns: Namespaces, nats_url: str, tmp_path):  # noqa: F811
    net = PodNet(nats_url, netns, tmp_path, "process")
    await net.start()
    try:
        for host in net.switched_hosts(UNDERLAY):
            await net.start_kubelet(host)
            net.start_agent(host, "netagent", backend="host-gw", resync_seconds=2)
            net.start_agent(host, "netpol", resync_seconds=5)
        yield net
    finally:
        await net.close()


def servers(*ports: int) -> list[str]:
    """busybox httpd on each port, the last in the foreground."""
    parts = [f"/bin/busybox httpd -p {p} -h ." for p in ports[:-1]]
    return ["/bin/sh", "-c", " ; ".join(["echo hello > index.html", *parts, f"exec /bin/busybox httpd -f -p {ports[-1]} -h ."])]


SLEEP = ["/bin/busybox", "sleep", "3600"]
PODS = {  # name: (node, namespace, labels, command, container ports)
    "db": ("np-b", "default", {"role": "db"}, servers(6379, 8080), {"redis": 6379, "http": 8080}),
    "frontend": ("np-a", "default", {"role": "frontend"}, SLEEP, {}),
    "other": ("np-a", "default", {}, SLEEP, {}),
    "far": ("np-b", "default", {}, SLEEP, {}),
    "proj": ("np-a", "myproject", {}, SLEEP, {}),
    "ext": ("np-a", "myproject", {"app": "ext"}, servers(32000, 32768, 33000), {}),
}


def pod_manifest(net: PodNet, name: str, labels: dict | None = None) -> dict:
    node, ns, default_labels, command, ports = PODS[name]
    m = net.pod_manifest(name, node, command)
    m["metadata"].update(namespace=ns, labels=default_labels if labels is None else labels)
    m["spec"]["containers"][0]["ports"] = [{"name": k, "containerPort": v} for k, v in ports.items()]
    return m


def namespace(labels: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "myproject", "labels": labels}}


def netpol(name: str, spec: dict) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


async def delete_policy(net: PodNet, name: str) -> None:
    query = {"kind": "networkpolicy", "namespace": "default", "name": name}
    await net.nc.request("kyb.api.delete", json.dumps(query).encode(), timeout=10)


async def test_network_policies_across_hosts(cluster: PodNet) -> None:
    net = cluster
    await net.apply(namespace({"project": "myproject"}))
    for name in PODS:
        await net.apply(pod_manifest(net, name))
    pods = {}
    for name, (_, ns, *_rest) in PODS.items():
        async def running(n=name, ns=ns):
            p = await net.store.get("Pod", ns, n)
            return p if p.status.phase == "Running" and p.status.podIP else None
        pods[name] = await wait_for(running, 60, f"pod {name} Running")
    ip = {n: p.status.podIP for n, p in pods.items()}
    cidr_a = (await net.store.get("Node", None, "np-a")).spec.podCIDR

    async def reaches(client: str, server: str, port: int) -> bool:
        url = f"http://{ip[server]}:{port}/index.html"
        argv = ["/bin/busybox", "timeout", "3", "/bin/busybox", "wget", "-q", "-O", "-", url]
        done = await asyncio.to_thread(net.pod_exec, pods[client], argv, 15)
        return done.returncode == 0 and "hello" in done.stdout

    async def expect(what: str, flows: dict[tuple[str, str, int], bool], timeout: float = 15) -> None:
        last: dict = {}

        async def check() -> bool:
            got = await asyncio.gather(*(reaches(*f) for f in flows))
            last.update(zip(flows, got, strict=True))
            return all(g == want for g, want in zip(got, flows.values(), strict=True))

        async def explain() -> str:
            return ", ".join(f"{c}->{s}:{p} {'passes' if last.get((c, s, p)) else 'fails'}"
                             for (c, s, p), want in flows.items() if last.get((c, s, p)) != want)

        await wait_for(check, timeout, what, explain=explain)

    everything = {("frontend", "db", 6379): True, ("other", "db", 8080): True, ("proj", "db", 6379): True,
                  ("db", "ext", 32000): True, ("db", "ext", 33000): True}
    await expect("no policy: every pod reaches every pod", everything)

    # default-deny-ingress, then allow-all-ingress on top of it (policies add up)
    await net.apply(netpol("default-deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    await expect("default-deny-ingress", {("frontend", "db", 6379): False, ("proj", "db", 8080): False,
                                          ("db", "ext", 32000): True})  # ext's namespace has no policy
    await net.apply(netpol("allow-all-ingress", {"podSelector": {}, "ingress": [{}], "policyTypes": ["Ingress"]}))
    await expect("allow-all-ingress", {("frontend", "db", 6379): True, ("proj", "db", 8080): True})
    for name in ("default-deny-ingress", "allow-all-ingress"):
        await delete_policy(net, name)

    # default-deny-egress: db cannot call out, yet answers callers (replies of allowed connections pass)
    await net.apply(netpol("default-deny-egress", {"podSelector": {}, "policyTypes": ["Egress"]}))
    await expect("default-deny-egress", {("db", "ext", 32000): False, ("far", "db", 6379): False,
                                         ("proj", "db", 6379): True})
    await net.apply(netpol("allow-all-egress", {"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]}))
    await expect("allow-all-egress", {("db", "ext", 32000): True, ("far", "db", 6379): True})
    for name in ("default-deny-egress", "allow-all-egress"):
        await delete_policy(net, name)

    await net.apply(netpol("default-deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))
    await expect("default-deny-all", {("proj", "db", 6379): False, ("db", "ext", 32000): False,
                                      ("far", "db", 8080): False})
    await delete_policy(net, "default-deny-all")
    await expect("policies deleted", everything)

    # the docs' example: ipBlock with except, namespaceSelector, podSelector, ports; egress to an ipBlock
    await net.apply(netpol("test-network-policy", {
        "podSelector": {"matchLabels": {"role": "db"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"ipBlock": {"cidr": CLUSTER_CIDR, "except": [cidr_a]}},
                              {"namespaceSelector": {"matchLabels": {"project": "myproject"}}},
                              {"podSelector": {"matchLabels": {"role": "frontend"}}}],
                     "ports": [{"protocol": "TCP", "port": 6379}]}],
        "egress": [{"to": [{"ipBlock": {"cidr": f"{ip['ext']}/32"}}], "ports": [{"protocol": "TCP", "port": 32000}]}],
    }))
    await expect("test-network-policy", {
        ("frontend", "db", 6379): True, ("frontend", "db", 8080): False,  # podSelector, on that port only
        ("proj", "db", 6379): True,  # namespaceSelector
        ("far", "db", 6379): True, ("other", "db", 6379): False,  # ipBlock and its except
        ("db", "ext", 32000): True, ("db", "ext", 32768): False,  # egress
    })
    # enforcement follows pod labels, namespace labels and further policies
    await net.apply(pod_manifest(net, "other", {"role": "frontend"}))
    await expect("a relabelled pod is a frontend", {("other", "db", 6379): True})
    await net.apply(namespace({}))
    await expect("a namespace without the project label", {("proj", "db", 6379): False})
    await net.apply(netpol("allow-http-by-name", {
        "podSelector": {"matchLabels": {"role": "db"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}], "ports": [{"port": "http"}]}]}))
    await expect("a named port, added to the other policy", {("frontend", "db", 8080): True,
                                                             ("frontend", "db", 6379): True, ("far", "db", 8080): False})
    for name in ("test-network-policy", "allow-http-by-name"):
        await delete_policy(net, name)

    # multi-port egress with endPort
    await net.apply(netpol("multi-port-egress", {
        "podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": cidr_a}}], "ports": [{"protocol": "TCP", "port": 32000, "endPort": 32768}]}],
    }))
    await expect("multi-port-egress", {("db", "ext", 32000): True, ("db", "ext", 32768): True,
                                       ("db", "ext", 33000): False, ("frontend", "db", 8080): True})
    await delete_policy(net, "multi-port-egress")
    await expect("all policies gone", everything)

    # the agent owns its table alone
    for host in net.hosts.values():
        tables = net.spaces.exec(host.netns, "nft", "list", "tables").stdout
        assert f"table inet {TABLE}" in tables
