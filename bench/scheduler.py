"""Scheduler throughput: hollow nodes, many pods created at once, pods/s until the last binding.

Figure: pods/s from the first pod create to the last binding seen in the ``kyb-pods`` bucket
(through a KV watch). Baseline in the same run: raw KV compare-and-set writes/s of the same
bindings (update at the revision read, no scheduling, same concurrency). Prints both and
their ratio. Starts its own nats-server on a free port in a temporary directory; the
scheduler runs in its own process, as it does in a deployment.

    python bench/scheduler.py [--nodes 5000] [--pods 10000] [--reserve auto|always|never] [--profile out.prof]
        [--spread none|zone|zone-soft]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import msgspec  # noqa: E402
import nats  # noqa: E402
from hollow import HollowNodes  # noqa: E402

from kyb.natsd import NatsServer, free_port  # noqa: E402
from kyb.store import Store  # noqa: E402
from schemas.pod import Pod  # noqa: E402
from schemas.registry import resolve  # noqa: E402

POD_CONCURRENCY = 1024


def make_pod(i: int, spread: str = "none") -> Pod:
    constraints = [] if spread == "none" else [{
        "maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule" if spread == "zone" else "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"app": "bench"}},
    }]
    return msgspec.convert(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"bench-{i:06d}",
                "namespace": "default",
                "labels": {"app": "bench"},
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "bench", "uid": "rs-bench", "controller": True}
                ],
            },
            "spec": {
                "containers": [
                    {"name": "app", "image": "bench:1", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}
                ],
                "topologySpreadConstraints": constraints,
            },
        },
        Pod,
    )


def scheduler_process(url: str, ready, profile: str | None, reserve: bool | None = None) -> None:
    """Runs one scheduler replica until terminated."""
    import signal

    import uvloop

    from services.scheduler.service import Scheduler, tune_gc

    async def main() -> None:
        nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
        sched = Scheduler(nc, Store(nc.jetstream(timeout=30)), identity="bench-scheduler", reserve=reserve)
        await sched.start()
        tune_gc()  # as the service's entry point does
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        ready.set()
        await sched.run(stop)
        await sched.stop()
        with contextlib.suppress(Exception):  # the loop may be closing under us
            await nc.close()

    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        try:
            uvloop.run(main())
        finally:
            prof.disable()
            prof.dump_stats(profile)
    else:
        uvloop.run(main())


async def watch_bindings(js, total: int, done: asyncio.Event, out: dict) -> None:
    """Count pods that are stored bound; record when the last one is."""
    kv = await js.key_value("kyb-pods")
    watcher = await kv.watch("default.>", include_history=False)
    seen: set[str] = set()
    async for entry in watcher:
        if entry is None or entry.value is None or not entry.value:
            continue
        if b'"nodeName"' in entry.value and entry.key not in seen:
            seen.add(entry.key)
            out[entry.key] = (entry.revision, entry.value)
            if len(seen) == total:
                out["_done_at"] = time.perf_counter()
                done.set()
                break
    await watcher.stop()


async def baseline(js, bound: dict) -> float:
    """Raw CAS writes of the same bound values at the revision each was read, no scheduling."""
    items = [(k, rev, val) for k, (rev, val) in bound.items()]
    start = time.perf_counter()
    for i in range(0, len(items), POD_CONCURRENCY):
        chunk = items[i : i + POD_CONCURRENCY]
        await asyncio.gather(
            *(
                js.publish(f"$KV.kyb-pods.{k}", val, headers={"Nats-Expected-Last-Subject-Sequence": str(rev)})
                for k, rev, val in chunk
            )
        )
    return len(items) / (time.perf_counter() - start)


async def run(args) -> None:
    with tempfile.TemporaryDirectory(prefix="kyb-bench-") as tmp:
        server = NatsServer(store_dir=Path(tmp) / "js", port=free_port(), log_file=Path(tmp) / "nats.log")
        server.start()
        proc = None
        try:
            nc = await nats.connect(server.url, pending_size=64 * 1024 * 1024)
            js = nc.jetstream(timeout=30)
            store = Store(js)
            await store.ensure_buckets([resolve("pods"), resolve("nodes")])
            t = time.perf_counter()
            await HollowNodes(args.nodes, zones=3).register(store)
            print(f"registered {args.nodes} hollow nodes in {time.perf_counter() - t:.1f}s")
            ctx = mp.get_context("spawn")
            ready = ctx.Event()
            reserve = {"auto": None, "always": True, "never": False}[args.reserve]
            proc = ctx.Process(target=scheduler_process, args=(server.url, ready, args.profile, reserve), daemon=True)
            proc.start()
            await asyncio.get_running_loop().run_in_executor(None, ready.wait, 120)

            pods = [make_pod(i, args.spread) for i in range(args.pods)]
            done = asyncio.Event()
            bound: dict = {}
            watcher = asyncio.create_task(watch_bindings(js, args.pods, done, bound))
            await asyncio.sleep(0.2)  # the watch is established
            start = time.perf_counter()
            for i in range(0, len(pods), POD_CONCURRENCY):
                await asyncio.gather(*(store.create(p) for p in pods[i : i + POD_CONCURRENCY]))
            created = time.perf_counter()
            await asyncio.wait_for(done.wait(), timeout=args.timeout)
            await watcher
            elapsed = bound.pop("_done_at") - start
            rate = args.pods / elapsed
            print(f"created {args.pods} pods in {created - start:.2f}s ({args.pods / (created - start):.0f}/s)")
            print(f"scheduled {args.pods} pods on {args.nodes} nodes in {elapsed:.2f}s: {rate:.0f} pods/s")
            proc.terminate()
            proc.join(30)
            proc = None
            base = await baseline(js, bound)
            print(f"baseline: raw KV CAS writes of the same bindings: {base:.0f} writes/s")
            print(f"ratio scheduled/baseline: {rate / base:.2f}")
            await nc.close()
        finally:
            if proc is not None:
                proc.terminate()
                proc.join(30)
            server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=5000)
    p.add_argument("--pods", type=int, default=10000)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument(
        "--reserve",
        choices=["auto", "always", "never"],
        default="auto",
        help="node reservations: only while another replica is alive (auto, the default), always, or never",
    )
    p.add_argument("--profile", help="write a cProfile of the scheduler process to this file")
    p.add_argument(
        "--spread",
        choices=["none", "zone", "zone-soft"],
        default="none",
        help="every pod spreads over the nodes' 3 zones, maxSkew 1: DoNotSchedule (zone), ScheduleAnyway (zone-soft)",
    )
    args = p.parse_args()
    import uvloop

    uvloop.run(run(args))


if __name__ == "__main__":
    main()
