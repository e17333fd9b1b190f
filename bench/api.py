"""Apply throughput and latency through kyb.api.apply, beside raw kv.put of the same payloads.

    python bench/api.py [--objects 10000] [--concurrency 64] [--replicas 1]

Starts its own nats-server (free port, temp store) and the api service as separate processes
(as `kyb serve api` runs in production), then from one client:
  1. raw: kv.put of every payload into a bucket, `concurrency` in flight;
  2. api: a request to kyb.api.apply per payload, `concurrency` in flight.
  3. messaging only: the same messages an apply makes (request, CAS write, event, reply)
     answered by a bare responder with no api logic, on the same library and event loop:
     the most any api on this stack can reach on this machine.
Prints objects/s and p50/p99 latency of each, the api's ratio to raw, and the CPU each
process spent per object.
Targets (issue "Foundation"): api throughput >= 0.5x raw put, api p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kyb.natsd import NatsServer, free_port  # noqa: E402

SERVE = (
    "import asyncio, signal, sys, uvloop\n"
    "from kyb.serve import run_services\n"
    "async def main():\n"
    "    stop = asyncio.Event()\n"
    "    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)\n"
    "    await run_services(['api'], sys.argv[1], {}, stop)\n"
    "uvloop.run(main())\n"
)


# The messaging of one apply and nothing else: the request in, a CAS write to a KV bucket,
# an event into a stream, the reply out; same library, event loop and task per request as
# the api. What this reaches is what any api built on them can reach on this machine.
FLOOR = (
    "import asyncio, itertools, os, sys, uvloop, nats\n"
    "async def main():\n"
    "    nc = await nats.connect(sys.argv[1])\n"
    "    js = nc.jetstream()\n"
    "    await js.add_stream(name='BENCH_FLOOR_EVENTS', subjects=['bench.floor.events.>'])\n"
    "    await js.create_key_value(bucket='bench-floor', history=1)\n"
    "    keys = itertools.count()\n"
    "    async def one(msg):\n"
    "        await nc.request(f'$KV.bench-floor.k{os.getpid()}-{next(keys)}', msg.data, timeout=30,\n"
    "                         headers={'Nats-Expected-Last-Subject-Sequence': '0'})\n"
    "        await nc.publish('bench.floor.events.default', msg.data)\n"
    "        await nc.publish(msg.reply, msg.data, headers={'Kyb-Status': '201'})\n"
    "    tasks = set()\n"
    "    async def on(msg):\n"
    "        t = asyncio.create_task(one(msg)); tasks.add(t); t.add_done_callback(tasks.discard)\n"
    "    await nc.subscribe('bench.floor', queue='floor', cb=on, pending_msgs_limit=1_000_000)\n"
    "    await asyncio.Event().wait()\n"
    "uvloop.run(main())\n"
)


def payload(i: int) -> bytes:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"cm-{i}", "labels": {"app": "bench"}},
            "data": {"key": f"value-{i}"},
        }
    ).encode()


def cpu_seconds(procs: dict[str, psutil.Process]) -> dict[str, float]:
    return {name: sum(p.cpu_times()[:2]) for name, p in procs.items()}


def cpu_line(before: dict[str, float], after: dict[str, float], n: int) -> str:
    """CPU time each process spent per object, in microseconds."""
    return "  ".join(f"{name} {(after[name] - before[name]) / n * 1e6:.0f}" for name in before)


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


async def run_load(n: int, concurrency: int, one) -> tuple[float, list[float]]:
    latencies: list[float] = []
    next_i = 0

    async def worker() -> None:
        nonlocal next_i
        while next_i < n:
            i = next_i
            next_i += 1
            t0 = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, sorted(latencies)


async def wait_for_api(nc) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            msg = await nc.request("kyb.api.get", b'{"kind":"ns","name":"default"}', timeout=0.5)
            if msg.headers and msg.headers.get("Kyb-Status") == "200":
                return
        except Exception:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("api did not come up")


async def wait_for_floor(nc) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            await nc.request("bench.floor", b"{}", timeout=0.5)
            return
        except Exception:
            await asyncio.sleep(0.1)
    raise SystemExit("the messaging-only responder did not come up")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--replicas", type=int, default=1, help="api service processes (queue group)")
    ap.add_argument("--traced", action="store_true",
                    help="every request carries a sampled traceparent, as `kyb apply` sends (default: a plain client)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(store_dir=Path(tmp) / "js", port=free_port())
        server.start()
        procs = [
            subprocess.Popen([sys.executable, "-c", SERVE, server.url], env={**os.environ, "PYTHONPATH": os.getcwd()},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(args.replicas)
        ]
        floors = [
            subprocess.Popen([sys.executable, "-c", FLOOR, server.url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(args.replicas)
        ]
        try:
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            await wait_for_api(nc)
            payloads = [payload(i) for i in range(args.objects)]

            raw_kv = await js.create_key_value(bucket="bench-raw", history=1)

            async def raw(i: int) -> None:
                await raw_kv.put(f"default.cm-{i}", payloads[i])

            async def api(i: int) -> None:
                headers = {"traceparent": f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"} if args.traced else None
                msg = await nc.request("kyb.api.apply", payloads[i], timeout=30, headers=headers)
                if msg.headers.get("Kyb-Status") not in ("200", "201"):
                    raise SystemExit(f"apply failed: {msg.data[:300]!r}")

            async def floor(i: int) -> None:
                await nc.request("bench.floor", payloads[i], timeout=30)

            # warm every path
            await run_load(200, args.concurrency, raw)
            await wait_for_floor(nc)
            await run_load(200, args.concurrency, floor)
            await run_load(200, args.concurrency, api)
            payloads = [payload(i + 1_000_000) for i in range(args.objects)]

            watched = {"client": psutil.Process(), "nats-server": psutil.Process(server.proc.pid)}
            watched.update({f"api-{i}": psutil.Process(p.pid) for i, p in enumerate(procs)})
            watched.update({f"floor-{i}": psutil.Process(p.pid) for i, p in enumerate(floors)})
            c0 = cpu_seconds(watched)
            raw_s, raw_lat = await run_load(args.objects, args.concurrency, raw)
            f0 = cpu_seconds(watched)
            floor_s, floor_lat = await run_load(args.objects, args.concurrency, floor)
            c1 = cpu_seconds(watched)
            api_s, api_lat = await run_load(args.objects, args.concurrency, api)
            c2 = cpu_seconds(watched)
            await nc.close()
        finally:
            for p in procs + floors:
                p.terminate()
            for p in procs + floors:
                p.wait(10)
            server.stop()

    raw_rate, api_rate = args.objects / raw_s, args.objects / api_s
    print(f"objects={args.objects} concurrency={args.concurrency} api_replicas={args.replicas} traced={args.traced}")
    print(f"raw kv.put : {raw_rate:9.0f} obj/s  p50 {percentile(raw_lat, 50)*1e3:6.2f} ms  p99 {percentile(raw_lat, 99)*1e3:6.2f} ms")
    print(f"kyb.api.apply: {api_rate:7.0f} obj/s  p50 {percentile(api_lat, 50)*1e3:6.2f} ms  p99 {percentile(api_lat, 99)*1e3:6.2f} ms")
    floor_rate = args.objects / floor_s
    print(f"messaging only: {floor_rate:6.0f} obj/s  p50 {percentile(floor_lat, 50)*1e3:6.2f} ms  "
          f"p99 {percentile(floor_lat, 99)*1e3:6.2f} ms  = {floor_rate / raw_rate:.2f}x raw "
          "(request, CAS write, event, reply; no api logic)")
    print(f"CPU us/object, raw : {cpu_line(c0, f0, args.objects)}")
    print(f"CPU us/object, messaging only: {cpu_line(f0, c1, args.objects)}")
    print(f"CPU us/object, api : {cpu_line(c1, c2, args.objects)}")
    # What the machine allows: the api path spends this much CPU per object in all processes
    # together (client, nats-server, api), so on this many cores it cannot go faster.
    cores = len(os.sched_getaffinity(0))
    api_cpu = sum(c2[k] - c1[k] for k in c1) / args.objects
    bound = cores / api_cpu
    print(f"api path: {api_cpu * 1e6:.0f} us CPU per object in all processes; on {cores} cores at most "
          f"{bound:.0f} obj/s = {bound / raw_rate:.2f}x raw")
    ratio = api_rate / raw_rate
    p99 = percentile(api_lat, 99) * 1e3
    print(f"ratio api/raw = {ratio:.2f} (target >= 0.5)  api p99 = {p99:.1f} ms (target <= 50)")
    print("PASS" if ratio >= 0.5 and p99 <= 50 else "MISS")


if __name__ == "__main__":
    asyncio.run(main())
