"""Memory of the whole control plane: ``kyb up`` (embedded nats-server plus every service in
one process), idle and then holding a small cluster's worth of objects, beside the floor any
Python process on the same libraries costs, measured in the same run.

    python bench/footprint.py [--configmaps 1000] [--replicas 20]

Starts ``kyb up --runtime process`` on a free port and a temporary data directory, waits for
the api, and reads the resident memory (RSS, and USS: what the process alone holds) of the
``kyb up`` process and its nats-server:
  1. idle, right after start;
  2. loaded: ``--configmaps`` ConfigMaps, a Service, and a Deployment of ``--replicas`` pods
     running ``sleep`` on the process runtime, all Running (the pods' processes run detached
     from ``kyb up``, as containers do from a kubelet, and are the workload: not counted).
The Deployment is deleted and its pods waited out before ``kyb up`` is stopped.
Baseline in the same run: a Python process that imports the same libraries and does nothing
(``import kyb.serve, services...``), the floor of any service written on this stack.
Target: the whole control plane within a few hundred MB (<= 300 MB RSS loaded).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kyb.client import ApiClient, connect  # noqa: E402
from kyb.natsd import free_port  # noqa: E402

TARGET_MB = 300
MB = 1024 * 1024

FLOOR = (
    "import sys, time\n"
    "import kyb.serve, kyb.store, kyb.informer, kyb.telemetry, kyb.cli.main\n"
    "import nats, msgspec, uvloop, docker, structlog, opentelemetry.sdk.trace\n"
    "print('ready', flush=True)\n"
    "time.sleep(3600)\n"
)


def control_plane(up: psutil.Process) -> list[psutil.Process]:
    """``kyb up`` and its nats-server; not the pods' processes."""
    return [up] + [c for c in up.children(recursive=True) if c.name().startswith("nats-server")]


def memory(procs: list[psutil.Process]) -> tuple[float, float]:
    """(RSS, USS) in MB, summed."""
    rss = uss = 0
    for p in procs:
        info = p.memory_full_info()
        rss += info.rss
        uss += info.uss
    return rss / MB, uss / MB


def describe(procs: list[psutil.Process]) -> str:
    return ", ".join(f"{p.name()} {p.memory_info().rss / MB:.0f}" for p in procs)


def configmap(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i}", "labels": {"app": "bench"}},
            "data": {"key": f"value-{i}", "config.yaml": "setting: " + "x" * 200}}


def deployment(replicas: int) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "main", "image": "host", "command": ["sleep", "3600"]}]}},
        },
    }


SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}


async def load(url: str, configmaps: int, replicas: int) -> None:
    nc = await connect(url)
    api = ApiClient(nc, timeout=30)
    try:
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> None:
            async with sem:
                await api.apply(configmap(i))

        await asyncio.gather(*(one(i) for i in range(configmaps)))
        await api.apply(SERVICE)
        await api.apply(deployment(replicas))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pods = await api.list("pods", "default", label_selector="app=web")
            if len(pods) == replicas and all((p.get("status") or {}).get("phase") == "Running" for p in pods):
                return
            await asyncio.sleep(0.5)
        raise SystemExit(f"the {replicas} pods were not all Running within 120 s")
    finally:
        await nc.close()


async def unload(url: str, replicas: int) -> None:
    """Delete the Deployment and wait for its pods to go: pods outlive `kyb up` (as containers
    outlive a kubelet restart), so the benchmark must not leave them behind."""
    nc = await connect(url)
    api = ApiClient(nc, timeout=30)
    try:
        await api.delete("deployments", "default", "web")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not await api.list("pods", "default", label_selector="app=web"):
                return
            await asyncio.sleep(0.5)
        raise SystemExit(f"the {replicas} pods were not gone within 120 s")
    finally:
        await nc.close()


async def answering(url: str, data: Path, timeout: float = 60) -> None:
    """Wait for the api; this client uses the admin credentials `kyb up` writes, as a user does."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    creds = data / "auth" / "admin.creds"
    while time.monotonic() < deadline:
        if creds.exists():
            os.environ["KYB_NATS_CREDS"] = str(creds)
        try:
            nc = await connect(url)
            try:
                await ApiClient(nc, timeout=2).get("namespaces", None, "default")
                return
            finally:
                await nc.close()
        except Exception as e:
            last = e
            await asyncio.sleep(0.3)
    raise SystemExit(f"kyb up did not answer: {last!r}")


def settle() -> None:
    time.sleep(3)  # let the informers and caches take in what just arrived before reading RSS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configmaps", type=int, default=1000)
    ap.add_argument("--replicas", type=int, default=20)
    args = ap.parse_args()

    floor_proc = subprocess.Popen([sys.executable, "-c", FLOOR], stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert floor_proc.stdout is not None and floor_proc.stdout.readline().strip() == "ready"
    floor_rss, floor_uss = memory([psutil.Process(floor_proc.pid)])
    floor_proc.kill()
    floor_proc.wait()

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        url = f"nats://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KYB_NATS_")}
        up = subprocess.Popen(
            [sys.executable, "-m", "kyb.cli.main", "up", "--data-dir", tmp, "--nats-port", str(port),
             "--runtime", "process", "--network", "loopback", "--apiserver-port", str(free_port())],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        threading.Thread(target=lambda: [None for _ in up.stdout or ()], daemon=True).start()
        try:
            asyncio.run(answering(url, Path(tmp)))
            settle()
            proc = psutil.Process(up.pid)
            idle_rss, idle_uss = memory(control_plane(proc))
            idle_parts = describe(control_plane(proc))
            asyncio.run(load(url, args.configmaps, args.replicas))
            settle()
            loaded_rss, loaded_uss = memory(control_plane(proc))
            loaded_parts = describe(control_plane(proc))
            asyncio.run(unload(url, args.replicas))
        finally:
            up.send_signal(signal.SIGINT)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait()

    print(f"kyb up, idle              : RSS {idle_rss:6.0f} MB  USS {idle_uss:6.0f} MB  ({idle_parts})")
    print(f"kyb up, {args.configmaps} ConfigMaps + {args.replicas} pods: RSS {loaded_rss:6.0f} MB  "
          f"USS {loaded_uss:6.0f} MB  ({loaded_parts})")
    print(f"baseline: one idle Python process on the same libraries: RSS {floor_rss:.0f} MB  USS {floor_uss:.0f} MB")
    print(f"loaded control plane = {loaded_rss / floor_rss:.1f}x that floor; target <= {TARGET_MB} MB RSS: "
          f"{'met' if loaded_rss <= TARGET_MB else 'MISSED'}")


if __name__ == "__main__":
    main()
