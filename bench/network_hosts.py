"""The pod network across hosts, on the whole stack: test "hosts" are network namespaces this
benchmark makes (joined by a bridge in another one; no route leads out of them), each running a
kubelet (``network: cni``, the process runtime), a netagent and the nftables proxy, with the api,
nodeipam and the endpoints controller on a nats-server at 127.0.0.1. Everything is removed
afterwards, also on failure; no packet goes anywhere but into these namespaces.

(a) Data path, per backend (host-gw, then vxlan on fresh hosts): nginx in a pod on host b; wrk
    in a pod on host b (same host: the baseline), in a pod on host a (across hosts), and from
    host a's pod to the Service's ClusterIP. Median of three interleaved rounds.
    Targets: across hosts >= 0.9x same host with host-gw, >= 0.7x with vxlan.
(b) Apply -> IP answering (Docker runtime, one host): a pod serving TCP on 8080 from
    ``kyb.api.apply`` until a connection to its pod IP succeeds from the host, p50/p99 of
    ``--runs``. Baseline in the same run: ``docker run --network none`` of the same image and
    command plus the same CNI ADD by hand (the kubelet's configuration, its CNI client), until
    the address answers. The first of each is a warm-up and not counted.

    python bench/network_hosts.py [--seconds 5] [--connections 64] [--runs 20]

Needs root, iproute2, nftables, nginx, wrk, Debian's containernetworking-plugins, and Docker
for (b).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from kyb.natsd import NatsServer, free_port  # noqa: E402
from kyb.netns import socket_in  # noqa: E402
from services.kubelet.cni.defaults import DefaultNetwork, default_config_list  # noqa: E402
from services.kubelet.cni.plugin import CniRunner  # noqa: E402
from services.kubelet.cni.spec import RuntimeConf  # noqa: E402
from services.kubelet.runtime.process import netns_name  # noqa: E402
from tests.cluster import QUIET, wait_for  # noqa: E402
from tests.netns import Namespaces, networking_missing  # noqa: E402
from tests.podnet_cluster import PodNet, httpd  # noqa: E402

SERVICE_CIDR = "10.96.0.0/12"
UNDERLAY = {"bn-a": "10.253.0.1", "bn-b": "10.253.0.2"}
NGINX = """worker_processes 1; daemon off; pid {d}/n.pid; error_log {d}/e.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;
uwsgi_temp_path {d}/u; scgi_temp_path {d}/s; keepalive_requests 1000000;
server {{ listen 8080; location / {{ root {d}/www; }} }} }}
"""


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p * len(s))) - 1))]


class Hosts:
    """The control plane and switched hosts; kubelet, netagent and proxy on each."""

    def __init__(self, spaces: Namespaces, url: str, base: Path, runtime: str, image: str = "") -> None:
        self.net = PodNet(url, spaces, base, runtime, image)

    async def start(self, backend: str, hosts: dict[str, str], *control: str) -> None:
        await self.net.start(*control, **QUIET, service_cidr=SERVICE_CIDR)
        for host in self.net.switched_hosts(hosts):
            await self.net.start_kubelet(host)
            self.net.start_agent(host, "netagent", backend=backend, resync_seconds=2)
            self.net.start_agent(host, "proxy", proxy_mode="nftables", service_cidr=SERVICE_CIDR)

    async def close(self) -> None:
        await self.net.close()


def connects(netns: str, ip: str, port: int, timeout: float = 0.2) -> bool:
    s = socket_in(netns, socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        return s.connect_ex((ip, port)) == 0
    finally:
        s.close()


async def until_answers(netns: str, ip: str, port: int, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while not await asyncio.to_thread(connects, netns, ip, port):
        if time.monotonic() > end:
            raise SystemExit(f"{ip}:{port} does not answer from {netns} after {deadline}s")
        await asyncio.sleep(0.005)


# -- (a) data path ---------------------------------------------------------------------------

async def data_path(backend: str, seconds: int, connections: int, threads: int, run_wrk) -> dict[str, tuple[float, float]]:  # type: ignore[no-untyped-def]
    spaces = Namespaces()
    with tempfile.TemporaryDirectory(prefix="kyb-bench-hosts-") as tmp:
        base = Path(tmp)
        server = NatsServer(store_dir=base / "js", port=free_port(), log_file=base / "nats.log")
        server.start()
        hosts = Hosts(spaces, server.url, base, "process")
        try:
            await hosts.start(backend, UNDERLAY, "endpoints")
            net = hosts.net
            www = base / "nginx"
            (www / "www").mkdir(parents=True)
            (www / "www" / "index.html").write_text("<html><body>kybernetes bench</body></html>\n" * 4)
            (www / "n.conf").write_text(NGINX.format(d=www))
            srv = net.pod_manifest("srv", "bn-b", ["nginx", "-c", str(www / "n.conf"), "-p", str(www)])
            srv["metadata"]["labels"] = {"app": "web"}
            srv["spec"]["containers"][0]["ports"] = [{"containerPort": 8080, "name": "http"}]
            await net.apply(srv)
            for name, node in (("cli-a", "bn-a"), ("cli-b", "bn-b")):
                await net.apply(net.pod_manifest(name, node, ["sleep", "3600"]))
            svc = await net.apply({"apiVersion": "v1", "kind": "Service",
                                   "metadata": {"name": "web", "namespace": "default"},
                                   "spec": {"selector": {"app": "web"},
                                            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
            cluster_ip = svc["spec"]["clusterIP"]
            pods = {n: await net.running(n) for n in ("srv", "cli-a", "cli-b")}
            ns = {n: netns_name(p.metadata.uid or "") for n, p in pods.items()}
            ip = pods["srv"].status.podIP
            await until_answers(f"/run/netns/{ns['cli-a']}", ip, 8080)
            await wait_for(lambda: connects(f"/run/netns/{ns['cli-a']}", cluster_ip, 80), 30,
                           "the ClusterIP answers from host a")
            paths = {"same host": (ns["cli-b"], f"http://{ip}:8080/index.html"),
                     "across hosts": (ns["cli-a"], f"http://{ip}:8080/index.html"),
                     "across hosts, ClusterIP": (ns["cli-a"], f"http://{cluster_ip}:80/index.html")}
            runs: dict[str, list[tuple[float, float]]] = {k: [] for k in paths}
            for _ in range(3):
                for label, (client, url) in paths.items():
                    runs[label].append(await asyncio.to_thread(run_wrk, url, seconds, connections, threads,
                                                               netns=client))
            return {k: (statistics.median(r for r, _ in v), statistics.median(p for _, p in v)) for k, v in runs.items()}
        finally:
            await hosts.close()
            spaces.close()
            server.stop()


def kernel_only(backend: str, conntrack: bool, seconds: int, connections: int, threads: int,
                run_wrk) -> dict[str, tuple[float, float]]:  # type: ignore[no-untyped-def]
    """The same topology built by hand with ``ip`` (bridges, veth pods, the backend's routes),
    nothing of kybernetes: what two more hops cost on one machine. With ``conntrack``, each host
    also tracks connections (one ``ct state`` rule in its forward hook), as every node running
    a Service proxy does (kube-proxy's too)."""
    spaces = Namespaces()
    d = Path(tempfile.mkdtemp(prefix="kyb-bench-raw-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sw = spaces.add("sw")
        spaces.exec(sw, "ip", "link", "add", "br0", "type", "bridge")
        spaces.exec(sw, "ip", "link", "set", "br0", "up")
        hosts = {}
        for i, name in ((1, "ka"), (2, "kb")):
            h = spaces.add(name)
            hosts[i] = h
            spaces.veth(h, "eth0", sw, f"p{i}")
            spaces.exec(sw, "ip", "link", "set", f"p{i}", "master", "br0")
            spaces.exec(h, "ip", "addr", "add", f"10.253.2.{i}/24", "dev", "eth0")
            spaces.exec(h, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            spaces.exec(h, "ip", "link", "add", "cni0", "type", "bridge")
            spaces.exec(h, "ip", "addr", "add", f"10.244.{i}.1/24", "dev", "cni0")
            spaces.exec(h, "ip", "link", "set", "cni0", "up")
            if conntrack:
                subprocess.run(["ip", "netns", "exec", h, "nft", "-f", "-"], check=True, text=True,
                               input="add table ip kybbench\nadd chain ip kybbench tracked { type filter hook forward "
                                     "priority 0; }\nadd rule ip kybbench tracked ct state established accept\n")
        for i, h in hosts.items():
            peer = 3 - i
            if backend == "host-gw":
                spaces.exec(h, "ip", "route", "add", f"10.244.{peer}.0/24", "via", f"10.253.2.{peer}")
            else:
                mac = f"0a:58:0a:f4:0{i}:00"
                spaces.exec(h, "ip", "link", "add", "vx", "type", "vxlan", "id", "1", "local", f"10.253.2.{i}",
                            "dstport", "8472", "nolearning")
                spaces.exec(h, "ip", "link", "set", "vx", "address", mac)
                spaces.exec(h, "ip", "addr", "add", f"10.244.{i}.0/32", "dev", "vx")
                spaces.exec(h, "ip", "link", "set", "vx", "up")
                peer_mac = f"0a:58:0a:f4:0{peer}:00"
                spaces.exec(h, "ip", "neigh", "add", f"10.244.{peer}.0", "lladdr", peer_mac, "dev", "vx", "nud",
                            "permanent")
                spaces.exec(h, "bridge", "fdb", "append", peer_mac, "dev", "vx", "dst", f"10.253.2.{peer}", "self",
                            "permanent")
                spaces.exec(h, "ip", "route", "add", f"10.244.{peer}.0/24", "via", f"10.244.{peer}.0", "dev", "vx",
                            "onlink")
        pods = {}
        for name, i, ip in (("ksrv", 2, "10.244.2.2"), ("kcli-b", 2, "10.244.2.3"), ("kcli-a", 1, "10.244.1.2")):
            pod = spaces.add(name)
            pods[name] = pod
            spaces.veth(hosts[i], f"v{ip.rsplit('.', 1)[1]}", pod, "eth0")
            spaces.exec(hosts[i], "ip", "link", "set", f"v{ip.rsplit('.', 1)[1]}", "master", "cni0")
            spaces.exec(pod, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
            spaces.exec(pod, "ip", "route", "add", "default", "via", f"10.244.{i}.1")
        (d / "www").mkdir()
        (d / "www" / "index.html").write_text("<html><body>kybernetes bench</body></html>\n" * 4)
        (d / "n.conf").write_text(NGINX.format(d=d))
        procs.append(subprocess.Popen(["ip", "netns", "exec", pods["ksrv"], "nginx", "-c", str(d / "n.conf"), "-p",
                                       str(d)], stderr=subprocess.DEVNULL))
        end = time.monotonic() + 10
        while not connects(Namespaces.path(pods["kcli-a"]), "10.244.2.2", 8080):
            if time.monotonic() > end:
                raise SystemExit("the hand-built network does not carry pod traffic")
            time.sleep(0.05)
        paths = {"same host": pods["kcli-b"], "across hosts": pods["kcli-a"]}
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in paths}
        for _ in range(3):
            for label, client in paths.items():
                runs[label].append(run_wrk("http://10.244.2.2:8080/index.html", seconds, connections, threads,
                                           netns=client))
        return {k: (statistics.median(r for r, _ in v), statistics.median(p for _, p in v)) for k, v in runs.items()}
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
        spaces.close()
        shutil.rmtree(d, ignore_errors=True)


# -- (b) apply -> IP answering ---------------------------------------------------------------

async def startup(runs: int) -> tuple[list[float], list[float]]:
    import docker

    from tests.images import build_busybox_image

    client = docker.from_env()
    image = build_busybox_image(client)
    command = httpd(8080)
    spaces = Namespaces()
    with tempfile.TemporaryDirectory(prefix="kyb-bench-start-") as tmp:
        base = Path(tmp)
        server = NatsServer(store_dir=base / "js", port=free_port(), log_file=base / "nats.log")
        server.start()
        hosts = Hosts(spaces, server.url, base, "docker", image)
        baseline_ids: list[str] = []
        try:
            await hosts.start("host-gw", {"bs-a": "10.253.1.1"}, "scheduler")
            net = hosts.net
            host = net.hosts["bs-a"]
            host_ns = Namespaces.path(host.netns)
            await wait_for(lambda: net.pod_cidr(host), 30, "the node has its pod CIDR")
            kyb: list[float] = []
            for i in range(runs + 1):  # p0 warms the scheduler's and the kubelet's caches; not counted
                m = net.pod_manifest(f"p{i}", "", command)
                del m["spec"]["nodeName"]  # through the scheduler, as `kyb apply` of a plain pod
                t0 = time.perf_counter()
                await net.apply(m)

                async def has_ip(name: str = f"p{i}") -> str | None:
                    return (await net.pod(name)).status.podIP or None

                ip = await wait_for(has_ip, 60, f"pod p{i} has an IP", interval=0.005)
                await until_answers(host_ns, ip, 8080)
                if i:
                    kyb.append(time.perf_counter() - t0)
                await net.delete_pod(f"p{i}")
            # the baseline: the same container, network none, and the kubelet's CNI call by hand
            cni = CniRunner(cache_dir=base / "cni-cache-base", host_netns=host_ns,
                            network=default_config_list(DefaultNetwork(pod_cidr="10.250.250.0/24", bridge="kybbase",
                                                                       ipam_dir=str(base / "ipam-base"))))
            plain: list[float] = []
            for i in range(runs + 1):  # the first warms up too, likewise not counted
                t0 = time.perf_counter()
                c = await asyncio.to_thread(client.containers.run, image, command, detach=True, network_mode="none",
                                            labels={"io.kybernetes.bench": "network-hosts"})
                baseline_ids.append(c.id)
                c.reload()
                rt = RuntimeConf(container_id=c.id, netns=f"/proc/{c.attrs['State']['Pid']}/ns/net")
                result = await cni.add(rt)
                await until_answers(host_ns, result.pod_ips()[0], 8080)
                if i:
                    plain.append(time.perf_counter() - t0)
                await cni.delete(rt)
                await asyncio.to_thread(c.remove, force=True)
                baseline_ids.remove(c.id)
            return kyb, plain
        finally:
            for cid in baseline_ids:
                with contextlib.suppress(Exception):
                    client.containers.get(cid).remove(force=True)
            await hosts.close()
            spaces.close()
            server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--skip-startup", action="store_true", help="only the data path (no Docker)")
    args = ap.parse_args()
    if args.seconds > 60 or args.connections > 1024:
        raise SystemExit("bounded load only: --seconds <= 60, --connections <= 1024")
    why = networking_missing()
    if why:
        raise SystemExit(f"cannot run: {why}")
    from network import run_wrk

    run(args.seconds, args.connections, args.threads, run_wrk, args.runs, startup_too=not args.skip_startup)


def run(seconds: int, connections: int, threads: int, run_wrk, runs: int = 20,  # type: ignore[no-untyped-def]
        startup_too: bool = True) -> None:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    targets = {"host-gw": 0.9, "vxlan": 0.7}
    print(f"pod network across hosts (namespaces of this run; {connections} connections, {seconds}s each, "
          "median of 3 interleaved rounds)")
    print(f"{'backend':<8} {'path':<34} {'req/s':>10} {'p99 ms':>8} {'x same host':>12}")
    for backend, target in targets.items():
        rows = asyncio.run(data_path(backend, seconds, connections, threads, run_wrk))
        same = rows["same host"][0]
        for label, (rps, p99) in rows.items():
            print(f"{backend:<8} {label:<34} {rps:>10.0f} {p99:>8.2f} {rps / same:>12.2f}")
        ratio = rows["across hosts"][0] / same
        print(f"{backend}: across hosts / same host = {ratio:.2f} (target >= {target})")
        for conntrack in (False, True):
            raw = kernel_only(backend, conntrack, seconds, connections, threads, run_wrk)
            label = "kernel only, conntrack" if conntrack else "kernel only"
            r_same, r_cross = raw["same host"][0], raw["across hosts"][0]
            print(f"{backend:<8} {label + ': same host':<34} {r_same:>10.0f} {raw['same host'][1]:>8.2f} {1:>12.2f}")
            print(f"{backend:<8} {label + ': across':<34} {r_cross:>10.0f} {raw['across hosts'][1]:>8.2f} "
                  f"{r_cross / r_same:>12.2f}")
        print(f"{backend}: kybernetes' across-hosts ratio / the hand-built network's with conntrack = "
              f"{ratio / (r_cross / r_same):.2f}")
    if not startup_too:
        return
    kyb, plain = asyncio.run(startup(runs))
    p50, p99 = statistics.median(kyb), percentile(kyb, 0.99)
    b50, b99 = statistics.median(plain), percentile(plain, 0.99)
    print(f"apply -> pod IP answering, {runs} pods one at a time: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms; "
          f"docker run + CNI ADD by hand: p50 {b50 * 1000:.0f} ms, p99 {b99 * 1000:.0f} ms ({p50 / b50:.2f}x at p50)")


if __name__ == "__main__":
    main()
