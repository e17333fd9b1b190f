"""Scaffolding of the pod network tests: test "hosts" are network namespaces the test made,
each with a kubelet in ``network: cni`` mode whose CNI plugins run inside that namespace
(``cni_host_netns``), so bridges, routes and pod addresses exist only inside test namespaces.
The api and nodeipam run in the test process on a nats-server at 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kyb.client import connect
from kyb.serve import run_services
from kyb.store import Store
from schemas.pod import Pod
from services.kubelet.runtime.process import ProcessRuntime, netns_name
from tests.cluster import FAST_LEASE, QUIET, remove_containers, wait_for
from tests.netns import Namespaces

CLUSTER_CIDR = "10.250.0.0/16"


@dataclass
class Host:
    name: str  # node name
    netns: str  # the host's namespace
    options: dict[str, Any]
    stop: asyncio.Event | None = None
    task: asyncio.Task | None = None


@dataclass
class PodNet:
    url: str
    spaces: Namespaces
    base: Path
    runtime: str
    image: str = ""
    nc: Any = None
    store: Store | None = None
    hosts: dict[str, Host] = field(default_factory=dict)
    control: tuple[asyncio.Event, asyncio.Task] | None = None
    agents: dict[tuple[str, str], tuple[asyncio.Event, asyncio.Task]] = field(default_factory=dict)
    switch: str = ""  # the namespace whose bridge joins the hosts (see switched_hosts)

    async def start(self, *services: str, **options: Any) -> None:
        """The api, nodeipam and ``services`` in this process, on the cluster CIDR."""
        self.nc = await connect(self.url)
        self.store = Store(self.nc.jetstream())
        stop = asyncio.Event()
        options = {**FAST_LEASE, "cluster_cidr": CLUSTER_CIDR, "node_cidr_mask_size": 24, **options}
        self.control = stop, asyncio.create_task(run_services(["api", "nodeipam", *services], self.url, options, stop))

    def switched_hosts(self, underlay: dict[str, str], switch_address: str = "", **extra: Any) -> list[Host]:
        """A host per ``underlay`` entry (node name: its InternalIP in a /24), each joined by a
        veth pair to bridge ``br0`` of a switch namespace, their only link (no route out).
        ``switch_address`` gives the switch an address too (an outside client)."""
        self.switch = self.spaces.add("sw")
        self.spaces.exec(self.switch, "ip", "link", "add", "br0", "type", "bridge")
        self.spaces.exec(self.switch, "ip", "link", "set", "br0", "up")
        if switch_address:
            self.spaces.exec(self.switch, "ip", "addr", "add", f"{switch_address}/24", "dev", "br0")
        out = []
        for i, (name, ip) in enumerate(underlay.items()):
            host = self.add_host(name, node_ip=ip, **extra)
            self.spaces.veth(host.netns, "eth0", self.switch, f"p{i}")
            self.spaces.exec(self.switch, "ip", "link", "set", f"p{i}", "master", "br0")
            self.spaces.exec(host.netns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
            out.append(host)
        return out

    def start_agent(self, host: Host, service: str, **options: Any) -> None:
        """A node agent (netagent, netpol, proxy, dns) of ``host``, working in its namespace."""
        stop = asyncio.Event()
        opts = {**QUIET, "node_name": host.name, "network": "cni", "netns": Namespaces.path(host.netns),
                "cluster_cidr": CLUSTER_CIDR, "supervise": False, **options}
        self.agents[(host.name, service)] = stop, asyncio.create_task(run_services([service], self.url, opts, stop))

    async def stop_agent(self, host: Host, service: str) -> None:
        stop, task = self.agents.pop((host.name, service))
        stop.set()
        await asyncio.wait_for(task, 20)

    def host_options(self, name: str, netns: str, **extra: Any) -> dict[str, Any]:
        base = self.base / name
        return {
            **QUIET,
            "node_name": name,
            "runtime": self.runtime,
            "network": "cni",
            "cni_conf_dir": str(base / "net.d"),
            "cni_cache_dir": str(base / "cni-cache"),
            "cni_ipam_dir": str(base / "ipam"),
            "cni_host_netns": Namespaces.path(netns),
            "state_dir": str(base / "state"),
            "crash_backoff": 0.5,
            "max_backoff": 2.0,
            "relist": 0.5,
            "supervise": False,
            **extra,
        }

    def add_host(self, name: str, **extra: Any) -> Host:
        netns = self.spaces.add(name)
        host = Host(name, netns, self.host_options(name, netns, **extra))
        self.hosts[name] = host
        return host

    async def start_kubelet(self, host: Host) -> None:
        host.stop = asyncio.Event()
        host.task = asyncio.create_task(run_services(["kubelet"], self.url, host.options, host.stop))

    async def stop_kubelet(self, host: Host) -> None:
        if host.stop is not None and host.task is not None:
            host.stop.set()
            await asyncio.wait_for(host.task, 30)
            host.task = None

    async def pod_cidr(self, host: Host) -> str:
        assert self.store is not None
        node = await self.store.get("Node", None, host.name)
        return node.spec.podCIDR

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        import nats.errors

        async def request() -> Any:
            return await self.nc.request("kyb.api.apply", json.dumps(manifest).encode(), timeout=10)

        msg = await wait_for(request, 20, "the api answers", ignoring=(nats.errors.NoRespondersError,))
        body = json.loads(msg.data)
        assert msg.headers["Kyb-Status"] in ("200", "201"), body
        return body

    async def delete_pod(self, name: str) -> None:
        query = {"kind": "pod", "namespace": "default", "name": name, "gracePeriodSeconds": 0}
        await self.nc.request("kyb.api.delete", json.dumps(query).encode(), timeout=10)

    def pod_manifest(self, name: str, node: str, command: list[str], **spec: Any) -> dict[str, Any]:
        container: dict[str, Any] = {"name": "c", "command": command, "image": self.image or "none",
                                     "imagePullPolicy": "Never"}
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                "spec": {"nodeName": node, "containers": [container], "terminationGracePeriodSeconds": 1, **spec}}

    async def pod(self, name: str) -> Pod:
        assert self.store is not None
        return await self.store.get("Pod", "default", name)

    async def running(self, name: str, timeout: float = 60) -> Pod:
        async def check() -> Pod | None:
            p = await self.pod(name)
            return p if p.status.phase == "Running" and p.status.podIP else None

        return await wait_for(check, timeout, f"pod {name} Running with an IP")

    def pod_exec(self, pod: Pod, argv: list[str], timeout: float = 10) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the pod's network namespace (its container's, for Docker)."""
        if self.runtime == "process":
            cmd = ["nsenter", f"--net=/run/netns/{netns_name(pod.metadata.uid or '')}", "--", *argv]
        else:
            cid = pod.status.containerStatuses[0].containerID.partition("://")[2]
            cmd = ["docker", "exec", cid, *argv]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    async def remove_pods(self, host: Host) -> None:
        """What a stopped kubelet left running (pods survive a kubelet on purpose)."""
        if self.runtime == "docker":
            await remove_containers(host.name)
            return
        rt = ProcessRuntime(Path(host.options["state_dir"]) / "process")
        for uid in await rt.list_sandboxes():
            with contextlib.suppress(Exception):
                await rt.remove_sandbox(uid)

    async def close(self) -> None:
        for host_name, service in list(self.agents):
            with contextlib.suppress(Exception):
                await self.stop_agent(self.hosts[host_name], service)
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                await self.stop_kubelet(host)
            with contextlib.suppress(Exception):
                await self.remove_pods(host)
        if self.control is not None:
            self.control[0].set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.control[1], 30)
        if self.nc is not None:
            await self.nc.close()


def httpd(port: int = 8080) -> list[str]:
    """Serves "hello" on ``port`` (host processes and the busybox image alike)."""
    return ["/bin/sh", "-c", f"echo hello > index.html && exec /bin/busybox httpd -f -p {port} -h ."]


def wget(ip: str, port: int = 8080, path: str = "/index.html") -> list[str]:
    return ["/bin/busybox", "wget", "-q", "-O", "-", f"http://{ip}:{port}{path}"]
