"""Apply throughput and latency through kyb.api.apply, beside raw kv.put of the same payloads.

    python bench/api.py [--objects 10000] [--concurrency 64] [--replicas 1]

Starts its own nats-server (free port, temp store) and the api service as separate processes
(as `kyb serve api` runs in production), then from one client:
  1. raw: kv.put of every payload into a bucket, `concurrency` in flight;
  2. api: a request to kyb.api.apply per payload, `concurrency` in flight.
  3. messaging only: the same messages an apply makes (request, CAS write, event, reply)
     answered by a bare responder with no api logic, on the same library and event loop:
     the most any api on this stack can reach on this machine.
  4. api under attack: the api run again while a second client keeps `--bombers` nine-level
     YAML alias bombs (CVE-2019-11253's shape) in flight, beside run 2 as its baseline.
Prints objects/s and p50/p99 latency of each, the api's ratio to raw, and the CPU each
process spent per object, and the api's peak RSS in runs 2 and 4.
Targets: api throughput >= 0.45x raw put, api p99 <= 50 ms, the api's own CPU per object
<= 2x the messaging-only responder's.
Targets (issue "Hostile input and crashes"): under attack >= 0.8x the throughput, peak RSS <= 1.2x.
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


def alias_bomb(levels: int = 9, width: int = 9) -> bytes:
    """A ConfigMap with the billion-laughs shape: about 400 bytes, ``width**levels`` nodes expanded."""
    lines = ["apiVersion: v1", "kind: ConfigMap", "metadata: {name: bomb}",
             "a0: &a0 [" + ",".join(['"lol"'] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return ("\n".join(lines) + "\n").encode()


class PeakRss:
    """The largest summed RSS of some processes, sampled every 20 ms while running."""

    def __init__(self, procs: list[psutil.Process]) -> None:
        self.procs, self.peak, self._task = procs, 0, None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, sum(p.memory_info().rss for p in self.procs))
            await asyncio.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._task = asyncio.ensure_future(self._sample())
        return self

    def __exit__(self, *exc) -> None:
        self._task.cancel()


async def bombard(url: str, bombers: int, stop: asyncio.Event) -> int:
    """Keep ``bombers`` alias bombs in flight until ``stop``; each must be refused with a 4xx."""
    nc = await nats.connect(url)
    sent = 0

    async def one() -> None:
        nonlocal sent
        while not stop.is_set():
            msg = await nc.request("kyb.api.apply", alias_bomb(), timeout=30)
            if not msg.headers or not msg.headers.get("Kyb-Status", "").startswith("4"):
                raise SystemExit(f"an alias bomb was not refused: {msg.data[:300]!r}")
            sent += 1

    try:
        await asyncio.gather(*(one() for _ in range(bombers)))
    finally:
        await nc.close()
    return sent


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
    ap.add_argument("--bombers", type=int, default=4, help="alias bombs kept in flight during run 4 (0: skip it)")
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
            api_procs = [psutil.Process(p.pid) for p in procs]
            with PeakRss(api_procs) as api_rss:
                api_s, api_lat = await run_load(args.objects, args.concurrency, api)
            c2 = cpu_seconds(watched)
            if args.bombers:
                payloads = [payload(i + 2_000_000) for i in range(args.objects)]
                stop = asyncio.Event()
                with PeakRss(api_procs) as attacked_rss:
                    bombs = asyncio.ensure_future(bombard(server.url, args.bombers, stop))
                    attacked_s, attacked_lat = await run_load(args.objects, args.concurrency, api)
                    stop.set()
                    bombs_sent = await bombs
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
    api_own = sum(c2[k] - c1[k] for k in c1 if k.startswith("api-")) / args.objects
    floor_own = sum(c1[k] - f0[k] for k in f0 if k.startswith("floor-")) / args.objects
    print(f"ratio api/raw = {ratio:.2f} (target >= 0.45)  api p99 = {p99:.1f} ms (target <= 50)")
    print(f"api CPU per object {api_own * 1e6:.0f} us = {api_own / floor_own:.2f}x the messaging-only responder's "
          f"{floor_own * 1e6:.0f} us (target <= 2x)")
    print("PASS" if ratio >= 0.45 and p99 <= 50 and api_own <= 2 * floor_own else "MISS")
    print(f"api peak RSS: {api_rss.peak / 2**20:.0f} MiB")
    if args.bombers:
        attacked_rate = args.objects / attacked_s
        speed, memory = attacked_rate / api_rate, attacked_rss.peak / api_rss.peak
        print(f"kyb.api.apply under {args.bombers} alias bombs in flight: {attacked_rate:7.0f} obj/s  "
              f"p50 {percentile(attacked_lat, 50)*1e3:6.2f} ms  p99 {percentile(attacked_lat, 99)*1e3:6.2f} ms  "
              f"= {speed:.2f}x the run without (target >= 0.8); {bombs_sent} bombs refused "
              f"({bombs_sent / attacked_s:.0f}/s)")
        print(f"api peak RSS under attack: {attacked_rss.peak / 2**20:.0f} MiB = {memory:.2f}x the run without "
              "(target <= 1.2)")
        print("PASS" if speed >= 0.8 and memory <= 1.2 else "MISS")


if __name__ == "__main__":
    asyncio.run(main())
