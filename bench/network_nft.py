"""The nftables proxy's part of bench/network.py, in network namespaces this benchmark makes
(removed afterwards, also on failure): nothing is sent outside them.

Data path: a "node" namespace with a bridge (10.244.0.1/24) and two "pod" namespaces on it,
nginx in one (10.244.0.2:18080), wrk in the other; the same load straight to the pod, through
a ClusterIP (10.96.0.10:80) programmed by the proxy's rules, and through the userspace proxy
listening on the node's bridge address. Also from a pod on a second bridge of the node
(10.244.1.3): its packets cross the node's IP layer as a ClusterIP's do, without NAT, which
tells the DNAT's cost from the routing hop's. Rule programming: 1,000 Services x 10 endpoints
programmed into an empty table, then EndpointSlice changes one at a time, each timed from
the change to the transaction having returned (the rule is live), and the memory the proxy's
state takes (tracemalloc of the ruleset and its caches); the same again through one ``nft -f``
process per transaction as the baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kyb.nftables import Nftables  # noqa: E402
from schemas.core import Service  # noqa: E402
from schemas.discovery import EndpointSlice  # noqa: E402
from services.proxy.kernel import Commands, NftProxy  # noqa: E402
from services.proxy.nftplan import Settings  # noqa: E402


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=120)


def service(i: int) -> Service:
    ip = f"10.{96 + i // 65536}.{(i // 256) % 256}.{i % 256 or 1}"
    return msgspec.convert({"apiVersion": "v1", "kind": "Service",
                            "metadata": {"name": f"s{i}", "namespace": "bench", "resourceVersion": "1"},
                            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]}}, Service)


def slice_(i: int, generation: int, n: int = 10) -> EndpointSlice:
    eps = [{"addresses": [f"10.244.{(i * n + k) // 250 % 256}.{(i * n + k) % 250 + 2}"],
            "conditions": {"ready": True}} for k in range(n)]
    if generation:
        eps[generation % n]["conditions"] = {"ready": False}
    return msgspec.convert({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"s{i}-x", "namespace": "bench", "resourceVersion": str(1 + generation),
                     "labels": {"kubernetes.io/service-name": f"s{i}"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}], "endpoints": eps}, EndpointSlice)


async def programming(ns: str, services: int = 1000, changes: int = 200, library: bool = True) -> dict[str, Any]:
    settings = Settings(node_name="n", cluster_cidr="10.244.0.0/16", service_cidr="10.96.0.0/12")
    commands = Commands(f"/run/netns/{ns}")
    commands.nftables = Nftables(commands.netns, library=library)
    proxy = NftProxy(settings, commands=commands)
    svcs = [service(i) for i in range(services)]
    slices = [slice_(i, 0) for i in range(services)]
    tracemalloc.start()
    t0 = time.perf_counter()
    await proxy.sync(svcs, slices)
    full = time.perf_counter() - t0
    gc.collect()  # what the proxy holds, not the garbage of building it
    memory = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    lat = []
    for c in range(1, changes + 1):
        i = (c * 37) % services
        slices[i] = slice_(i, c)
        t = time.perf_counter()
        await proxy.sync(svcs, slices)
        lat.append(time.perf_counter() - t)
    lat.sort()
    how = "libnftables, in process" if proxy.commands.nftables.in_process else "the nft binary"
    rules = sh("ip", "netns", "exec", ns, "nft", "list", "table", "ip", "kyb-proxy").stdout.count("\n")
    await proxy.close(remove=True)
    return {"full": full, "p50": statistics.median(lat), "p99": lat[int(len(lat) * 0.99) - 1],
            "memory": memory, "lines": rules, "how": how}


NGINX = """worker_processes 1; daemon off; pid {d}/n.pid; error_log {d}/e.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;
uwsgi_temp_path {d}/u; scgi_temp_path {d}/s; keepalive_requests 1000000;
server {{ listen 10.244.0.2:18080; location / {{ root {d}/www; }} }} }}
"""

USERSPACE = (
    "import asyncio, signal, uvloop\n"
    "from services.proxy.dataplane import DataPlane\n"
    "from services.proxy.plan import Frontend, Route\n"
    "async def main():\n"
    "    stop = asyncio.Event()\n"
    "    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)\n"
    "    dp = DataPlane()\n"
    "    await dp.apply({Frontend('TCP', '10.244.0.1', 18082): Route(service='bench/web', port_name='http',\n"
    "                   backends=(('10.244.0.2', 18080),), affinity_seconds=None)})\n"
    "    print('ready', flush=True)\n"
    "    await stop.wait()\n"
    "uvloop.run(main())\n"
)


def data_path(node: str, server: str, client: str, routed_client: str, seconds: int, connections: int,
              threads: int, run_wrk, stop_processes, rounds: int = 3) -> list[tuple[str, float, float]]:  # type: ignore[no-untyped-def]
    import os

    sh("ip", "netns", "exec", node, "ip", "link", "add", "br0", "type", "bridge")
    sh("ip", "netns", "exec", node, "ip", "addr", "add", "10.244.0.1/24", "dev", "br0")
    sh("ip", "netns", "exec", node, "ip", "link", "set", "br0", "up")
    sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    # a second bridge for the routed baseline: a client there reaches the server through the
    # node's IP layer, as a ClusterIP's packets do, but with no NAT
    sh("ip", "netns", "exec", node, "ip", "link", "add", "br1", "type", "bridge")
    sh("ip", "netns", "exec", node, "ip", "addr", "add", "10.244.1.1/24", "dev", "br1")
    sh("ip", "netns", "exec", node, "ip", "link", "set", "br1", "up")
    for k, (pod, ip, bridge) in enumerate(((server, "10.244.0.2", "br0"), (client, "10.244.0.3", "br0"),
                                           (routed_client, "10.244.1.3", "br1"))):
        sh("ip", "netns", "exec", node, "ip", "link", "add", f"v{k}", "type", "veth", "peer", "name", "eth0",
           "netns", pod)
        sh("ip", "netns", "exec", node, "ip", "link", "set", f"v{k}", "master", bridge, "up")
        sh("ip", "netns", "exec", pod, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        sh("ip", "netns", "exec", pod, "ip", "link", "set", "eth0", "up")
        sh("ip", "netns", "exec", pod, "ip", "route", "add", "default", "via", ip.rsplit(".", 1)[0] + ".1")
    settings = Settings(node_name="n", cluster_cidr="10.244.0.0/16", service_cidr="10.96.0.0/12")
    web = msgspec.convert({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "bench"},
                           "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}}, Service)
    eps = msgspec.convert({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                           "metadata": {"name": "web-x", "namespace": "bench",
                                        "labels": {"kubernetes.io/service-name": "web"}},
                           "addressType": "IPv4", "ports": [{"name": "http", "port": 18080}],
                           "endpoints": [{"addresses": ["10.244.0.2"]}]}, EndpointSlice)
    proxy = NftProxy(settings, commands=Commands(f"/run/netns/{node}"))
    asyncio.run(proxy.sync([web], [eps]))
    proxy.commands.close()
    with tempfile.TemporaryDirectory(prefix="kyb-bench-nft-") as d:
        Path(d, "www").mkdir()
        Path(d, "www", "index.html").write_text("<html><body>kybernetes bench</body></html>\n" * 4)
        Path(d, "n.conf").write_text(NGINX.format(d=d))
        procs = [subprocess.Popen(["ip", "netns", "exec", server, "nginx", "-c", f"{d}/n.conf", "-p", d],
                                  stderr=subprocess.DEVNULL)]
        procs.append(subprocess.Popen(["ip", "netns", "exec", node, sys.executable, "-c", USERSPACE],
                                      env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, text=True))
        try:
            assert procs[1].stdout is not None and procs[1].stdout.readline().strip() == "ready"
            time.sleep(0.5)
            paths = (("pod -> pod", "http://10.244.0.2:18080/index.html", client),
                     ("pod -> pod, routed by the node", "http://10.244.0.2:18080/index.html", routed_client),
                     ("pod -> ClusterIP (nftables)", "http://10.96.0.10:80/index.html", client),
                     ("pod -> userspace proxy", "http://10.244.0.1:18082/index.html", client))
            # interleaved rounds, the median of each path: drift of a shared machine hits all alike
            runs: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in paths}
            for _ in range(rounds):
                for label, url, ns in paths:
                    runs[label].append(run_wrk(url, seconds, connections, threads, netns=ns))
            return [(label, statistics.median(r for r, _ in runs[label]), statistics.median(p for _, p in runs[label]))
                    for label, _, _ in paths]
        finally:
            stop_processes(procs)


def run(seconds: int, connections: int, threads: int, run_wrk, stop_processes) -> None:  # type: ignore[no-untyped-def]
    prefix = f"kybb{secrets.token_hex(3)}"
    names = [f"{prefix}-{n}" for n in ("node", "server", "client", "routed", "rules")]
    made = []
    try:
        for n in names:
            sh("ip", "netns", "add", n)
            made.append(n)
            sh("ip", "netns", "exec", n, "ip", "link", "set", "lo", "up")
        rows = data_path(names[0], names[1], names[2], names[3], seconds, connections, threads, run_wrk,
                         stop_processes)
        print(f"\nnftables proxy, in namespaces of this run ({connections} connections, {seconds}s each, "
              "median of 3 interleaved rounds)")
        print(f"{'path':<30} {'req/s':>10} {'p99 ms':>8} {'x direct':>9}")
        direct, direct_p99 = rows[0][1], rows[0][2]
        for label, rps, p99 in rows:
            print(f"{label:<30} {rps:>10.0f} {p99:>8.2f} {rps / direct:>9.2f}")
        routed, nft_rps, nft_p99 = rows[1][1], rows[2][1], rows[2][2]
        print(f"ClusterIP / direct = {nft_rps / direct:.2f} (target >= 0.95); p99 {nft_p99 / direct_p99:.2f}x direct "
              f"(target <= 1.1); ClusterIP / routed pod -> pod = {nft_rps / routed:.2f} (what the DNAT costs)")
        r = asyncio.run(programming(names[4]))
        base = asyncio.run(programming(names[4], changes=100, library=False))
        print(f"rule programming, 1000 Services x 10 endpoints ({r['lines']:.0f} lines of nft list), through {r['how']}: "
              f"from empty {r['full'] * 1000:.0f} ms; EndpointSlice change -> rule live p50 {r['p50'] * 1000:.1f} ms, "
              f"p99 {r['p99'] * 1000:.1f} ms (target <= 100); proxy state {r['memory'] / 2**20:.1f} MiB")
        print(f"  the same through {base['how']} (one process per transaction): from empty {base['full'] * 1000:.0f} ms; "
              f"change -> live p50 {base['p50'] * 1000:.1f} ms, p99 {base['p99'] * 1000:.1f} ms")
    finally:
        for n in reversed(made):
            for pid in sh("ip", "netns", "pids", n, check=False).stdout.split():
                with contextlib.suppress(Exception):
                    sh("kill", "-9", pid, check=False)
            sh("ip", "netns", "del", n, check=False)
