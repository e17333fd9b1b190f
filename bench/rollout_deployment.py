"""Rolling-update speed: a Deployment of 100 replicas (maxSurge 25%, maxUnavailable 25%) on hollow
nodes, rolled to a new template, against the ideal for that budget.

Pods go through the whole pipeline (deployment -> replication -> scheduler -> the hollow kubelet
of tests/cluster.py, reporting each bound pod Running and Ready at once), so the only waits are the
cluster's own.
Baseline in the same run: the per-wave pod start time, measured by starting one wave's worth
of pods (maxSurge + maxUnavailable) as a fresh Deployment until all are available. The ideal
rollout is waves x that time, with waves = ceil(replicas / (maxSurge + maxUnavailable)).
Prints both, and their ratio (target <= 1.5). Starts its own nats-server in a temp directory.

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

from kyb.client import ApiClient  # noqa: E402
from kyb.hollow import HollowKubelet  # noqa: E402
from kyb.natsd import NatsServer, free_port  # noqa: E402
from kyb.serve import run_services  # noqa: E402
from kyb.store import Store  # noqa: E402
from schemas.quantity import scaled_int_or_percent  # noqa: E402
from tests.cluster import workload_manifest  # noqa: E402

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

        surge = scaled_int_or_percent("25%", replicas, True)
        unavailable = scaled_int_or_percent("25%", replicas, False)
        wave = surge + unavailable
        waves = math.ceil(replicas / wave)

        # Baseline: one wave of pods started through the same pipeline (median of `rounds`).
        wave_times = []
        for i in range(rounds):
            t0 = time.monotonic()
            await api.apply(manifest(f"wave-{i}", wave, "bench:1"))
            wave_times.append(await wait_rolled_out(api, f"wave-{i}") - t0)
            await api.delete("deployments", "default", f"wave-{i}")
        wave_time = statistics.median(wave_times)

        await api.apply(manifest("web", replicas, "bench:1"))
        await wait_rolled_out(api, "web")
        rollouts = []
        for i in range(rounds):
            t0 = time.monotonic()
            await api.apply(manifest("web", replicas, f"bench:{i + 2}"))
            rollouts.append(await wait_rolled_out(api, "web") - t0)
        rollout = statistics.median(rollouts)

        ideal = waves * wave_time
        print(f"replicas={replicas} maxSurge={surge} maxUnavailable={unavailable} waves={waves}")
        print(f"per-wave pod start time (baseline, {wave} pods, median of {rounds}): {wave_time:.2f} s")
        print(f"ideal rollout (waves x wave time):          {ideal:.2f} s")
        print(f"measured rollout (median of {rounds}):          {rollout:.2f} s")
        print(f"ratio measured / ideal: {rollout / ideal:.2f} (target <= 1.5)")
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
