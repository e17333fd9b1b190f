"""The Kubernetes API (services/apiserver) beside the bus it translates onto, in one run.

    python bench/apiserver.py [--pods 1000] [--objects 5000] [--concurrency 64]
                              [--watchers 100] [--changes 1000] [--rate 40] [--profile DIR]

Starts its own nats-server (free port, temp store), the api and the apiserver as separate
processes (as `kyb serve api` and `kyb serve apiserver` run them; TLS on a free port of
127.0.0.1, a kubeconfig in the temp data directory), then:
  1. list: ``--pods`` pods bound to a hollow Node (plain API objects, no kubelet), then the
     wall time of `kubectl get pods` (the real kubectl; a Table from the apiserver) beside
     `kyb get pods` (kyb.api.list) over the same pods, alternately, ``--runs`` times each;
  2. create: ``--objects`` pods sent to kyb.api.apply at ``--concurrency`` in flight (nats-py),
     then pods POSTed over HTTPS at the same concurrency on keep-alive connections by wrk (a
     C client, as client-go is compiled; Debian's ``wrk``) for about as long, then by aiohttp;
     objects/s, p50/p99, the ratio, the CPU each process spent per object, and the HTTPS
     floor: aiohttp on TLS echoing each POST with no bus behind it, driven by wrk;
  3. watch: ``--watchers`` HTTP watches (in ``--watch-procs`` processes of their own) of one
     namespace from the same resourceVersion, then ``--changes`` ConfigMaps written through
     kyb.api.apply at ``--rate`` a second; each watcher must see every change exactly once.
     The lag of a change is the time from its write being sent (the monotonic clock, stamped
     into the object) to a watcher reading its event; p50/p99 over every (watcher, change).
     Beside it in the same run: as many kyb.informer watchers straight on the bucket.
Target (issue 15): create through the HTTP API >= 0.7x kyb.api.apply.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import msgspec
import nats
import psutil
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.api import cpu_line, cpu_seconds, percentile, run_load, wait_for_api  # noqa: E402
from kyb.hollow import hollow_node  # noqa: E402
from kyb.natsd import NatsServer, free_port  # noqa: E402

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
TARGET = 0.7
NODE = "hollow-0"

# argv: NATS URL, service, options (JSON), and a file for cProfile's stats ("" for none).
SERVE = (
    "import asyncio, cProfile, json, signal, sys, time, uvloop\n"
    "from kyb.serve import run_services\n"
    "async def main():\n"
    "    stop = asyncio.Event()\n"
    "    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)\n"
    "    await run_services([sys.argv[2]], sys.argv[1], json.loads(sys.argv[3]), stop)\n"
    "profile = cProfile.Profile(time.process_time) if sys.argv[4] else None  # CPU, not wall, time\n"
    "if profile: profile.enable()\n"
    "uvloop.run(main())\n"
    "if profile: profile.disable(); profile.dump_stats(sys.argv[4])\n"
)

# One process of watchers: argv = mode (http|informer), count, then a JSON of what to reach.
# Prints "ready" once every watch is open, then one JSON line: each watcher's lags in seconds
# and the CPU seconds the process used.
WATCHERS = '''
import asyncio, json, resource, ssl, sys, time, uvloop
import aiohttp, nats
mode, count, cfg = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
expected = cfg["changes"]

def lag_of(data):
    return time.monotonic() - int(data["sent"]) / 1e9

async def http_watcher(session, lags, opened):
    url = (f"{cfg['server']}/api/v1/namespaces/{cfg['namespace']}/configmaps"
           f"?watch=1&resourceVersion={cfg['rv']}&timeoutSeconds=600")
    seen = set()
    async with session.get(url, headers={"Authorization": f"Bearer {cfg['token']}"}) as resp:
        assert resp.status == 200, resp.status
        opened()
        while len(seen) < expected:
            line = await resp.content.readline()
            if not line:
                raise SystemExit(f"a watch ended after {len(seen)} of {expected} changes")
            event = json.loads(line)
            obj = event["object"]
            name = obj["metadata"]["name"]
            if event["type"] != "ADDED" or name in seen:
                raise SystemExit(f"unexpected or repeated event: {event['type']} {name}")
            seen.add(name)
            lags.append(lag_of(obj["data"]))

async def informer_watcher(nc, lags, opened, done):
    from kyb.informer import Informer
    seen = set()
    def on(event, new, old, headers):
        if new is None or new.metadata.namespace != cfg["namespace"]:
            return
        if event != "ADDED" or new.metadata.name in seen:
            raise SystemExit(f"unexpected or repeated event: {event} {new.metadata.name}")
        seen.add(new.metadata.name)
        lags.append(lag_of(new.data))
        if len(seen) == expected:
            done.set()
    inf = Informer(nc, "ConfigMap")
    inf.add_handler(on)
    await inf.start()
    await inf.wait_synced(60)
    opened()
    await done.wait()
    await inf.stop()

async def main():
    all_lags = [[] for _ in range(count)]
    ready = 0
    def opened():
        nonlocal ready
        ready += 1
        if ready == count:
            print("ready", flush=True)
    if mode == "http":
        ctx = ssl.create_default_context(cafile=cfg["ca"])
        conn = aiohttp.TCPConnector(ssl=ctx, limit=0)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=None)) as s:
            await asyncio.gather(*(http_watcher(s, all_lags[i], opened) for i in range(count)))
    else:
        nc = await nats.connect(cfg["nats"])
        await asyncio.gather(*(informer_watcher(nc, all_lags[i], opened, asyncio.Event()) for i in range(count)))
        await nc.close()
    used = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"lags": all_lags, "cpu": used.ru_utime + used.ru_stime}), flush=True)

uvloop.run(main())
'''


# The HTTPS floor: aiohttp on TLS answering each POST with its own body, no bus and no logic:
# the most any apiserver on this HTTP stack can answer on this machine. argv: port, cert, key.
HTTPS_FLOOR = (
    "import ssl, sys, uvloop\n"
    "from aiohttp import web\n"
    "async def echo(request):\n"
    "    return web.Response(body=await request.read(), status=201, content_type='application/json')\n"
    "app = web.Application()\n"
    "app.router.add_post('/{tail:.*}', echo)\n"
    "ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)\n"
    "ctx.load_cert_chain(sys.argv[2], sys.argv[3])\n"
    "web.run_app(app, host='127.0.0.1', port=int(sys.argv[1]), ssl_context=ctx, access_log=None, print=None,\n"
    "            loop=uvloop.new_event_loop())\n"
)

# wrk's script: each request POSTs a pod of a name of its own; done() prints one JSON line.
WRK_SCRIPT = """
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
request = function()
  n = n + 1
  wrk.body = string.format('{"apiVersion":"v1","kind":"Pod","metadata":{"name":"wrk-%d","namespace":"default",'
    .. '"labels":{"app":"bench"}},"spec":{"nodeName":"NODE","containers":[{"name":"app","image":"busybox",'
    .. '"command":["sleep","3600"]}]}}', n)
  return wrk.format()
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%d,"us":%d,"failed":%d,"p50":%d,"p99":%d}\\n', summary.requests,
    summary.duration, e.connect + e.read + e.write + e.status + e.timeout, latency:percentile(50),
    latency:percentile(99)))
end
""".replace("NODE", NODE)


def run_wrk(url: str, token: str, seconds: int, connections: int, script: Path) -> tuple[float, float, float, int]:
    """objects/s, p50 and p99 in seconds, and how many were created, by wrk (one thread)."""
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "-s", str(script), url],
                         capture_output=True, text=True, timeout=seconds + 60, env={**os.environ, "BENCH_TOKEN": token})
    if out.returncode != 0:
        raise SystemExit(f"wrk: {(out.stderr or out.stdout).strip()}")
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    if doc["failed"]:
        raise SystemExit(f"{doc['failed']} of wrk's {doc['requests']} creates failed")
    return doc["requests"] / (doc["us"] / 1e6), doc["p50"] / 1e6, doc["p99"] / 1e6, doc["requests"]


def pod(i: int, prefix: str = "pod") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{prefix}-{i}", "namespace": "default", "labels": {"app": "bench"}},
        "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"]}]},
    }


def serve(url: str, name: str, options: dict, profile: str | None) -> subprocess.Popen:
    stats = str(Path(profile) / f"{name}.prof") if profile else ""
    return subprocess.Popen([sys.executable, "-c", SERVE, url, name, json.dumps(options), stats],
                            env={**os.environ, "PYTHONPATH": os.getcwd()},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def timed(argv: list[str], env: dict[str, str], lines: int) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])}...: {done.stderr.strip()}")
    got = len(done.stdout.splitlines())
    if got != lines:
        raise SystemExit(f"{' '.join(argv[:3])}... printed {got} lines, not {lines}")
    return took


async def wait_for_apiserver(session: aiohttp.ClientSession, server: str, token: str, path: str = "/readyz",
                             method: str = "GET") -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            async with session.request(method, f"{server}{path}",
                                       headers={"Authorization": f"Bearer {token}"}) as resp:
                if resp.status in (200, 201):
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("the apiserver did not come up")


def lag_line(name: str, lags: list[list[float]], changes: int, took: float) -> str:
    flat = sorted(x for one in lags for x in one)
    complete = sum(1 for one in lags if len(one) == changes)
    return (f"{name}: {complete}/{len(lags)} watchers saw all {changes} changes; lag p50 "
            f"{percentile(flat, 50) * 1e3:7.1f} ms  p99 {percentile(flat, 99) * 1e3:7.1f} ms  "
            f"max {flat[-1] * 1e3:7.1f} ms; every event delivered {took:.2f} s after the first write")


async def watch_run(mode: str, args, cfg: dict, nc, namespace: str) -> tuple[list[list[float]], float, float]:
    """``args.watchers`` watchers of ``namespace`` (in ``args.watch_procs`` processes), then
    ``args.changes`` ConfigMaps created there; each watcher's lags."""
    cfg = {**cfg, "namespace": namespace, "changes": args.changes}
    per = [args.watchers // args.watch_procs + (1 if i < args.watchers % args.watch_procs else 0)
           for i in range(args.watch_procs)]
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", WATCHERS, mode, str(n), json.dumps(cfg),
                                                  stdout=asyncio.subprocess.PIPE, limit=1 << 26,  # the lags: one line
                                                  env={**os.environ, "PYTHONPATH": os.getcwd()})
             for n in per if n]
    async def protocol_line(p: asyncio.subprocess.Process, timeout: float) -> bytes:
        """The next line the watchers print for us (a library's log line may come between)."""
        assert p.stdout is not None
        while True:
            line = await asyncio.wait_for(p.stdout.readline(), timeout)
            if not line or line.strip() == b"ready" or line.startswith(b"{"):
                return line.strip()

    try:
        return await _watched(mode, args, nc, namespace, procs, protocol_line)
    finally:
        for p in procs:  # none outlives a failed run
            if p.returncode is None:
                p.kill()
                await p.wait()


async def _watched(mode: str, args, nc, namespace: str, procs: list, protocol_line) -> tuple[list[list[float]], float, float]:
    for p in procs:
        line = await protocol_line(p, 120)
        if line != b"ready":
            raise SystemExit(f"{mode} watchers did not start: {line[:300]!r}")

    start = time.monotonic()

    async def write(i: int) -> None:
        if args.rate:  # change i is due i/rate seconds after the first
            await asyncio.sleep(max(0.0, start + i / args.rate - time.monotonic()))
        doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i}", "namespace": namespace},
               "data": {"sent": str(time.monotonic_ns())}}
        msg = await nc.request("kyb.api.apply", msgspec.json.encode(doc), timeout=30)
        if msg.headers.get("Kyb-Status") not in ("200", "201"):
            raise SystemExit(f"apply failed: {msg.data[:300]!r}")

    t0 = time.perf_counter()
    await run_load(args.changes, args.write_concurrency, write)
    lags: list[list[float]] = []
    cpu = 0.0
    for p in procs:
        out = json.loads(await protocol_line(p, 600))
        lags += out["lags"]
        cpu += out["cpu"]
        await p.wait()
    return lags, time.perf_counter() - t0, cpu


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=1000, help="pods listed by kubectl get pods and kyb get pods")
    ap.add_argument("--runs", type=int, default=5, help="runs of each get")
    ap.add_argument("--objects", type=int, default=5000, help="pods created in each create run")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--watchers", type=int, default=100)
    ap.add_argument("--watch-procs", type=int, default=2, help="processes the watchers run in")
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--write-concurrency", type=int, default=8, help="writes in flight during the watch run")
    ap.add_argument("--rate", type=float, default=40, help="changes per second in the watch run (0: at once)")
    ap.add_argument("--skip", action="append", default=[], choices=["list", "create", "watch"])
    ap.add_argument("--profile", metavar="DIR", help="write cProfile stats of the api and the apiserver there "
                    "(api.prof, apiserver.prof; read them with python -m pstats)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        server = NatsServer(store_dir=Path(tmp) / "js", port=free_port())
        server.start()
        port = free_port()
        api = serve(server.url, "api", {}, args.profile)
        apiserver = serve(server.url, "apiserver", {"apiserver_port": port, "data_dir": str(data)}, args.profile)
        https = f"https://127.0.0.1:{port}"
        try:
            nc = await nats.connect(server.url)
            await wait_for_api(nc)
            token_file = data / "apiserver" / "token"
            deadline = time.monotonic() + 60
            while not token_file.exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            token = token_file.read_text().strip()
            ca = str(data / "apiserver" / "ca.crt")
            ctx = ssl.create_default_context(cafile=ca)
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=args.concurrency),
                                            timeout=aiohttp.ClientTimeout(total=60))
            await wait_for_apiserver(session, https, token)
            node = msgspec.json.encode(hollow_node(NODE))
            msg = await nc.request("kyb.api.apply", node, timeout=30)
            assert msg.headers.get("Kyb-Status") in ("200", "201"), msg.data[:300]

            async def apply_doc(doc: dict) -> None:
                msg = await nc.request("kyb.api.apply", msgspec.json.encode(doc), timeout=30)
                if msg.headers.get("Kyb-Status") not in ("200", "201"):
                    raise SystemExit(f"apply failed: {msg.data[:300]!r}")

            async def post_doc(body: bytes) -> None:
                async with session.post(f"{https}/api/v1/namespaces/default/pods", data=body,
                                        headers={"Authorization": f"Bearer {token}",
                                                 "Content-Type": "application/json"}) as resp:
                    await resp.read()
                    if resp.status != 201:
                        raise SystemExit(f"POST failed: {resp.status} {(await resp.read())[:300]!r}")

            watched = {"client": psutil.Process(), "nats-server": psutil.Process(server.proc.pid),
                       "api": psutil.Process(api.pid), "apiserver": psutil.Process(apiserver.pid)}
            results: list[str] = []

            if "list" not in args.skip:
                await run_load(args.pods, args.concurrency, lambda i: apply_doc(pod(i, "listed")))
                kenv = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
                kenv |= {"KUBECONFIG": str(data / "kubeconfig.yaml"), "HOME": tmp}
                yenv = {k: v for k, v in os.environ.items() if not k.startswith("KYB_NATS_")}
                yenv |= {"KYB_DATA_DIR": str(data)}
                kubectl = [KUBECTL, "get", "pods", "-n", "default"]
                kyb = [sys.executable, "-m", "kyb.cli.main", "--nats", server.url, "get", "pods", "-n", "default"]
                cold = timed(kubectl, kenv, args.pods + 1)  # discovery, then cached under HOME
                k_times, y_times = [], []
                for _ in range(args.runs):  # alternately, so both see the same machine
                    k_times.append(timed(kubectl, kenv, args.pods + 1))
                    y_times.append(timed(kyb, yenv, args.pods + 1))
                floor = [timed([sys.executable, "-c", "import kyb.cli.main"], yenv, 0) for _ in range(args.runs)]
                results.append(
                    f"kubectl get pods ({args.pods} pods): median {statistics.median(k_times):.3f} s, best "
                    f"{min(k_times):.3f} s (first run, with discovery: {cold:.3f} s)")
                results.append(
                    f"kyb get pods     ({args.pods} pods): median {statistics.median(y_times):.3f} s, best "
                    f"{min(y_times):.3f} s (of which starting Python and importing the CLI: "
                    f"{statistics.median(floor):.3f} s); kubectl/kyb = "
                    f"{statistics.median(k_times) / statistics.median(y_times):.2f}")
                print(results[-2], results[-1], sep="\n", flush=True)

            if "create" not in args.skip:
                script = Path(tmp) / "create.lua"
                script.write_text(WRK_SCRIPT)
                pods_url = f"{https}/api/v1/namespaces/default/pods"
                warm = [msgspec.json.encode(pod(i, "warm")) for i in range(200)]
                await run_load(200, args.concurrency, lambda i: post_doc(warm[i]))
                await run_load(200, args.concurrency, lambda i: apply_doc(pod(i, "warm-apply")))
                bodies = [msgspec.json.encode(pod(i, "http")) for i in range(args.objects)]
                docs = [pod(i, "bus") for i in range(args.objects)]
                c0 = cpu_seconds(watched)
                bus_s, bus_lat = await run_load(args.objects, args.concurrency, lambda i: apply_doc(docs[i]))
                c1 = cpu_seconds(watched)
                bus_rate = args.objects / bus_s
                w0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                wrk_rate, wrk_p50, wrk_p99, wrk_n = await asyncio.to_thread(
                    run_wrk, pods_url, token, max(2, round(args.objects / bus_rate)), args.concurrency, script)
                w1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                c2 = cpu_seconds(watched)
                py_s, py_lat = await run_load(args.objects, args.concurrency, lambda i: post_doc(bodies[i]))
                c3 = cpu_seconds(watched)
                py_rate = args.objects / py_s
                floor_port = free_port()
                floor = subprocess.Popen([sys.executable, "-c", HTTPS_FLOOR, str(floor_port),
                                          str(data / "apiserver" / "server.crt"), str(data / "apiserver" / "server.key")])
                try:
                    floor_url = f"https://127.0.0.1:{floor_port}/"
                    await wait_for_apiserver(session, f"https://127.0.0.1:{floor_port}", token, "/", method="POST")
                    f0 = sum(psutil.Process(floor.pid).cpu_times()[:2])
                    floor_rate, _, floor_p99, floor_n = await asyncio.to_thread(
                        run_wrk, floor_url, token, max(2, round(args.objects / bus_rate)), args.concurrency, script)
                    floor_cpu = (sum(psutil.Process(floor.pid).cpu_times()[:2]) - f0) / floor_n * 1e6
                finally:
                    floor.terminate()
                    floor.wait(10)
                wrk_cpu = (w1.ru_utime + w1.ru_stime - w0.ru_utime - w0.ru_stime) / wrk_n * 1e6
                server_side = {k: v for k, v in c0.items() if k != "client"}
                results += [
                    f"create pods, concurrency {args.concurrency}:",
                    f"  kyb.api.apply (nats-py)  : {bus_rate:7.0f} obj/s  p50 {percentile(bus_lat, 50) * 1e3:6.2f} ms  "
                    f"p99 {percentile(bus_lat, 99) * 1e3:6.2f} ms  ({args.objects} pods)",
                    f"  POST over HTTPS (wrk)    : {wrk_rate:7.0f} obj/s  p50 {wrk_p50 * 1e3:6.2f} ms  "
                    f"p99 {wrk_p99 * 1e3:6.2f} ms  ({wrk_n} pods) = {wrk_rate / bus_rate:.2f}x kyb.api.apply",
                    f"  POST over HTTPS (aiohttp): {py_rate:7.0f} obj/s  p50 {percentile(py_lat, 50) * 1e3:6.2f} ms  "
                    f"p99 {percentile(py_lat, 99) * 1e3:6.2f} ms  ({args.objects} pods) = "
                    f"{py_rate / bus_rate:.2f}x kyb.api.apply",
                    f"  HTTPS alone (aiohttp echoing each POST, no bus; wrk): {floor_rate:7.0f} req/s  "
                    f"p99 {floor_p99 * 1e3:6.2f} ms, {floor_cpu:.0f} us CPU per request in the server",
                    f"  CPU us/object, kyb.api.apply: {cpu_line(c0, c1, args.objects)}",
                    f"  CPU us/object, wrk          : wrk {wrk_cpu:.0f}  "
                    f"{cpu_line({k: c1[k] for k in server_side}, {k: c2[k] for k in server_side}, wrk_n)}",
                    f"  CPU us/object, aiohttp      : {cpu_line(c2, c3, args.objects)}",
                    f"  ratio HTTP (wrk)/kyb.api.apply = {wrk_rate / bus_rate:.2f} (target >= {TARGET}): "
                    f"{'PASS' if wrk_rate / bus_rate >= TARGET else 'MISS'}",
                ]
                print(*results[-9:], sep="\n", flush=True)

            if "watch" not in args.skip:
                cfg = {"server": https, "token": token, "ca": ca, "nats": server.url}
                for ns in ("watch-http", "watch-bus"):
                    await apply_doc({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
                async with session.get(f"{https}/api/v1/namespaces/watch-http/configmaps?limit=1",
                                       headers={"Authorization": f"Bearer {token}"}) as resp:
                    cfg["rv"] = (await resp.json())["metadata"]["resourceVersion"]
                c0 = cpu_seconds(watched)
                http_lags, http_took, http_cpu = await watch_run("http", args, cfg, nc, "watch-http")
                c1 = cpu_seconds(watched)
                bus_lags, bus_took, bus_cpu = await watch_run("informer", args, cfg, nc, "watch-bus")
                c2 = cpu_seconds(watched)
                results += [
                    f"{args.watchers} watchers x {args.changes} changes ({args.rate:g} changes/s, at most "
                    f"{args.write_concurrency} writes in flight):",
                    "  " + lag_line("HTTP watch    ", http_lags, args.changes, http_took),
                    "  " + lag_line("kyb.informer  ", bus_lags, args.changes, bus_took),
                    f"  CPU us/change, HTTP watch  : watchers {http_cpu / args.changes * 1e6:.0f}  "
                    f"{cpu_line(c0, c1, args.changes)}",
                    f"  CPU us/change, kyb.informer: watchers {bus_cpu / args.changes * 1e6:.0f}  "
                    f"{cpu_line(c1, c2, args.changes)}",
                ]
                print(*results[-5:], sep="\n", flush=True)
            await session.close()
            await nc.close()
        finally:
            for p in (api, apiserver):
                p.terminate()
            for p in (api, apiserver):
                p.wait(10)
            server.stop()


if __name__ == "__main__":
    uvloop.run(main())  # the clients on the event loop the services use
