"""Rolling-update speed: a Deployment of 100 replicas (maxSurge 25%, maxUnavailable 25%) on hollow
nodes, rolled to a new template, against the ideal for that budget.

Pods go through the whole pipeline (deployment -> replication -> scheduler -> the hollow kubelet
of tests/cluster.py, reporting each bound pod Running and Ready at once), so the only waits are the
cluster's own.
Baseline in the same run: the time to start n pods through the same pipeline, measured by
starting n pods as a fresh Deployment until all are available, for each step size n of the
ideal. The ideal (bench/rolling_ideal.py) plays Kubernetes' rolling-update algorithm with instant
controllers: its dependent steps (each scale-down waits for the new pods of the step before to
be Ready) each cost the measured start time of their pods. Printed beside the older estimate,
waves x the start time of one wave, waves = ceil(replicas / (maxSurge + maxUnavailable)), and
the ratio measured / ideal (target <= 1.25). Starts its own nats-server in a temp directory.

    python bench/rollout_deployment.py [--replicas 100] [--nodes 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nats  # noqa: E402
from hollow import HollowNodes  # noqa: E402
from rolling_ideal import fenceposts, ideal_seconds, rolling_steps  # noqa: E402

from kyb.client import ApiClient  # noqa: E402
from kyb.hollow import HollowKubelet  # noqa: E402
from kyb.natsd import NatsServer, free_port  # noqa: E402
from kyb.serve import run_services  # noqa: E402
from kyb.store import Store  # noqa: E402
from tests.cluster import workload_manifest  # noqa: E402

TARGET = 1.25
OPTIONS = {"configure_logging": True, "log_level": "WARNING", "lease_seconds": 2, "renew_seconds": 0.5,
           "retry_seconds": 0.2, "replication_workers": 8, "deployment_workers": 4}


def manifest(name: str, replicas: int, image: str) -> dict:
    return workload_manifest(
        "Deployment", name, replicas, image, container={"resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}},
        strategy={"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
    )


async def wait_rolled_out(api: ApiClient, name: str, timeout: float = 300) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        d = await api.get("deployments", "default", name)
        s = d.get("status") or {}
        r = d["spec"]["replicas"]
        if (s.get("observedGeneration") == d["metadata"]["generation"]
                and s.get("updatedReplicas") == s.get("availableReplicas") == s.get("replicas") == r):
            return time.monotonic()
        await asyncio.sleep(0.02)
    raise TimeoutError(f"deployment {name} did not finish within {timeout}s")


async def bench(url: str, replicas: int, nodes: int, rounds: int) -> None:
    stop = asyncio.Event()
    services = asyncio.create_task(run_services(["api", "scheduler", "replication", "deployment"], url, OPTIONS, stop))
    nc = await nats.connect(url)
    store = Store(nc.jetstream())
    api = ApiClient(nc, timeout=10)
    kubelet = HollowKubelet(store, nc, workers=64)  # the kubelet of every node: owns each bound pod
    try:
        for _ in range(200):
            with contextlib.suppress(Exception):
                await api.get("namespaces", None, "default")
                break
            await asyncio.sleep(0.05)
        await HollowNodes(count=nodes).register(store)
        await kubelet.start().wait_synced(30)

        surge, unavailable = fenceposts(replicas, "25%", "25%")
        wave = surge + unavailable
        waves = math.ceil(replicas / wave)
        steps = rolling_steps(replicas, surge, unavailable)

        # Baseline: n pods started through the same pipeline (median of `rounds`), for each n
        # the ideal's steps and the older estimate's waves start.
        start_times: dict[int, float] = {}
        for n in sorted({*steps, wave}):
            times = []
            for i in range(rounds):
                name = f"start-{n}-{i}"
                t0 = time.monotonic()
                await api.apply(manifest(name, n, "bench:1"))
                times.append(await wait_rolled_out(api, name) - t0)
                await api.delete("deployments", "default", name)
            start_times[n] = statistics.median(times)

        await api.apply(manifest("web", replicas, "bench:1"))
        await wait_rolled_out(api, "web")
        rollouts = []
        for i in range(rounds):
            t0 = time.monotonic()
            await api.apply(manifest("web", replicas, f"bench:{i + 2}"))
            rollouts.append(await wait_rolled_out(api, "web") - t0)
        rollout = statistics.median(rollouts)

        ideal = ideal_seconds(steps, start_times.__getitem__)
        older = waves * start_times[wave]
        print(f"replicas={replicas} maxSurge={surge} maxUnavailable={unavailable}")
        for n, t in sorted(start_times.items()):
            print(f"start time of {n} pods (baseline, median of {rounds}): {t:.2f} s")
        print(f"ideal (Kubernetes' rolling steps {'+'.join(map(str, steps))}, instant controllers): {ideal:.2f} s")
        print(f"older estimate (waves {waves} x start time of {wave} pods):            {older:.2f} s")
        print(f"measured rollout (median of {rounds}, {' '.join(f'{r:.2f}' for r in rollouts)}): {rollout:.2f} s")
        print(f"ratio measured / ideal: {rollout / ideal:.2f} (target <= {TARGET}: "
              f"{'met' if rollout / ideal <= TARGET else 'MISSED'}); measured / older estimate: {rollout / older:.2f}")
    finally:
        await kubelet.stop()
        stop.set()
        await asyncio.wait_for(services, 30)
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each; medians are compared")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(store_dir=Path(tmp) / "js", port=free_port(), log_file=Path(tmp) / "nats.log")
        server.start()
        try:
            asyncio.run(bench(server.url, args.replicas, args.nodes, args.rounds))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
