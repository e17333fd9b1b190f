"""Pod network on one host (``network: cni``): every pod gets an address of its Node's podCIDR
from CNI and reaches every other pod; a failing plugin is a FailedCreatePodSandBox event and is
retried; 100 pods created and deleted leave host-local's store empty; pods stay reachable across
a kubelet restart. The host is a network namespace this test made; nothing is configured in
the machine's own namespace (see tests/podnet_cluster.py)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import stat

import pytest

from tests.cluster import wait_for
from tests.netns import Namespaces, ipam_allocations, netns  # noqa: F401 (fixture)
from tests.podnet_cluster import PodNet, httpd, wget

RUNTIMES = [pytest.param("process", id="process"), pytest.param("docker", id="docker")]


@pytest.fixture(params=RUNTIMES)
async def podnet(request, netns: Namespaces, nats_url: str, tmp_path):  # noqa: F811
    runtime = request.param
    image = ""
    if runtime == "docker":
        client = request.getfixturevalue("docker_engine")
        from tests.images import build_busybox_image

        image = build_busybox_image(client)
    net = PodNet(nats_url, netns, tmp_path, runtime, image)
    await net.start()
    try:
        yield net
    finally:
        await net.close()


async def test_pods_on_one_host_reach_each_other(podnet: PodNet) -> None:
    host = podnet.add_host("pn-a")
    await podnet.start_kubelet(host)
    await podnet.apply(podnet.pod_manifest("server", host.name, httpd()))
    await podnet.apply(podnet.pod_manifest("client", host.name, ["/bin/sh", "-c", "exec /bin/busybox sleep 3600"]))
    server = await podnet.running("server")
    client = await podnet.running("client")
    cidr = ipaddress.ip_network(await podnet.pod_cidr(host))
    assert cidr.subnet_of(ipaddress.ip_network("10.250.0.0/16"))
    assert ipaddress.ip_address(server.status.podIP) in cidr and ipaddress.ip_address(client.status.podIP) in cidr
    assert server.status.podIP != client.status.podIP
    assert [p.ip for p in server.status.podIPs] == [server.status.podIP]

    async def reached() -> bool:
        done = await asyncio.to_thread(podnet.pod_exec, client, wget(server.status.podIP))
        return (done.returncode == 0 and "hello" in done.stdout) or print("DBG", done)

    await wait_for(reached, 20, "client reaches the server's pod IP")
    assert sorted(ipam_allocations(host.options["cni_ipam_dir"], "kyb")) == sorted(
        [server.status.podIP, client.status.podIP])
    conf = json.loads((podnet.base / host.name / "net.d" / "10-kyb.conflist").read_text())
    assert [p["type"] for p in conf["plugins"]] == ["bridge", "portmap", "firewall"]
    assert conf["plugins"][0]["ipam"]["ranges"] == [[{"subnet": str(cidr)}]]

    # a kubelet restart keeps the pods where they are, reachable at the same addresses
    await podnet.stop_kubelet(host)
    await podnet.start_kubelet(host)
    await asyncio.sleep(2)
    again = await podnet.running("server")
    assert again.status.podIP == server.status.podIP
    assert again.status.containerStatuses[0].restartCount == 0
    await wait_for(reached, 20, "the server is still reachable after the kubelet restart")

    for name in ("server", "client"):
        await podnet.delete_pod(name)
    await wait_for(lambda: _gone(podnet, "server", "client"), 30, "pods gone")
    await wait_for(lambda: ipam_allocations(host.options["cni_ipam_dir"], "kyb") == [], 20,
                   "host-local's store empty")


async def _gone(podnet: PodNet, *names: str) -> bool:
    from kyb import errors

    for name in names:
        try:
            await podnet.pod(name)
            return False
        except errors.NotFound:
            continue
    return True


REFUSE = """#!/bin/sh
cat >/dev/null
echo '{"cniVersion": "1.0.0", "code": 7, "msg": "kyb test plugin refuses", "details": "on purpose"}'
exit 1
"""


@pytest.mark.parametrize("podnet", [pytest.param("process", id="process")], indirect=True)
async def test_a_failing_plugin_is_an_event_and_is_retried(podnet: PodNet) -> None:
    plugins = podnet.base / "plugins"
    plugins.mkdir()
    refuse = plugins / "kybrefuse"
    refuse.write_text(REFUSE)
    refuse.chmod(refuse.stat().st_mode | stat.S_IXUSR)
    host = podnet.add_host("pn-f", cni_bin_dirs=f"{plugins}:/usr/lib/cni:/opt/cni/bin")
    conf_dir = podnet.base / host.name / "net.d"
    conf_dir.mkdir(parents=True)
    ipam_dir = host.options["cni_ipam_dir"]
    await podnet.start_kubelet(host)
    cidr = await wait_for(lambda: podnet.pod_cidr(host), 20, "the node's pod CIDR")
    await wait_for(lambda: (conf_dir / "10-kyb.conflist").exists(), 20, "the kubelet's default config")
    bad = {"cniVersion": "1.0.0", "name": "kyb", "plugins": [
        {"type": "bridge", "bridge": "kybtf0", "isGateway": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": cidr}]], "dataDir": ipam_dir}},
        {"type": "kybrefuse"}]}
    (conf_dir / "05-broken.conflist").write_text(json.dumps(bad))
    await podnet.apply(podnet.pod_manifest("p", host.name, ["/bin/busybox", "sleep", "3600"]))

    async def failed_event() -> list:
        found = []
        sub = await podnet.nc.jetstream().subscribe("kyb.events.default.Pod.p", ordered_consumer=True)
        try:
            while True:
                msg = await sub.next_msg(timeout=0.5)
                found.append(json.loads(msg.data))
        except Exception:
            pass
        finally:
            await sub.unsubscribe()
        return [e for e in found if e.get("reason") == "FailedCreatePodSandBox"]

    events = await wait_for(lambda: _at_least(failed_event, 2), 30, "two FailedCreatePodSandBox events")
    assert "kyb test plugin refuses" in events[0]["message"] and events[0]["type"] == "Warning"
    assert ipam_allocations(ipam_dir, "kyb") == []  # every failed ADD was undone
    assert (await podnet.pod("p")).status.podIP == ""
    os.unlink(conf_dir / "05-broken.conflist")  # the default config is next by name: the retry succeeds
    pod = await podnet.running("p", timeout=30)
    assert ipam_allocations(ipam_dir, "kyb") == [pod.status.podIP]


async def _at_least(fn, n: int) -> list | None:
    found = await fn()
    return found if len(found) >= n else None


@pytest.mark.parametrize("podnet", [pytest.param("process", id="process")], indirect=True)
async def test_100_pods_leave_host_local_store_empty(podnet: PodNet) -> None:
    host = podnet.add_host("pn-c", workers=16)
    await podnet.start_kubelet(host)
    names = [f"p{i}" for i in range(100)]
    for name in names:
        await podnet.apply(podnet.pod_manifest(name, host.name, ["/bin/busybox", "sleep", "3600"]))

    async def all_running() -> bool:
        pods = [await podnet.pod(n) for n in names]
        return all(p.status.phase == "Running" and p.status.podIP for p in pods)

    await wait_for(all_running, 180, "100 pods Running", interval=0.5)
    ips = {(await podnet.pod(n)).status.podIP for n in names}
    assert len(ips) == 100
    assert len(ipam_allocations(host.options["cni_ipam_dir"], "kyb")) == 100
    for name in names:
        await podnet.delete_pod(name)
    await wait_for(lambda: _gone(podnet, *names), 180, "100 pods gone", interval=0.5)
    await wait_for(lambda: ipam_allocations(host.options["cni_ipam_dir"], "kyb") == [], 20,
                   "host-local's store empty")
    # the loopback network is DELeted after the pod's own one, so its cached result goes last
    await wait_for(lambda: os.listdir(host.options["cni_cache_dir"]) == [], 20, "the CNI result cache empty")
