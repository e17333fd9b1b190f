"""The kubelet on a real nats-server with the api beside it, once per runtime (Docker and host
processes): pods run, exit codes map to phases, crash back-off grows, env comes from Secrets
and the downward API, init containers run in order, deletion is graceful."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest

from kyb.serve import run_services
from kyb.store import Store
from schemas.pod import Pod
from tests.images import BUSYBOX_TAG, busybox_image  # noqa: F401  (fixture)

NODE = "node-a"


@dataclass
class Cluster:
    nc: Any
    store: Store
    runtime: str
    url: str
    options: dict[str, Any]
    image: str
    data: Path  # a directory for files pods write (mounted at /data)
    kubelet_stop: asyncio.Event | None = None
    kubelet_task: asyncio.Task | None = None

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        msg = await self.nc.request("kyb.api.apply", json.dumps(manifest).encode(), timeout=10)
        body = json.loads(msg.data)
        assert msg.headers["Kyb-Status"] in ("200", "201"), body
        return body

    async def delete(self, name: str) -> dict[str, Any]:
        query = {"kind": "pod", "namespace": "default", "name": name}
        msg = await self.nc.request("kyb.api.delete", json.dumps(query).encode(), timeout=10)
        return json.loads(msg.data)

    async def pod(self, name: str) -> Pod | None:
        with contextlib.suppress(Exception):
            return await self.store.get("Pod", "default", name)
        return None

    async def wait_pod(self, name: str, check: Callable[[Pod], bool], timeout: float = 30) -> Pod:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = await self.pod(name)
            if last is not None and check(last):
                return last
            await asyncio.sleep(0.1)
        raise AssertionError(f"pod {name} never got there; last status: {last.status if last else None}")

    def pod_manifest(self, name: str, containers: list[dict], **spec: Any) -> dict[str, Any]:
        for c in [*containers, *spec.get("initContainers", [])]:
            c.setdefault("image", self.image)
            c.setdefault("imagePullPolicy", "Never")
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": NODE, "containers": containers, "terminationGracePeriodSeconds": 5, **spec},
        }


async def start_services(names: list[str], url: str, options: dict[str, Any]) -> tuple[asyncio.Event, asyncio.Task]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_services(names, url, options, stop))
    return stop, task


async def stop_services(stop: asyncio.Event, task: asyncio.Task) -> None:
    stop.set()
    await asyncio.wait_for(task, 30)


async def wait_api(nc: Any, task: asyncio.Task) -> None:
    deadline = time.monotonic() + 20
    while True:
        with contextlib.suppress(Exception):
            msg = await nc.request("kyb.api.get", b'{"kind":"ns","name":"default"}', timeout=0.5)
            if msg.headers and msg.headers.get("Kyb-Status") == "200":
                return
        if task.done():
            task.result()
        assert time.monotonic() < deadline, "api did not come up"
        await asyncio.sleep(0.05)


async def wait_node(store: Store, task: asyncio.Task) -> None:
    deadline = time.monotonic() + 20
    while True:
        with contextlib.suppress(Exception):
            node = await store.get("Node", None, NODE)
            if any(c.type == "Ready" and c.status == "True" for c in node.status.conditions):
                return
        if task.done():
            task.result()
        assert time.monotonic() < deadline, "kubelet did not register its node"
        await asyncio.sleep(0.05)


def kubelet_options(runtime: str, tmp_path: Path) -> dict[str, Any]:
    return {
        "node_name": NODE,
        "runtime": runtime,
        "state_dir": str(tmp_path / "kubelet"),
        "crash_backoff": 0.5,
        "max_backoff": 4,
        "relist": 0.2,
        "pod_cidr": "127.77.0.0/16",
    }


@contextlib.asynccontextmanager
async def cluster_for(runtime: str, nats_url: str, tmp_path: Path, image: str) -> AsyncIterator[Cluster]:
    options = kubelet_options(runtime, tmp_path)
    api_stop, api_task = await start_services(["api"], nats_url, {})
    nc = await nats.connect(nats_url)
    c: Cluster | None = None
    try:
        await wait_api(nc, api_task)
        kl_stop, kl_task = await start_services(["kubelet"], nats_url, options)
        store = Store(nc.jetstream())
        await wait_node(store, kl_task)
        data = tmp_path / "data"
        data.mkdir()
        data.chmod(0o777)
        c = Cluster(nc, store, runtime, nats_url, options, image, data, kl_stop, kl_task)
        yield c
    finally:
        if c is not None and c.kubelet_stop is not None and c.kubelet_task is not None:
            await stop_services(c.kubelet_stop, c.kubelet_task)
        await stop_services(api_stop, api_task)
        await nc.close()
        await cleanup_runtime(runtime, options)


async def cleanup_runtime(runtime: str, options: dict[str, Any]) -> None:
    """Remove whatever containers the test's pods left behind."""
    if runtime == "docker":
        from services.kubelet.runtime.docker import DockerRuntime

        rt: Any = DockerRuntime(node_name=options["node_name"])
    else:
        from services.kubelet.runtime.process import ProcessRuntime

        rt = ProcessRuntime(Path(options["state_dir"]) / "process")
    try:
        for uid in set(await rt.list_sandboxes()) | {i.pod_uid for i in await rt.list()}:
            with contextlib.suppress(Exception):
                if runtime == "process" or uid:
                    await rt.remove_sandbox(uid)
    finally:
        await rt.close()


@pytest.fixture(params=[pytest.param("docker", id="docker"), pytest.param("process", id="process")])
async def cluster(request, nats_url, tmp_path) -> AsyncIterator[Cluster]:
    if request.param == "docker":
        image = request.getfixturevalue("busybox_image")
    else:
        image = BUSYBOX_TAG
    async with cluster_for(request.param, nats_url, tmp_path, image) as c:
        yield c


def sh(script: str) -> dict[str, Any]:
    return {"command": ["sh", "-c", script]}


def status_of(pod: Pod, name: str):
    return next(s for s in [*pod.status.containerStatuses, *pod.status.initContainerStatuses] if s.name == name)


def in_pod(c: Cluster, path: str) -> str:
    """A path under the data volume as the container sees it."""
    return f"/data/{path}" if c.runtime == "docker" else f"data/{path}"


def data_volume(c: Cluster) -> tuple[list[dict], list[dict]]:
    volumes = [{"name": "data", "hostPath": {"path": str(c.data)}}]
    mounts = [{"name": "data", "mountPath": "/data"}]
    return volumes, mounts


# --- tests -----------------------------------------------------------------------------------


async def test_pod_runs_and_serves_http_on_its_pod_ip(cluster: Cluster):
    import httpx

    script = "mkdir -p www && echo hello-from-pod > www/index.html && exec busybox httpd -f -p {addr}:8080 -h www"
    addr = "0.0.0.0" if cluster.runtime == "docker" else "$POD_IP"
    container = {"name": "web", **sh(("cd /tmp && " if cluster.runtime == "docker" else "") + script.format(addr=addr)),
                 "ports": [{"containerPort": 8080}]}
    await cluster.apply(cluster.pod_manifest("web", [container]))
    pod = await cluster.wait_pod("web", lambda p: p.status.phase == "Running")
    ip = pod.status.podIP
    assert ip.startswith("127.77.") and pod.status.hostIP == "127.0.0.1"
    st = status_of(pod, "web")
    assert st.state.running is not None and st.ready and st.containerID.startswith(f"{cluster.runtime}://")
    ready = await cluster.wait_pod("web", lambda p: any(c.type == "Ready" and c.status == "True" for c in p.status.conditions))
    assert ready.status.startTime
    deadline = time.monotonic() + 15
    async with httpx.AsyncClient() as client:
        while True:
            try:
                r = await client.get(f"http://{ip}:8080/index.html", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the pod never answered on its IP"
                await asyncio.sleep(0.1)
    assert r.status_code == 200 and r.text.strip() == "hello-from-pod"


@pytest.mark.parametrize(
    "policy, code, phase",
    [
        pytest.param("OnFailure", 0, "Succeeded", id="onfailure-exit0-succeeds"),
        pytest.param("Never", 1, "Failed", id="never-exit1-fails"),
    ],
)
async def test_exit_codes_decide_the_phase(cluster: Cluster, policy: str, code: int, phase: str):
    await cluster.apply(cluster.pod_manifest("job", [{"name": "main", **sh(f"exit {code}")}], restartPolicy=policy))
    pod = await cluster.wait_pod("job", lambda p: p.status.phase in ("Succeeded", "Failed"))
    assert pod.status.phase == phase
    term = status_of(pod, "main").state.terminated
    assert term is not None and term.exitCode == code
    assert term.reason == ("Completed" if code == 0 else "Error")
    assert status_of(pod, "main").restartCount == 0


async def test_onfailure_restarts_a_failing_container(cluster: Cluster):
    await cluster.apply(cluster.pod_manifest("flaky", [{"name": "main", **sh("exit 3")}], restartPolicy="OnFailure"))
    pod = await cluster.wait_pod("flaky", lambda p: status_of(p, "main").restartCount >= 1 if p.status.containerStatuses else False)
    st = status_of(pod, "main")
    assert pod.status.phase == "Running"
    assert st.lastState.terminated is not None and st.lastState.terminated.exitCode == 3


async def test_crash_loop_back_off_grows(cluster: Cluster):
    await cluster.apply(cluster.pod_manifest("crash", [{"name": "main", **sh("exit 1")}]))
    messages: list[str] = []
    deadline = time.monotonic() + 40
    pod = None
    while time.monotonic() < deadline:
        pod = await cluster.pod("crash")
        if pod is not None and pod.status.containerStatuses:
            st = status_of(pod, "main")
            w = st.state.waiting
            if w is not None and w.reason == "CrashLoopBackOff" and (not messages or messages[-1] != w.message):
                messages.append(w.message)
            if st.restartCount >= 4 and len({m.split()[1] for m in messages}) >= 3:
                break
        await asyncio.sleep(0.05)
    backoffs = []
    for m in messages:
        assert "restarting failed container=main" in m
        if not backoffs or backoffs[-1] != m.split()[1]:
            backoffs.append(m.split()[1])
    assert backoffs[:3] == ["500ms", "1s", "2s"], messages
    assert pod is not None and status_of(pod, "main").restartCount >= 4
    assert status_of(pod, "main").lastState.terminated.exitCode == 1


async def test_init_containers_run_in_order_before_the_app(cluster: Cluster):
    volumes, mounts = data_volume(cluster)
    log = in_pod(cluster, "order")
    inits = [
        {"name": "first", **sh(f"echo first >> {log}"), "volumeMounts": mounts},
        {"name": "second", **sh(f"test -f {log} && echo second >> {log}"), "volumeMounts": mounts},
    ]
    app = {"name": "app", **sh(f"echo app >> {log}"), "volumeMounts": mounts}
    await cluster.apply(cluster.pod_manifest("init", [app], initContainers=inits, volumes=volumes, restartPolicy="Never"))
    pod = await cluster.wait_pod("init", lambda p: p.status.phase in ("Succeeded", "Failed"))
    assert pod.status.phase == "Succeeded"
    assert (cluster.data / "order").read_text().split() == ["first", "second", "app"]
    assert [s.state.terminated.reason for s in pod.status.initContainerStatuses] == ["Completed", "Completed"]
    assert any(c.type == "Initialized" and c.status == "True" for c in pod.status.conditions)


async def test_failing_init_container_with_never_fails_the_pod(cluster: Cluster):
    await cluster.apply(cluster.pod_manifest(
        "badinit", [{"name": "app", **sh("exit 0")}], initContainers=[{"name": "setup", **sh("exit 2")}],
        restartPolicy="Never"))
    pod = await cluster.wait_pod("badinit", lambda p: p.status.phase in ("Failed", "Succeeded"))
    assert pod.status.phase == "Failed"
    assert status_of(pod, "setup").state.terminated.exitCode == 2
    assert status_of(pod, "app").state.waiting.reason == "PodInitializing"


async def test_env_from_secret_and_downward_api_waits_for_the_secret(cluster: Cluster):
    env = [
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "GREETING", "value": "hi-$(ME)"},
    ]
    check = (
        'test "$PASSWORD" = s3cret && test "$ME" = envpod && test "$NODE" = node-a && '
        'test "$GREETING" = hi-envpod && case "$IP" in 127.77.*) exit 0;; *) exit 9;; esac'
    )
    await cluster.apply(cluster.pod_manifest("envpod", [{"name": "main", **sh(check), "env": env}], restartPolicy="Never"))
    pod = await cluster.wait_pod(
        "envpod", lambda p: bool(p.status.containerStatuses) and status_of(p, "main").state.waiting is not None
        and status_of(p, "main").state.waiting.reason == "CreateContainerConfigError")
    assert "creds" in status_of(pod, "main").state.waiting.message
    assert pod.status.phase == "Pending"
    await cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
                         "stringData": {"password": "s3cret"}})
    pod = await cluster.wait_pod("envpod", lambda p: p.status.phase in ("Succeeded", "Failed"))
    assert pod.status.phase == "Succeeded", status_of(pod, "main")


async def test_deletion_is_graceful_and_the_object_goes_last(cluster: Cluster):
    volumes, mounts = data_volume(cluster)
    marker = in_pod(cluster, "term")
    script = f"trap 'echo TERM > {marker}; exit 0' TERM; while true; do sleep 0.1; done"
    await cluster.apply(cluster.pod_manifest("graceful", [{"name": "main", **sh(script), "volumeMounts": mounts}],
                                             volumes=volumes))
    pod = await cluster.wait_pod("graceful", lambda p: p.status.phase == "Running")
    uid = pod.metadata.uid
    deleted = await cluster.delete("graceful")
    assert deleted["metadata"].get("deletionTimestamp"), deleted
    seen_marked = await cluster.pod("graceful")
    deadline = time.monotonic() + 20
    while await cluster.pod("graceful") is not None:
        assert time.monotonic() < deadline, "the pod object was never removed"
        await asyncio.sleep(0.05)
    assert (cluster.data / "term").read_text().strip() == "TERM"
    assert seen_marked is None or seen_marked.metadata.deletionTimestamp
    if cluster.runtime == "docker":
        from services.kubelet.runtime.docker import DockerRuntime

        rt: Any = DockerRuntime(node_name=cluster.options["node_name"])
    else:
        from services.kubelet.runtime.process import ProcessRuntime

        rt = ProcessRuntime(Path(cluster.options["state_dir"]) / "process")
    try:
        assert await rt.list(uid) == []
    finally:
        await rt.close()


async def test_a_sidecar_runs_beside_the_app_and_goes_when_it_completes(cluster: Cluster):
    volumes, mounts = data_volume(cluster)
    log = in_pod(cluster, "sidecar")
    forever = "trap 'exit 0' TERM; while true; do sleep 0.1; done"
    inits = [
        {"name": "proxy", **sh(f"echo proxy >> {log}; {forever}"), "restartPolicy": "Always", "volumeMounts": mounts},
        {"name": "setup", **sh(f"until grep -q proxy {log}; do sleep 0.1; done; echo setup >> {log}"),
         "volumeMounts": mounts},
    ]
    app = {"name": "app", **sh(f"grep -q proxy {log} && echo app >> {log}"), "volumeMounts": mounts}
    await cluster.apply(cluster.pod_manifest("sidecar", [app], initContainers=inits, volumes=volumes,
                                             restartPolicy="Never"))
    pod = await cluster.wait_pod("sidecar", lambda p: p.status.phase in ("Succeeded", "Failed"))
    assert pod.status.phase == "Succeeded", pod.status
    assert (cluster.data / "sidecar").read_text().split() == ["proxy", "setup", "app"]
    pod = await cluster.wait_pod("sidecar", lambda p: status_of(p, "proxy").state.terminated is not None)
    assert pod.status.phase == "Succeeded" and status_of(pod, "proxy").restartCount == 0
    assert status_of(pod, "app").state.terminated.exitCode == 0
    if cluster.runtime == "docker":
        from services.kubelet.runtime.docker import DockerRuntime

        rt: Any = DockerRuntime(node_name=cluster.options["node_name"])
    else:
        from services.kubelet.runtime.process import ProcessRuntime

        rt = ProcessRuntime(Path(cluster.options["state_dir"]) / "process")
    try:
        await asyncio.sleep(1)  # a few syncs: the killed sidecar is not started again
        assert [i.name for i in await rt.list(pod.metadata.uid) if i.state == "running"] == []
        assert {i.name for i in await rt.list(pod.metadata.uid)} == {"proxy", "setup", "app"}
    finally:
        await rt.close()


async def test_deletion_stops_the_sidecar_after_the_app(cluster: Cluster):
    volumes, mounts = data_volume(cluster)
    log = in_pod(cluster, "stops")

    def until_term(name: str, linger: str) -> str:
        return f"trap 'sleep {linger}; echo {name} >> {log}; exit 0' TERM; while true; do sleep 0.1; done"

    side = {"name": "proxy", **sh(until_term("proxy", "0")), "restartPolicy": "Always", "volumeMounts": mounts}
    app = {"name": "app", **sh(until_term("app", "0.5")), "volumeMounts": mounts}
    await cluster.apply(cluster.pod_manifest("stops", [app], initContainers=[side], volumes=volumes))
    await cluster.wait_pod("stops", lambda p: p.status.phase == "Running" and status_of(p, "app").state.running is not None)
    await cluster.delete("stops")  # the app answers SIGTERM half a second late: were they stopped together,
    deadline = time.monotonic() + 20
    while await cluster.pod("stops") is not None:
        assert time.monotonic() < deadline, "the pod object was never removed"
        await asyncio.sleep(0.05)
    assert (cluster.data / "stops").read_text().split() == ["app", "proxy"]  # the sidecar would come first


async def test_the_next_init_container_waits_for_the_sidecars_startup_probe(cluster: Cluster):
    volumes, mounts = data_volume(cluster)
    flag = in_pod(cluster, "up")
    side = {"name": "proxy", **sh(f"sleep 1; touch {flag}; trap 'exit 0' TERM; while true; do sleep 0.1; done"),
            "restartPolicy": "Always", "volumeMounts": mounts,
            "startupProbe": {"exec": {"command": ["test", "-f", flag]}, "periodSeconds": 1, "failureThreshold": 30}}
    setup = {"name": "setup", **sh(f"test -f {flag}"), "volumeMounts": mounts}  # fails (Never) if it ran too early
    await cluster.apply(cluster.pod_manifest("probed", [{"name": "app", **sh("exit 0")}], initContainers=[side, setup],
                                             volumes=volumes, restartPolicy="Never"))
    pod = await cluster.wait_pod("probed", lambda p: p.status.phase in ("Succeeded", "Failed"))
    assert pod.status.phase == "Succeeded", pod.status
    assert status_of(pod, "setup").state.terminated.exitCode == 0
