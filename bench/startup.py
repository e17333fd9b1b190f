"""Pod startup latency on the Docker runtime, beside plain ``docker run`` in the same run.

Starts its own nats-server (free port, temporary store), then ``kyb serve api``,
``kyb serve scheduler`` and ``kyb serve kubelet --runtime docker`` as separate processes (as a
deployment runs them), builds the local busybox image, and measures:

(a) one pod: ``kyb.api.apply`` of a pod until a KV watch on its key shows phase Running;
    p50 and p99 over ``--runs`` runs. Baseline: one ``docker run -d`` of the same image and
    command with its port published on a 127.x address, until ``docker inspect`` says running.
(b) a burst: ``--burst`` pods applied at once until all are Running. Baseline: as many
    ``docker run -d`` in parallel until all are running.

Prints the figures and the kyb/docker ratios. A pod is a sandbox container holding the network
plus the app container, so kyb starts two containers where the baseline starts one; a second
baseline starts those two by hand (``docker run`` of a holder publishing the port, then of the
app with ``--network container:<holder>``), the least a pod of two containers costs here.

    python bench/startup.py [--runs 20] [--burst 50] [--profile-kubelet out.svg]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import docker  # noqa: E402
import msgspec  # noqa: E402
import nats  # noqa: E402

from kyb.natsd import NatsServer, free_port  # noqa: E402
from services.kubelet.runtime.base import LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID  # noqa: E402
from tests.images import build_busybox_image  # noqa: E402

NODE = "bench-startup"
POD_CIDR = "127.81.0.0/16"
BASELINE_NET = "127.82"
COMMAND = ["sleep", "3600"]
PORT = 8080
BASELINE_LABEL = "io.kybernetes.bench=startup"


class _Phase(msgspec.Struct, frozen=True):
    phase: str = ""


class _Meta(msgspec.Struct, frozen=True):
    uid: str = ""


class _PodView(msgspec.Struct):
    metadata: _Meta = _Meta()
    status: _Phase = _Phase()


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def pod_manifest(name: str, image: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"bench": "startup"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "app",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": COMMAND,
                    "ports": [{"containerPort": PORT}],
                }
            ],
        },
    }


# -- the cluster ------------------------------------------------------------------------------------


def kyb_serve(name: str, url: str, log: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "kyb.cli.main", "serve", name, "--nats", url, *extra]
    env = {**os.environ, "KYB_LOG_LEVEL": os.environ.get("KYB_LOG_LEVEL", "WARNING")}
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                            cwd=Path(__file__).resolve().parent.parent, start_new_session=True)


async def wait_ready(nc, kv_nodes, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with contextlib.suppress(Exception):
            await nc.request("kyb.api.get", json.dumps({"kind": "nodes", "name": NODE}).encode(), timeout=1)
            entry = await kv_nodes.get(f"_.{NODE}")
            node = json.loads(entry.value)
            if any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"]):
                return
        await asyncio.sleep(0.2)
    raise SystemExit("the cluster did not come up (see the logs in the bench directory)")


async def apply(nc, manifest: dict) -> None:
    msg = await nc.request("kyb.api.apply", json.dumps(manifest).encode(), timeout=10)
    if msg.headers is None or msg.headers.get("Kyb-Status") not in ("200", "201"):
        raise RuntimeError(f"apply failed: {msg.data[:300]!r}")


async def delete_pods(nc, kv_pods, names: list[str]) -> None:
    for name in names:
        q = {"kind": "pods", "namespace": "default", "name": name, "gracePeriodSeconds": 0}
        with contextlib.suppress(Exception):
            await nc.request("kyb.api.delete", json.dumps(q).encode(), timeout=10)
    end = time.monotonic() + 60
    for name in names:
        while time.monotonic() < end:
            try:
                await kv_pods.get(f"default.{name}")
            except Exception:
                break
            await asyncio.sleep(0.1)


async def until_running(kv_pods, names: set[str]) -> dict[str, float]:
    """Watch the pods bucket until every pod in ``names`` is Running; returns when each was."""
    seen: dict[str, float] = {}
    watcher = await kv_pods.watch("default.*", include_history=False)
    try:
        while len(seen) < len(names):
            entry = await watcher.updates(timeout=120)
            if entry is None or entry.value is None or entry.operation is not None:
                continue
            name = entry.key.split(".", 1)[1]
            if name in names and name not in seen:
                if msgspec.json.decode(entry.value, type=_PodView).status.phase == "Running":
                    seen[name] = time.perf_counter()
    finally:
        await watcher.stop()
    return seen


async def kyb_single(nc, kv_pods, image: str, runs: int) -> list[float]:
    out = []
    for i in range(runs):
        name = f"single-{i:03d}"
        watch = asyncio.create_task(until_running(kv_pods, {name}))
        await asyncio.sleep(0.05)  # the watcher is subscribed before the apply
        t0 = time.perf_counter()
        await apply(nc, pod_manifest(name, image))
        done = await watch
        out.append(done[name] - t0)
        await delete_pods(nc, kv_pods, [name])
    return out


async def kyb_burst(nc, kv_pods, image: str, n: int) -> float:
    names = [f"burst-{i:03d}" for i in range(n)]
    watch = asyncio.create_task(until_running(kv_pods, set(names)))
    await asyncio.sleep(0.05)
    t0 = time.perf_counter()
    await asyncio.gather(*(apply(nc, pod_manifest(name, image)) for name in names))
    done = await watch
    elapsed = max(done.values()) - t0
    await delete_pods(nc, kv_pods, names)
    return elapsed


# -- plain docker -----------------------------------------------------------------------------------


async def docker_run(image: str, i: int) -> float:
    """``docker run -d`` with the port on a 127.x address, then ``docker inspect`` until running."""
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "docker", "run", "-d", "--label", BASELINE_LABEL, "-p", f"{BASELINE_NET}.{i // 250}.{i % 250 + 1}:{PORT}:{PORT}",
        image, *COMMAND, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"docker run failed: {err.decode().strip()}")
    cid = out.decode().strip()
    while True:
        proc = await asyncio.create_subprocess_exec(
            "docker", "inspect", "-f", "{{.State.Running}}", cid, stdout=asyncio.subprocess.PIPE
        )
        state, _ = await proc.communicate()
        if state.decode().strip() == "true":
            return time.perf_counter() - t0
        await asyncio.sleep(0.01)


async def docker_pod_run(image: str, i: int) -> float:
    """A pod's two containers by hand: ``docker run -d`` of a holder with the port on a 127.x
    address (the sandbox), then ``docker run -d --network container:<holder>`` of the app,
    until ``docker inspect`` says the app runs."""
    t0 = time.perf_counter()
    holder = await _docker("run", "-d", "--label", BASELINE_LABEL,
                           "-p", f"{BASELINE_NET}.{i // 250}.{i % 250 + 1}:{PORT}:{PORT}", image, "sleep", "3600")
    cid = await _docker("run", "-d", "--label", BASELINE_LABEL, "--network", f"container:{holder}", image, *COMMAND)
    while await _docker("inspect", "-f", "{{.State.Running}}", cid) != "true":
        await asyncio.sleep(0.01)
    return time.perf_counter() - t0


async def _docker(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec("docker", *argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"docker {argv[0]} failed: {err.decode().strip()}")
    return out.decode().strip()


def remove_baseline(client) -> None:
    for c in client.containers.list(all=True, filters={"label": BASELINE_LABEL}):
        with contextlib.suppress(Exception):
            c.remove(force=True)


async def docker_single(client, image: str, runs: int, run=docker_run) -> list[float]:
    out = []
    for i in range(runs):
        out.append(await run(image, i))
        await asyncio.to_thread(remove_baseline, client)
    return out


async def docker_burst(client, image: str, n: int) -> float:
    t0 = time.perf_counter()
    await asyncio.gather(*(docker_run(image, i) for i in range(n)))
    elapsed = time.perf_counter() - t0
    await asyncio.to_thread(remove_baseline, client)
    return elapsed


# -- main -------------------------------------------------------------------------------------------


def remove_pod_containers(client) -> None:
    for c in client.containers.list(all=True, filters={"label": LABEL_POD_UID}):
        labels = c.labels or {}
        if labels.get(LABEL_POD_NAMESPACE) == "default" and (
            labels.get(LABEL_POD_NAME, "").startswith(("single-", "burst-"))
        ):
            with contextlib.suppress(Exception):
                c.remove(force=True)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20, help="single-pod runs")
    ap.add_argument("--burst", type=int, default=50, help="pods applied at once")
    ap.add_argument("--profile-kubelet", default=None, help="record the kubelet with py-spy into this SVG")
    ap.add_argument("--keep", default=None, help="keep logs in this directory")
    args = ap.parse_args()
    if shutil.which("docker") is None:
        raise SystemExit("the docker CLI is needed for the baseline")
    client = docker.from_env()
    image = build_busybox_image(client)
    with tempfile.TemporaryDirectory(prefix="kyb-bench-startup-") as tmp:
        base = Path(args.keep or tmp)
        base.mkdir(parents=True, exist_ok=True)
        server = NatsServer(store_dir=base / "js", port=free_port(), log_file=base / "nats.log")
        server.start()
        procs: list[subprocess.Popen] = []
        spy = None
        try:
            url = server.url
            procs.append(kyb_serve("api", url, base / "api.log"))
            procs.append(kyb_serve("scheduler", url, base / "scheduler.log"))
            procs.append(kyb_serve(
                "kubelet", url, base / "kubelet.log", "--node-name", NODE, "--runtime", "docker",
                "--pod-cidr", POD_CIDR, "--state-dir", str(base / "kubelet"), "--relist", "0.5",
            ))
            nc = await nats.connect(url)
            js = nc.jetstream()
            deadline = time.monotonic() + 30
            while True:
                try:
                    kv_nodes = await js.key_value("kyb-nodes")
                    kv_pods = await js.key_value("kyb-pods")
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            await wait_ready(nc, kv_nodes)
            if args.profile_kubelet:
                pyspy = Path(sys.executable).with_name("py-spy")
                spy = subprocess.Popen([str(pyspy), "record", "-o", args.profile_kubelet, "-p", str(procs[-1].pid),
                                        "--subprocesses", "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # warm-up: one pod through the whole path, one plain container
            await kyb_single(nc, kv_pods, image, 1)
            await docker_single(client, image, 1)

            k_single = await kyb_single(nc, kv_pods, image, args.runs)
            d_single = await docker_single(client, image, args.runs)
            d_pod = await docker_single(client, image, args.runs, docker_pod_run)
            k_burst = await kyb_burst(nc, kv_pods, image, args.burst)
            d_burst = await docker_burst(client, image, args.burst)
            await nc.close()
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                with contextlib.suppress(Exception):
                    spy.wait(30)
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
            server.stop()
            remove_baseline(client)
            remove_pod_containers(client)

    kp50, kp99 = percentile(k_single, 50), percentile(k_single, 99)
    dp50, dp99 = percentile(d_single, 50), percentile(d_single, 99)
    print(f"(a) one pod apply -> Running, {args.runs} runs")
    print(f"    kyb          p50 {kp50 * 1000:7.0f} ms   p99 {kp99 * 1000:7.0f} ms   (target p99 <= 1000 ms)")
    print(f"    docker run   p50 {dp50 * 1000:7.0f} ms   p99 {dp99 * 1000:7.0f} ms")
    print(f"    ratio        p50 {kp50 / dp50:7.2f}x     p99 {kp99 / dp99:7.2f}x   (target p50 <= 1.2x)")
    pp50, pp99 = percentile(d_pod, 50), percentile(d_pod, 99)
    print("    two containers as a pod has them, by hand (docker run of a holder, then of the app in its network)")
    print(f"                 p50 {pp50 * 1000:7.0f} ms   p99 {pp99 * 1000:7.0f} ms   kyb / this: "
          f"p50 {kp50 / pp50:.2f}x  p99 {kp99 / pp99:.2f}x")
    print(f"(b) {args.burst} pods at once -> all Running")
    print(f"    kyb          {k_burst:6.2f} s")
    print(f"    docker run   {d_burst:6.2f} s   ({args.burst} in parallel)")
    print(f"    ratio        {k_burst / d_burst:6.2f}x   (target <= 1.5x)")


if __name__ == "__main__":
    asyncio.run(main())
