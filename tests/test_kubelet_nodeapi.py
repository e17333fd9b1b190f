"""The node API and metrics end to end: ``kyb logs`` / ``kyb exec`` code paths find the pod
through the real api service, reach the kubelet's node API over a real nats-server and read
a real container; metrics samples carry the container's memory and feed ``kyb top``."""

from __future__ import annotations

import asyncio
import contextlib
import io
import random
import time

import docker
import msgspec
import pytest

from kyb.cli.nodeclient import latest_samples, pick_container, stream_logs
from kyb.cli.podio import run_in_container, write_logs
from kyb.cli.top import node_rows, pod_rows, top_nodes_text, top_pods_text
from kyb.errors import BadRequest, NotFound
from kyb.serve import run_services
from kyb.store import Store
from schemas.meta import ObjectMeta
from schemas.pod import Container, Pod, PodSpec
from services.kubelet.metrics import cpu_millis, publish_metrics
from services.kubelet.nodeapi import serve_node_api
from services.kubelet.runtime import LABEL_POD_UID, ContainerConfig, SandboxConfig
from tests import images

busybox_image = images.busybox_image
pytestmark = pytest.mark.docker

NODE = "node-a"
SCRIPT = "echo oops >&2; sleep 0.2; for i in 1 2 3 4 5; do echo line$i; done; exec sleep 600"


@pytest.fixture
async def api_service(nats_url):
    stop = asyncio.Event()
    task = asyncio.create_task(run_services(["api"], nats_url, {"configure_logging": False}, stop))
    yield
    stop.set()
    await asyncio.wait_for(task, 30)


@pytest.fixture
async def node(nc, api_service, docker_engine, busybox_image):
    """A pod 'web' bound to NODE with one running container, and the node API serving it."""
    from services.kubelet.runtime.docker import DockerRuntime

    rt = DockerRuntime(docker.from_env())
    store = Store(nc.jetstream())
    pod = await store.create(
        Pod(
            metadata=ObjectMeta(
                name="web",
                namespace="default",
                annotations={"kubectl.kubernetes.io/default-container": "app"},
            ),
            spec=PodSpec(
                containers=[Container(name=n, image=busybox_image) for n in ("app", "ticker", "hog")],
                nodeName=NODE,
            ),
        )
    )
    uid = pod.metadata.uid
    containers: dict[str, str] = {}
    ip = f"127.80.{random.randint(1, 254)}.{random.randint(2, 254)}"
    sandbox = await rt.create_sandbox(
        SandboxConfig(pod_uid=uid, pod_name="web", namespace="default", pod_ip=ip, hostname="web")
    )

    async def start(name: str, script: str) -> str:
        info = await rt.create_and_start(
            sandbox,
            uid,
            ContainerConfig(
                name=name, image=busybox_image, image_pull_policy="Never", command=("/bin/sh", "-c", script)
            ),
        )
        containers[name] = info.id
        return info.id

    await start("app", SCRIPT)

    def lookup(namespace: str, pod_name: str, container: str | None, previous: bool) -> str | None:
        if namespace != "default" or pod_name != "web" or previous:
            return None
        return containers.get(container or "app")

    api = await serve_node_api(nc, NODE, rt, lookup)
    try:
        yield rt, pod, start, api
    finally:
        await api.stop()
        for c in docker_engine.containers.list(all=True, filters={"label": f"{LABEL_POD_UID}={uid}"}):
            c.remove(force=True)
        await rt.close()


async def logs_of(nc, **kw) -> str:
    out = io.BytesIO()
    end = time.monotonic() + 10
    while True:  # the container may not have written everything yet
        out = io.BytesIO()
        await write_logs(nc, "default", "web", out, **kw)
        text = out.getvalue().decode()
        if "line5" in text or time.monotonic() > end:
            return text
        await asyncio.sleep(0.1)


async def test_logs_reach_the_cli_through_the_node(nc, node):
    text = await logs_of(nc)
    assert [line for line in text.splitlines() if line.startswith("line")] == [
        f"line{i}" for i in range(1, 6)
    ]
    assert "oops" in text  # stderr too, as kubectl logs shows it
    tail = io.BytesIO()
    await write_logs(nc, "default", "web", tail, tail=2)
    assert tail.getvalue().decode().splitlines() == ["line4", "line5"]


async def test_follow_streams_until_the_container_exits(nc, node):
    _, _, start, _ = node
    await start("ticker", "for i in 1 2 3; do echo tick$i; sleep 0.3; done")
    out = io.BytesIO()
    await asyncio.wait_for(write_logs(nc, "default", "web", out, container="ticker", follow=True), 20)
    assert out.getvalue().decode().split() == ["tick1", "tick2", "tick3"]


async def test_abandoned_follow_is_cancelled_on_the_node(nc, node):
    _, _, _, api = node
    request = {"namespace": "default", "pod": "web", "container": "app", "follow": True}
    got = []
    async for chunk in stream_logs(nc, NODE, request, idle_timeout=None):
        got.append(chunk)
        break  # the reader goes away; the node must stop streaming to it
    assert got
    end = time.monotonic() + 10
    while api._streams:
        assert time.monotonic() < end, "the node kept streaming to a reader that left"
        await asyncio.sleep(0.05)


async def test_missing_previous_container_is_a_not_found(nc, node):
    with pytest.raises(NotFound, match='previous terminated container "app" in pod "web" not found'):
        await write_logs(nc, "default", "web", io.BytesIO(), previous=True)
    with pytest.raises(NotFound):
        await write_logs(nc, "default", "nope", io.BytesIO())


async def test_exec_returns_output_and_exit_code(nc, node):
    code, output = await run_in_container(
        nc, "default", "web", ["sh", "-c", "echo hi from $(hostname); exit 3"]
    )
    assert code == 3
    assert output == "hi from web\n"
    code, output = await run_in_container(nc, "default", "web", ["cat", "/nonexistent"])
    assert code == 1 and "No such file" in output


def test_pick_container_as_kubectl_does():
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}}
    with pytest.raises(BadRequest, match=r"choose one of: \[a b\]"):
        pick_container(pod, None)
    assert pick_container(pod, "b") == "b"
    with pytest.raises(BadRequest, match="container c is not valid for pod p"):
        pick_container(pod, "c")
    pod["metadata"]["annotations"] = {"kubectl.kubernetes.io/default-container": "b"}
    assert pick_container(pod, None) == "b"


async def test_metrics_carry_container_memory_and_feed_top(nc, node):
    rt, pod, start, _ = node
    await start("hog", "dd if=/dev/zero bs=1M count=24 | sleep 600 & exec sleep 600")
    seen: list[dict] = []

    async def on_sample(msg):
        seen.append(msgspec.json.decode(msg.data))

    sub = await nc.subscribe(f"kyb.metrics.{NODE}", cb=on_sample)
    stop = asyncio.Event()
    task = asyncio.create_task(publish_metrics(nc, NODE, rt, lambda: [pod], stop, interval=0.5))
    try:
        end = time.monotonic() + 20
        while not seen or not seen[-1]["pods"] or len(seen[-1]["pods"][0]["containers"]) < 2:
            if time.monotonic() > end:
                states = [(i.name, i.state) for i in await rt.list(pod.metadata.uid)]
                raise AssertionError(f"no usable sample: {seen[-1:]}; containers: {states}")
            await asyncio.sleep(0.1)
        sample = seen[-1]
        assert sample["node"] == NODE and sample["window"] > 0
        assert sample["node_usage"]["memory_bytes"] > 0
        (p,) = sample["pods"]
        assert (p["namespace"], p["name"], p["uid"]) == ("default", "web", pod.metadata.uid)
        assert all(c["memory_bytes"] > 0 for c in p["containers"])
        stored = await latest_samples(nc)
        assert [s["node"] for s in stored] == [NODE]
        text = await top_pods_text(nc, "default")
        header, row = text.splitlines()
        assert header.split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
        assert row.split()[0] == "web" and row.split()[1].endswith("m") and row.split()[2].endswith("Mi")
        assert (await top_nodes_text(nc)).splitlines()[1].split()[0] == NODE
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def test_top_without_samples_says_so(nc):
    with pytest.raises(NotFound, match="metrics not available yet"):
        await latest_samples(nc)


def test_cpu_rate_from_cumulative_readings():
    assert cpu_millis(0, 500_000_000, 1.0) == 500  # half a core
    assert cpu_millis(1_000, 1_000, 2.0) == 0
    assert cpu_millis(2_000, 1_000, 1.0) == 0  # counter reset (container restarted)


def test_top_rows_sum_containers_and_compute_percentages():
    samples = [
        {
            "node": "n1",
            "node_usage": {"cpu_millis": 500, "memory_bytes": 512 * 1024 * 1024},
            "pods": [
                {
                    "namespace": "b",
                    "name": "y",
                    "uid": "1",
                    "containers": [{"name": "c", "cpu_millis": 3, "memory_bytes": 2 * 1024 * 1024}],
                },
                {
                    "namespace": "a",
                    "name": "x",
                    "uid": "2",
                    "containers": [
                        {"name": "c1", "cpu_millis": 10, "memory_bytes": 1024 * 1024},
                        {"name": "c2", "cpu_millis": 5, "memory_bytes": 3 * 1024 * 1024},
                    ],
                },
            ],
        }
    ]
    assert pod_rows(samples, None) == [["a", "x", "15m", "4Mi"], ["b", "y", "3m", "2Mi"]]
    assert pod_rows(samples, "a", containers=True) == [["x", "c1", "10m", "1Mi"], ["x", "c2", "5m", "3Mi"]]
    assert node_rows(samples, {"n1": {"cpu": "2", "memory": "1Gi"}}) == [
        ["n1", "500m", "25%", "512Mi", "50%"]
    ]
    assert node_rows(samples, {}) == [["n1", "500m", "<unknown>", "512Mi", "<unknown>"]]


async def test_cli_commands_print_and_exit_like_kubectl(nats_url, nc, node):
    from click.testing import CliRunner

    from kyb.cli.podio import exec_command_cli, logs_command

    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke, exec_command_cli, ["web", "--nats", nats_url, "--", "sh", "-c", "echo out; exit 7"]
    )
    assert result.exit_code == 7 and result.output == "out\n"
    assert "line5" in await logs_of(nc)  # everything is written
    result = await asyncio.to_thread(runner.invoke, logs_command, ["web", "--nats", nats_url, "--tail", "1"])
    assert result.exit_code == 0 and result.output == "line5\n"
    # kubectl's pod/NAME form; another kind is refused before anything is asked.
    result = await asyncio.to_thread(runner.invoke, logs_command, ["pod/web", "--nats", nats_url, "--tail", "1"])
    assert result.exit_code == 0 and result.output == "line5\n"
    result = await asyncio.to_thread(
        runner.invoke, exec_command_cli, ["po/web", "--nats", nats_url, "--", "sh", "-c", "echo again"]
    )
    assert result.exit_code == 0 and result.output == "again\n"
    result = await asyncio.to_thread(runner.invoke, logs_command, ["deploy/web", "--nats", nats_url])
    assert result.exit_code == 2 and "give a pod" in result.output
    result = await asyncio.to_thread(runner.invoke, logs_command, ["ghost", "--nats", nats_url])
    assert result.exit_code == 1 and 'pods "ghost" not found' in result.output
