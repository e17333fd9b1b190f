"""Proxy data-path throughput: requests/s and p99 latency through the kyb proxy to one
backend, beside the same load straight to the backend and through nginx as a reverse proxy,
all in one run; and the same for the ingress: its builtin plane, its nginx plane, and a
hand-written nginx configuration doing the same routing (host + path prefix, upstream keep-alive).

    python bench/network.py [--seconds 5] [--connections 64] [--threads 2]

Everything stays on 127.0.0.0/8 and is bounded in time. The backend is nginx serving a small
static file; nginx (Debian package ``nginx``) also runs the reverse-proxy baseline with
upstream keep-alive; the kyb proxy's data plane runs in its own process under uvloop with a
static route, exactly as the proxy service installs one. Load comes from ``wrk`` (Debian
package ``wrk``) when present, else from a small asyncio HTTP/1.1 keep-alive client.
Targets (issue "Service networking"): proxy >= 0.5x direct; builtin ingress >= 0.35x the nginx
reverse proxy; nginx-plane ingress >= 0.9x the hand-written nginx configuration. The two ingress
planes and the hand-written configuration each get one process (one nginx worker), like the proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROXY = (
    "import asyncio, signal, sys, uvloop\n"
    "from services.proxy.dataplane import DataPlane\n"
    "from services.proxy.plan import Frontend, Route\n"
    "async def main():\n"
    "    ip, port, bip, bport = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])\n"
    "    stop = asyncio.Event()\n"
    "    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)\n"
    "    dp = DataPlane()\n"
    "    await dp.apply({Frontend('TCP', ip, port): Route(service='bench/web', port_name='http',\n"
    "                   backends=((bip, bport),), affinity_seconds=None)})\n"
    "    print('ready', flush=True)\n"
    "    await stop.wait()\n"
    "    await dp.close()\n"
    "uvloop.run(main())\n"
)

INGRESS = (
    "import asyncio, signal, sys, uvloop\n"
    "from services.ingress.plan import PathRule, Table, Target\n"
    "async def main():\n"
    "    kind, ip, port, bip, bport = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])\n"
    "    stop = asyncio.Event()\n"
    "    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)\n"
    "    if kind == 'builtin':\n"
    "        from services.ingress.builtin import BuiltinPlane as Plane\n"
    "    else:\n"
    "        from services.ingress.nginx import NginxPlane as Plane\n"
    "    plane = Plane(ip, port, port + 1000)\n"
    "    await plane.start()\n"
    "    target = Target(namespace='bench', service='web', port='80', backends=((bip, bport),))\n"
    "    await plane.apply(Table(exact={'bench.example': (PathRule(path='/', kind='Prefix', target=target),)}))\n"
    "    print('ready', flush=True)\n"
    "    await stop.wait()\n"
    "    await plane.close()\n"
    "uvloop.run(main())\n"
)

# What both nginx instances share: one worker in the foreground, its files under {dir}, no
# access log, long keep-alive. {name} keeps their pid and error log apart.
NGINX_PROLOGUE = """
worker_processes 1;
daemon off;
pid {dir}/{name}.pid;
error_log {dir}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
"""

HAND_WRITTEN_CONF = NGINX_PROLOGUE.replace("{name}", "hand") + """\
    upstream web {{ server {backend}; keepalive 64; }}
    server {{
        listen {listen} default_server;
        server_name _;
        location / {{ return 404; }}
    }}
    server {{
        listen {listen};
        server_name bench.example;
        location / {{
            proxy_pass http://web;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""

NGINX_CONF = NGINX_PROLOGUE.replace("{name}", "nginx") + """\
    upstream backend {{ server {backend}; keepalive 128; }}
    server {{
        listen {backend};
        location / {{ root {dir}/www; }}
    }}
    server {{
        listen {reverse};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def stop_processes(procs: list[subprocess.Popen]) -> None:
    """SIGTERM to each, then wait up to 10 s for each (the benchmark's helpers and servers)."""
    for p in procs:
        p.terminate()
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(10)


def wait_port(ip: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection((ip, port), 0.5):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"nothing listens on {ip}:{port} after {timeout}s")
        time.sleep(0.05)


def run_wrk(url: str, seconds: int, connections: int, threads: int, host: str | None = None,
            netns: str | None = None) -> tuple[float, float]:
    extra = ["-H", f"Host: {host}"] if host else []
    inside = ["ip", "netns", "exec", netns] if netns else []
    out = subprocess.run(
        [*inside, "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", *extra, url],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    p99 = float(m.group(1)) * scale[m.group(2)] if m else float("nan")
    return rps, p99


async def _py_load(ip: str, port: int, seconds: int, connections: int, host: str | None = None) -> tuple[float, float]:
    request = f"GET /index.html HTTP/1.1\r\nHost: {host or ip}\r\n\r\n".encode()
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(ip, port)
        while time.monotonic() < deadline:
            t = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t)
        writer.close()

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.monotonic() - start
    latencies.sort()
    return len(latencies) / elapsed, latencies[int(len(latencies) * 0.99) - 1] * 1000


def load(ip: str, port: int, seconds: int, connections: int, threads: int, host: str | None = None) -> tuple[float, float]:
    if shutil.which("wrk"):
        return run_wrk(f"http://{ip}:{port}/index.html", seconds, connections, threads, host)
    return asyncio.run(_py_load(ip, port, seconds, connections, host))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.seconds > 60 or args.connections > 1024:
        raise SystemExit("bounded load only: --seconds <= 60, --connections <= 1024")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        raise SystemExit("nginx is required (apt-get install -y nginx)")
    net = f"127.{random.randint(100, 199)}.{random.randint(0, 255)}"
    backend, reverse, proxy = (f"{net}.1", 18080), (f"{net}.2", 18081), (f"{net}.3", 18082)
    builtin, nginx_plane, hand = (f"{net}.4", 18083), (f"{net}.5", 18084), (f"{net}.6", 18085)
    with tempfile.TemporaryDirectory(prefix="kyb-bench-net-") as tmp:
        www = Path(tmp, "www")
        www.mkdir()
        (www / "index.html").write_text("<html><body>kybernetes bench</body></html>\n" * 4)
        conf = Path(tmp, "nginx.conf")
        conf.write_text(NGINX_CONF.format(dir=tmp, backend=f"{backend[0]}:{backend[1]}", reverse=f"{reverse[0]}:{reverse[1]}"))
        procs = [subprocess.Popen([nginx, "-c", str(conf), "-p", tmp], stderr=subprocess.DEVNULL)]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        procs.append(subprocess.Popen(
            [sys.executable, "-c", PROXY, proxy[0], str(proxy[1]), backend[0], str(backend[1])],
            env=env, stdout=subprocess.DEVNULL, cwd=ROOT,
        ))
        for kind, (ip, port) in (("builtin", builtin), ("nginx", nginx_plane)):
            procs.append(subprocess.Popen(
                [sys.executable, "-c", INGRESS, kind, ip, str(port), backend[0], str(backend[1])],
                env=env, stdout=subprocess.DEVNULL, cwd=ROOT,
            ))
        hand_conf = Path(tmp, "hand.conf")
        hand_conf.write_text(HAND_WRITTEN_CONF.format(dir=tmp, backend=f"{backend[0]}:{backend[1]}", listen=f"{hand[0]}:{hand[1]}"))
        procs.append(subprocess.Popen([nginx, "-c", str(hand_conf), "-p", tmp], stderr=subprocess.DEVNULL))
        try:
            for ip, port in (backend, reverse, proxy, builtin, nginx_plane, hand):
                wait_port(ip, port)
            rows = []
            for label, (ip, port), host in [
                ("direct", backend, None), ("kyb proxy", proxy, None), ("nginx proxy", reverse, None),
                ("builtin ingress", builtin, "bench.example"), ("nginx-plane ingress", nginx_plane, "bench.example"),
                ("hand-written nginx", hand, "bench.example"),
            ]:
                rows.append((label, *load(ip, port, args.seconds, args.connections, args.threads, host)))
        finally:
            stop_processes(procs)
    tool = "wrk" if shutil.which("wrk") else "python"
    print(f"load: {tool}, {args.connections} connections, {args.seconds}s each, small static file from nginx")
    print(f"{'path':<20} {'req/s':>10} {'p99 ms':>8} {'x direct':>9}")
    direct = rows[0][1]
    for label, rps, p99 in rows:
        print(f"{label:<20} {rps:>10.0f} {p99:>8.2f} {rps / direct:>9.2f}")
    rps = {label: r for label, r, _ in rows}
    ratio = rps["kyb proxy"] / direct
    print(f"kyb proxy / direct = {ratio:.2f} (target >= 0.5); kyb proxy / nginx proxy = {rps['kyb proxy'] / rps['nginx proxy']:.2f}")
    print(f"builtin ingress / nginx proxy = {rps['builtin ingress'] / rps['nginx proxy']:.2f} (target >= 0.35)")
    print(f"nginx-plane ingress / hand-written nginx = {rps['nginx-plane ingress'] / rps['hand-written nginx']:.2f} (target >= 0.9)")
    if os.geteuid() == 0 and shutil.which("nft") and shutil.which("wrk"):
        sys.path.insert(0, str(ROOT / "bench"))
        import network_nft

        network_nft.run(args.seconds, args.connections, args.threads, run_wrk, stop_processes)
        import network_hosts

        print()
        network_hosts.run(args.seconds, args.connections, args.threads, run_wrk,
                          startup_too=shutil.which("docker") is not None)
    else:
        print("nftables proxy: skipped (needs root, nft and wrk)")


if __name__ == "__main__":
    main()
