"""StatefulSet of 100 replicas on a hollow node: seconds from its create until every pod is
Running and Ready, with podManagementPolicy Parallel and with OrderedReady, beside a ReplicaSet
of the same size in the same run (the baseline: the replication controller has no ordering).

The controllers and the hollow kubelet (binds each pod to its node, reports it Running and
Ready at once, like kubemark) run in this process on one nats-server. Parallel should be close
to the ReplicaSet; OrderedReady is a chain of N create -> Running -> Ready round trips, so its
figure is about N x one pod's start latency on the bus.

    python bench/statefulset.py [--replicas 100]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec  # noqa: E402
import nats  # noqa: E402

from kyb.hollow import HollowKubelet  # noqa: E402
from kyb.natsd import NatsServer, free_port  # noqa: E402
from kyb.store import Store  # noqa: E402
from schemas.apps import ReplicaSet, StatefulSet  # noqa: E402
from schemas.defaults import apply_defaults  # noqa: E402
from schemas.registry import all_kinds  # noqa: E402


def workload(kind: str, name: str, replicas: int, **spec) -> dict:
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "bench:1"}]}}, **spec}}


async def all_ready(store: Store, app: str, count: int, timeout: float) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        pods = [p for p in await store.list("pods", "default") if p.metadata.labels.get("app") == app]
        ready = [p for p in pods if p.status.phase == "Running"
                 and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions)]
        if len(ready) == count:
            return time.perf_counter()
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{app}: not all {count} pods Ready within {timeout}s")


async def measure(store: Store, kind: type, manifest: dict, count: int, timeout: float) -> float:
    obj = apply_defaults(msgspec.convert(manifest, kind))
    start = time.perf_counter()
    await store.create(obj)
    return await all_ready(store, manifest["metadata"]["name"], count, timeout) - start


async def run(args) -> None:
    from services.replication.service import Replication
    from services.statefulset.service import StatefulSetController

    with tempfile.TemporaryDirectory(prefix="kyb-bench-") as tmp:
        server = NatsServer(store_dir=Path(tmp) / "js", port=free_port(), log_file=Path(tmp) / "nats.log")
        server.start()
        try:
            nc = await nats.connect(server.url, pending_size=64 * 1024 * 1024)
            store = Store(nc.jetstream(timeout=30))
            await store.ensure_buckets(all_kinds())
            kubelet = HollowKubelet(store, nc, node="hollow-0", workers=8).start()
            await kubelet.wait_synced()
            rep = Replication(nc, store, workers=8)
            sts = StatefulSetController(nc, store, workers=4)
            await rep.start()
            await sts.start()
            stop = asyncio.Event()
            tasks = [asyncio.create_task(rep.controller.run(stop)), asyncio.create_task(sts.controller.run(stop))]
            n = args.replicas
            rs = await measure(store, ReplicaSet, workload("ReplicaSet", "rs", n), n, args.timeout)
            par = await measure(store, StatefulSet, workload("StatefulSet", "par", n, podManagementPolicy="Parallel"),
                                n, args.timeout)
            ordered = await measure(store, StatefulSet, workload("StatefulSet", "ord", n), n, args.timeout)
            print(f"ReplicaSet of {n} (baseline): all Ready in {rs:.2f}s")
            print(f"StatefulSet of {n}, Parallel: all Ready in {par:.2f}s ({par / rs:.1f}x the ReplicaSet)")
            print(f"StatefulSet of {n}, OrderedReady: all Ready in {ordered:.2f}s ({ordered / rs:.1f}x the "
                  f"ReplicaSet; {ordered / n * 1000:.0f} ms per ordinal)")
            stop.set()
            await asyncio.gather(*tasks)
            await sts.stop()
            await rep.stop()
            await kubelet.stop()
            await nc.close()
        finally:
            server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicas", type=int, default=100)
    p.add_argument("--timeout", type=float, default=300.0)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
