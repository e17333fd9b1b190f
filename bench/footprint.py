"""Memory of the whole control plane: ``kyb up`` (embedded nats-server plus every service in
one process), idle, holding a small cluster's worth of objects, then 10,000 objects, beside the
floor any Python process on the same libraries costs, measured in the same run.

    python bench/footprint.py [--configmaps 1000] [--replicas 20] [--scale-pods 5000]
                              [--scale-configmaps 5000] [--per-component]

Starts ``kyb up --runtime process`` on a free port and a temporary data directory, waits for
the api, and reads the resident memory (RSS, and USS: what the process alone holds) of the
``kyb up`` process and its nats-server:
  1. idle, right after start;
  2. loaded: ``--configmaps`` ConfigMaps, a Service, and a Deployment of ``--replicas`` pods
     running ``sleep`` on the process runtime, all Running (the pods' processes run detached
     from ``kyb up``, as containers do from a kubelet, and are the workload: not counted).
  3. at scale: ``--scale-configmaps`` ConfigMaps in all and a Deployment of ``--scale-pods``
     pods on hollow nodes (``kyb hollow-nodes``, in its own process: the nodes' kubelet, not the
     control plane), all Running. Bytes per cached object: the control plane's growth from
     idle over the objects it holds; and, in this process, what one informer's cache of the
     Pods and of the ConfigMaps takes (tracemalloc), over the objects it holds.
Per component (``--per-component``): ``kyb up`` runs every service in one process, so a
service's own share cannot be read from its RSS there. Instead each controller is started
alone (``kyb serve NAME``) against the loaded cluster, as a standby replica: it syncs its
informers like the one in ``kyb up`` but leaves the work to the leader; its RSS once it stops
growing is that component's cost as a process of its own (its caches and the Python floor).
The Deployments are deleted and their pods waited out before ``kyb up`` is stopped.
Baseline in the same run: a Python process that imports the same libraries and does nothing
(``import kyb.serve, services...``), the floor of any service written on this stack.
Targets: <= 300 MB RSS loaded; <= 200 MB RSS with the 10,000 objects.
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
import tracemalloc
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kyb.client import ApiClient, connect  # noqa: E402
from kyb.hollow import HOLLOW_TAINT  # noqa: E402
from kyb.informer import Informer  # noqa: E402
from kyb.natsd import free_port  # noqa: E402

TARGET_MB = 300
SCALE_TARGET_MB = 200
# The controllers started alone for the per-component figures: those that only read and write
# the store (node agents, the DNS server and the HTTP API bind ports or touch the host).
COMPONENTS = ("api", "scheduler", "replication", "deployment", "job", "cronjob", "daemonset", "statefulset",
              "disruption", "gc", "endpoints", "nodelifecycle", "nodeipam", "hpa", "volumebinder", "ingress")
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


def hollow_deployment(replicas: int) -> dict:
    tolerate = {"key": HOLLOW_TAINT["key"], "operator": "Exists", "effect": HOLLOW_TAINT["effect"]}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hollow"},
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": {"app": "hollow"}},
            "template": {"metadata": {"labels": {"app": "hollow"}},
                         "spec": {"nodeSelector": {"type": "hollow"}, "tolerations": [tolerate],
                                  "containers": [{"name": "main", "image": "bench:1",
                                                  "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}},
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


async def apply_configmaps(api: ApiClient, first: int, last: int) -> None:
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with sem:
            await api.apply(configmap(i))

    await asyncio.gather(*(one(i) for i in range(first, last)))


def hollow_pods(informer: Informer) -> tuple[int, int]:
    """(pods, Running pods) of the hollow Deployment, from a watch cache: listing 5,000 pods
    through the api every few seconds would load the control plane being measured."""
    pods = [p for p in informer.list("default") if p.metadata.labels.get("app") == "hollow"]
    return len(pods), sum(p.status.phase == "Running" for p in pods)


async def load_scale(url: str, configmaps_from: int, configmaps: int, pods: int, nodes: int) -> None:
    nc = await connect(url)
    api = ApiClient(nc, timeout=60)
    watch = Informer(nc, "Pod")
    try:
        deadline = time.monotonic() + 60
        while len(await api.list("nodes", None, label_selector="type=hollow")) < nodes:
            if time.monotonic() > deadline:
                raise SystemExit(f"the {nodes} hollow nodes did not register within 60 s")
            await asyncio.sleep(0.5)
        await apply_configmaps(api, configmaps_from, configmaps)
        await watch.start()
        await api.apply(hollow_deployment(pods))
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if hollow_pods(watch) == (pods, pods):
                return
            await asyncio.sleep(1)
        raise SystemExit(f"the {pods} hollow pods were not all Running within 600 s: {hollow_pods(watch)}")
    finally:
        await watch.stop()
        await nc.close()


async def unload_scale(url: str) -> None:
    nc = await connect(url)
    api = ApiClient(nc, timeout=60)
    watch = Informer(nc, "Pod")
    try:
        await watch.start()
        await api.delete("deployments", "default", "hollow")
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if hollow_pods(watch)[0] == 0:
                return
            await asyncio.sleep(1)
        raise SystemExit("the hollow pods were not gone within 600 s")
    finally:
        await watch.stop()
        await nc.close()


async def cache_bytes(url: str, kind: str) -> tuple[int, int]:
    """(objects, bytes) one informer of ``kind`` holds once synced, traced in this process."""
    nc = await connect(url)
    try:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        informer = Informer(nc, kind)
        await informer.start()
        await informer.wait_synced(120)
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        count = len(informer)
        await informer.stop()
        return count, held
    finally:
        await nc.close()


def steady_rss(proc: subprocess.Popen, timeout: float = 60) -> float:
    """The RSS of ``proc`` (MB) once it has not grown for 3 s."""
    p = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    last, since = 0.0, time.monotonic()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{' '.join(proc.args)} ended with {proc.returncode}")
        rss = p.memory_info().rss / MB
        if rss > last + 0.5:
            last, since = rss, time.monotonic()
        elif time.monotonic() - since >= 3:
            return last
        time.sleep(0.5)
    return last


def system_env(data: Path) -> dict[str, str]:
    """The environment of a process that acts as part of the cluster (hollow nodes, a service):
    the system credentials ``kyb up`` wrote, as its own services use."""
    return {**os.environ, "KYB_NATS_CREDS": str(data / "auth" / "system.creds")}


def per_component(url: str, env: dict[str, str]) -> dict[str, float]:
    """Each of COMPONENTS started alone against the loaded cluster (a standby replica)."""
    out = {}
    for name in COMPONENTS:
        proc = subprocess.Popen([sys.executable, "-m", "kyb.cli.main", "--nats", url, "serve", name],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            out[name] = steady_rss(proc)
        finally:
            interrupt(proc, 30)
    return out


def interrupt(proc: subprocess.Popen, timeout: float) -> None:
    """Stop ``proc`` as Ctrl-C does; killed when it has not ended within ``timeout`` seconds."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
    ap.add_argument("--scale-configmaps", type=int, default=5000, help="ConfigMaps in all at the scale point")
    ap.add_argument("--scale-pods", type=int, default=5000, help="pods on hollow nodes at the scale point (0: skip)")
    ap.add_argument("--per-component", action="store_true", help="also start each controller alone (slow)")
    args = ap.parse_args()
    nodes = -(-args.scale_pods // 100)  # 110 pods fit a hollow node; leave some room

    floor_proc = subprocess.Popen([sys.executable, "-c", FLOOR], stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert floor_proc.stdout is not None and floor_proc.stdout.readline().strip() == "ready"
    floor_rss, floor_uss = memory([psutil.Process(floor_proc.pid)])
    floor_proc.kill()
    floor_proc.wait()

    hollow: subprocess.Popen | None = None
    components: dict[str, float] = {}
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
            if args.scale_pods:
                hollow_log = Path(tmp) / "hollow.log"
                with hollow_log.open("w") as out:
                    hollow = subprocess.Popen([sys.executable, "-m", "kyb.cli.main", "--nats", url, "hollow-nodes",
                                               "--count", str(nodes)], stdout=out, stderr=subprocess.STDOUT,
                                              env=system_env(Path(tmp)))
                started = time.monotonic()
                try:
                    asyncio.run(load_scale(url, args.configmaps, args.scale_configmaps, args.scale_pods, nodes))
                except SystemExit:
                    print(hollow_log.read_text()[-3000:], file=sys.stderr)
                    raise
                loaded_in = time.monotonic() - started
                settle()
                scale_rss, scale_uss = memory(control_plane(proc))
                scale_parts = describe(control_plane(proc))
                hollow_rss = psutil.Process(hollow.pid).memory_info().rss / MB
                pod_cache = asyncio.run(cache_bytes(url, "Pod"))
                cm_cache = asyncio.run(cache_bytes(url, "ConfigMap"))
                if args.per_component:
                    components = per_component(url, system_env(Path(tmp)))
                asyncio.run(unload_scale(url))
        finally:
            if hollow is not None:
                interrupt(hollow, 60)
            interrupt(up, 60)

    print(f"kyb up, idle              : RSS {idle_rss:6.0f} MB  USS {idle_uss:6.0f} MB  ({idle_parts})")
    print(f"kyb up, {args.configmaps} ConfigMaps + {args.replicas} pods: RSS {loaded_rss:6.0f} MB  "
          f"USS {loaded_uss:6.0f} MB  ({loaded_parts})")
    if args.scale_pods:
        objects = args.scale_configmaps + args.scale_pods
        print(f"kyb up, {args.scale_configmaps} ConfigMaps + {args.scale_pods} pods on {nodes} hollow nodes "
              f"(loaded in {loaded_in:.0f} s): RSS {scale_rss:6.0f} MB  USS {scale_uss:6.0f} MB  ({scale_parts}); "
              f"the hollow nodes' own process: RSS {hollow_rss:.0f} MB, not counted")
        print(f"bytes per cached object: control plane growth from idle {(scale_rss - idle_rss) * MB / objects:,.0f} "
              f"over {objects:,} objects; one informer's cache: Pod {pod_cache[1] / max(pod_cache[0], 1):,.0f} "
              f"({pod_cache[0]:,} pods), ConfigMap {cm_cache[1] / max(cm_cache[0], 1):,.0f} ({cm_cache[0]:,})")
    for name, rss in components.items():
        print(f"component alone (standby, kyb serve {name}): RSS {rss:6.0f} MB ({rss - floor_rss:+.0f} over the floor)")
    print(f"baseline: one idle Python process on the same libraries: RSS {floor_rss:.0f} MB  USS {floor_uss:.0f} MB")
    print(f"loaded control plane = {loaded_rss / floor_rss:.1f}x that floor; target <= {TARGET_MB} MB RSS: "
          f"{'met' if loaded_rss <= TARGET_MB else 'MISSED'}")
    if args.scale_pods:
        print(f"10,000-object control plane = {scale_rss / floor_rss:.1f}x that floor; target <= {SCALE_TARGET_MB} MB "
              f"RSS: {'met' if scale_rss <= SCALE_TARGET_MB else 'MISSED'}")


if __name__ == "__main__":
    main()
