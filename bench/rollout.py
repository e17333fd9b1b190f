"""ReplicaSet rollout from zero on hollow nodes: time until every pod is bound and Running.

Figure: seconds from the ReplicaSet's create to the last of its ``--replicas`` pods stored
with a nodeName and phase Running (seen through a KV watch). The replication controller and
the scheduler each run in their own process, as in a deployment; a third process plays the
hollow kubelets (bound pods are reported Running and Ready at once, like kubemark). Target:
1,000 replicas in at most 3 s. Baseline in the same run: raw KV creates ("must not exist"
compare-and-set) of the same number of pods, no controller in the way.

    python bench/rollout.py [--nodes 100] [--replicas 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import msgspec  # noqa: E402
import nats  # noqa: E402
from hollow import HollowNodes  # noqa: E402
from scheduler import scheduler_process  # noqa: E402

from kyb.natsd import NatsServer, free_port  # noqa: E402
from kyb.store import Store, encode  # noqa: E402
from schemas.apps import ReplicaSet  # noqa: E402
from schemas.pod import Pod  # noqa: E402
from schemas.registry import all_kinds  # noqa: E402

TARGET_SECONDS = 3.0
CONCURRENCY = 1024


def replicaset(replicas: int) -> ReplicaSet:
    return msgspec.convert(
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "rollout", "namespace": "default"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "rollout"}},
                "template": {
                    "metadata": {"labels": {"app": "rollout"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "bench:1",
                                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                            }
                        ]
                    },
                },
            },
        },
        ReplicaSet,
    )


def replication_process(url: str, ready) -> None:
    """The replication controller alone (no leader election: one replica) until terminated."""
    import signal

    import uvloop

    from services.replication.service import Replication

    async def main() -> None:
        nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
        rep = Replication(nc, Store(nc.jetstream(timeout=30)), workers=8)
        await rep.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        ready.set()
        await rep.controller.run(stop)
        # The measurement is over: end the process; its connection and consumers go with it.

    uvloop.run(main())
    os._exit(0)


def kubelet_process(url: str, ready) -> None:
    """Hollow kubelets: every bound pod is reported Running and Ready with one CAS write."""
    import signal

    import uvloop

    from kyb.informer import Informer
    from schemas.pod import PodCondition

    async def main() -> None:
        nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
        store = Store(nc.jetstream(timeout=30))
        pods = Informer(nc, "Pod")
        limit = asyncio.Semaphore(CONCURRENCY)
        tasks: set[asyncio.Task] = set()

        async def report(pod: Pod) -> None:
            async with limit:
                status = msgspec.structs.replace(
                    pod.status, phase="Running", conditions=[PodCondition(type="Ready", status="True")]
                )
                try:
                    await store.update(msgspec.structs.replace(pod, status=status), current=pod)
                except Exception:
                    pass  # a newer revision comes through the informer again

        def on_pod(event, new, old, headers) -> None:
            if (
                new is not None
                and new.spec.nodeName
                and new.status.phase == "Pending"
                and not new.metadata.deletionTimestamp
            ):
                t = asyncio.create_task(report(new))
                tasks.add(t)
                t.add_done_callback(tasks.discard)

        pods.add_handler(on_pod)
        await pods.start()
        await pods.wait_synced(60)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        ready.set()
        await stop.wait()

    uvloop.run(main())
    os._exit(0)


async def watch_running(js, total: int, done: asyncio.Event, out: dict) -> None:
    kv = await js.key_value("kyb-pods")
    watcher = await kv.watch("default.>", include_history=False)
    running: set[str] = set()
    async for entry in watcher:
        if entry is None or not entry.value or not entry.key.startswith("default.rollout-"):
            continue
        if b'"nodeName"' in entry.value and b'"phase":"Running"' in entry.value:
            running.add(entry.key)
            if len(running) == total:
                out["done_at"] = time.perf_counter()
                done.set()
                break
    await watcher.stop()


async def baseline(js, template: Pod, count: int) -> float:
    """Seconds for raw KV creates of ``count`` pods (expected last sequence 0), no controller."""
    start = time.perf_counter()
    for i in range(0, count, CONCURRENCY):
        await asyncio.gather(
            *(
                js.publish(
                    f"$KV.kyb-pods.baseline.rollout-{j:05d}",
                    encode(
                        msgspec.structs.replace(
                            template,
                            metadata=msgspec.structs.replace(
                                template.metadata,
                                name=f"rollout-{j:05d}",
                                namespace="baseline",
                                generateName=None,
                            ),
                        )
                    ),
                    headers={"Nats-Expected-Last-Subject-Sequence": "0"},
                )
                for j in range(i, min(i + CONCURRENCY, count))
            )
        )
    return time.perf_counter() - start


def stop_all(procs: list) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        t = time.perf_counter()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
        print(f"  {proc.name} stopped in {time.perf_counter() - t:.1f}s", file=sys.stderr)


async def run(args) -> None:
    from services.replication.reconcile import Owner, pod_from_template

    with tempfile.TemporaryDirectory(prefix="kyb-bench-") as tmp:
        server = NatsServer(store_dir=Path(tmp) / "js", port=free_port(), log_file=Path(tmp) / "nats.log")
        server.start()
        procs: list = []
        try:
            nc = await nats.connect(server.url, pending_size=64 * 1024 * 1024)
            js = nc.jetstream(timeout=30)
            store = Store(js)
            await store.ensure_buckets(all_kinds())
            await HollowNodes(args.nodes).register(store)
            ctx = mp.get_context("spawn")
            for target, extra in (
                (scheduler_process, (None, False)),
                (replication_process, ()),
                (kubelet_process, ()),
            ):
                ready = ctx.Event()
                proc = ctx.Process(target=target, args=(server.url, ready, *extra), daemon=True)
                proc.start()
                procs.append(proc)
                await asyncio.get_running_loop().run_in_executor(None, ready.wait, 120)

            done = asyncio.Event()
            out: dict = {}
            watcher = asyncio.create_task(watch_running(js, args.replicas, done, out))
            await asyncio.sleep(0.2)  # the watch is established
            start = time.perf_counter()
            rs = await store.create(replicaset(args.replicas))
            await asyncio.wait_for(done.wait(), timeout=args.timeout)
            await watcher
            elapsed = out["done_at"] - start
            verdict = "ok" if elapsed <= TARGET_SECONDS else "over target"
            print(
                f"ReplicaSet of {args.replicas} on {args.nodes} hollow nodes: all bound and Running in "
                f"{elapsed:.2f}s (target <= {TARGET_SECONDS:.0f}s: {verdict})"
            )
            stop_all(procs)
            procs = []
            base = await baseline(js, pod_from_template(Owner.of(rs), None), args.replicas)  # type: ignore[arg-type]
            print(f"baseline: raw KV creates of {args.replicas} pods: {base:.2f}s")
            print(f"ratio rollout/baseline: {elapsed / base:.1f}")
            await nc.close()
        finally:
            stop_all(procs)
            server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--replicas", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args()
    import uvloop

    uvloop.run(run(args))


if __name__ == "__main__":
    main()
