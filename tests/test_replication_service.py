"""The replication service on a real nats-server, with the api in front and hollow pods: a tiny
in-test kubelet (tests/cluster.py) binds each new pod to a hollow node and reports it Running
and Ready (unless its template says ``never-ready``), and removes terminating pods like a
kubelet would."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator

import msgspec
import nats
import pytest

from schemas.helpers import controller_of
from schemas.pod import Pod
from tests.cluster import FAST_LEASE, HollowCluster, wait_api, wait_for, workload_manifest


def never_ready(pod: Pod) -> bool:
    """Readiness of the hollow kubelet: pods labelled ``never-ready`` never pass it."""
    return not pod.metadata.labels.get("never-ready")


def replicaset(name: str, replicas: int, labels: dict[str, str] | None = None, min_ready: int = 0) -> dict:
    return workload_manifest(
        "ReplicaSet", name, replicas, "busybox", labels=labels, container={"imagePullPolicy": "Never"},
        minReadySeconds=min_ready,
    )


class Cluster(HollowCluster):
    def __init__(self, nc, url: str) -> None:
        super().__init__(nc, url, ready=never_ready, options=FAST_LEASE)

    async def spawn(self, name: str) -> asyncio.subprocess.Process:
        """The service in a process of its own, so it can be killed for real (SIGKILL)."""
        code = (
            "import asyncio, sys\n"
            "from kyb.serve import run_services\n"
            f"asyncio.run(run_services([{name!r}], {self.url!r}, {FAST_LEASE!r}, asyncio.Event()))\n"
        )
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            cwd=os.getcwd(),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    async def api_ready(self) -> None:
        await wait_api(self.nc)

    async def pods(self, app: str) -> list[Pod]:
        return [p for p in await self.store.list("Pod", "default") if p.metadata.labels.get("app") == app]

    async def active(self, app: str) -> list[Pod]:
        return [p for p in await self.pods(app) if p.metadata.deletionTimestamp is None]

    async def rs(self, name: str):
        return await self.store.get("ReplicaSet", "default", name)


@contextlib.asynccontextmanager
async def hollow_cluster(nats_url: str, *services: str) -> AsyncIterator[Cluster]:
    """``services`` in-process once the api answers, with the hollow kubelet running pods."""
    nc = await nats.connect(nats_url)
    c = Cluster(nc, nats_url)
    c.start(*services)
    await c.api_ready()
    c.kubelet.start()
    try:
        await c.kubelet.wait_synced()
        yield c
    finally:
        await c.kubelet.stop()
        await c.stop_all()
        await nc.close()


@pytest.fixture
async def cluster(nats_url):
    async with hollow_cluster(nats_url, "api", "replication") as c:
        yield c


async def test_scale_up_and_down_reports_status(cluster):
    await cluster.api.apply(replicaset("web", 3))

    async def ready(n: int):
        rs = await cluster.rs("web")
        s = rs.status
        return (
            s.replicas == n
            and s.readyReplicas == n
            and s.availableReplicas == n
            and s.fullyLabeledReplicas == n
        )

    await wait_for(lambda: ready(3), what="3 ready replicas")
    pods = await cluster.active("web")
    assert len(pods) == 3
    rs = await cluster.rs("web")
    assert rs.status.observedGeneration == rs.metadata.generation
    for p in pods:
        ref = controller_of(p)
        assert ref is not None and ref.uid == rs.metadata.uid and ref.blockOwnerDeletion
        assert p.metadata.name.startswith("web-") and len(p.metadata.name) == len("web-") + 5

    await cluster.api.apply(replicaset("web", 5))
    await wait_for(lambda: ready(5), what="5 ready replicas")
    await cluster.api.apply(replicaset("web", 1))
    await wait_for(lambda: ready(1), what="scaled down to 1")

    async def one_pod_left():
        return len(await cluster.pods("web")) == 1

    await wait_for(one_pod_left, what="terminated pods removed")


async def test_pods_that_never_become_ready_are_not_replaced_or_multiplied(cluster):
    await cluster.api.apply(replicaset("broken", 6, labels={"app": "broken", "never-ready": "yes"}))

    async def six_running():
        pods = await cluster.active("broken")
        return len(pods) == 6 and all(p.status.phase == "Running" for p in pods)

    await wait_for(six_running, what="6 running pods")

    async def status_counted():
        s = (await cluster.rs("broken")).status
        return s.replicas == 6 and s.readyReplicas == 0 and s.availableReplicas == 0

    await wait_for(status_counted, what="status replicas 6, ready 0")
    # Further reconciles (each pod write enqueues one) keep the count.
    await cluster.api.apply(replicaset("broken", 6, labels={"app": "broken", "never-ready": "yes"}))
    assert len(await cluster.pods("broken")) == 6
    events = await cluster.nc.jetstream().subscribe(
        "kyb.events.default.ReplicaSet.broken", ordered_consumer=True
    )
    created = []
    with contextlib.suppress(TimeoutError, nats.errors.TimeoutError):
        while True:
            msg = await events.next_msg(timeout=1)
            created.append(msgspec.json.decode(msg.data)["reason"])
    await events.unsubscribe()
    assert created.count("SuccessfulCreate") == 6


async def test_killed_controller_restarted_mid_scale_converges_without_extra_pods(cluster):
    replicas = 200
    await cluster.stop("replication")
    proc = await cluster.spawn("replication")
    try:
        first = cluster.kubelet.when(lambda p: p.metadata.name.startswith("big-"))
        await cluster.api.apply(replicaset("big", replicas))
        await asyncio.wait_for(first.wait(), 30)
        proc.send_signal(signal.SIGKILL)  # as soon as the first pod shows: creates still in flight
        await proc.wait()
        at_kill = len(await cluster.pods("big"))
        assert 0 < at_kill < replicas, "the controller was not killed mid-scale"
        proc = await cluster.spawn("replication")

        async def settled():
            s = (await cluster.rs("big")).status
            return s.replicas == replicas and s.readyReplicas == replicas

        await wait_for(settled, 40, f"{replicas} ready replicas after restart")
        assert len(await cluster.pods("big")) == replicas
        created = {n for n in cluster.kubelet.seen if n.startswith("big-")}
        assert len(created) == replicas, "a pod too many was created"

        # Scale down and kill it as soon as the first pod is marked for deletion.
        doomed = cluster.kubelet.when(
            lambda p: p.metadata.name.startswith("big-") and p.metadata.deletionTimestamp is not None
        )
        await cluster.api.apply(replicaset("big", 10))
        await asyncio.wait_for(doomed.wait(), 30)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        proc = await cluster.spawn("replication")

        async def ten():
            s = (await cluster.rs("big")).status
            return s.replicas == 10 and s.readyReplicas == 10 and len(await cluster.pods("big")) == 10

        await wait_for(ten, 40, "10 replicas after the second restart")
        assert {n for n in cluster.kubelet.seen if n.startswith("big-")} == created, (
            "a pod was created on scale-down"
        )
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()


async def test_adopts_matching_orphans_and_releases_relabelled_pods(cluster):
    orphan = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "stray", "namespace": "default", "labels": {"app": "adopt"}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "Never"}]},
    }
    await cluster.api.apply(orphan)
    await cluster.api.apply(replicaset("adopt", 2))

    async def two_with_stray():
        pods = await cluster.active("adopt")
        rs = await cluster.rs("adopt")
        owned = [p for p in pods if (ref := controller_of(p)) is not None and ref.uid == rs.metadata.uid]
        names = {p.metadata.name for p in owned}
        return len(pods) == 2 and len(owned) == 2 and "stray" in names

    await wait_for(two_with_stray, what="stray adopted and only one pod created")

    # Relabel the stray: it is released and a replacement is created.
    def relabel(p: Pod) -> Pod:
        return msgspec.structs.replace(
            p, metadata=msgspec.structs.replace(p.metadata, labels={"app": "other"})
        )

    await cluster.store.mutate("Pod", "default", "stray", relabel)

    async def released():
        stray = await cluster.store.get("Pod", "default", "stray")
        s = (await cluster.rs("adopt")).status
        return (
            controller_of(stray) is None and len(await cluster.active("adopt")) == 2 and s.readyReplicas == 2
        )

    await wait_for(released, what="stray released and replaced")


async def kyb(url: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kyb.cli.main",
        "--nats",
        url,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, out.decode(), err.decode()


async def test_kyb_scale_resizes_replicasets_and_replication_controllers(cluster):
    await cluster.api.apply(replicaset("sc", 2))
    rc = {
        "apiVersion": "v1",
        "kind": "ReplicationController",
        "metadata": {"name": "legacy", "namespace": "default"},
        "spec": {
            "replicas": 1,
            "template": {
                "metadata": {"labels": {"app": "legacy"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }
    await cluster.api.apply(rc)

    code, out, err = await kyb(cluster.url, "scale", "rs/sc", "--replicas", "4")
    assert code == 0, err
    assert out.strip() == "replicaset.apps/sc scaled"
    code, out, err = await kyb(cluster.url, "scale", "replicationcontroller", "legacy", "--replicas=3")
    assert code == 0, err
    assert out.strip() == "replicationcontroller/legacy scaled"

    async def sized():
        rcs = await cluster.store.get("ReplicationController", "default", "legacy")
        return (
            (await cluster.rs("sc")).status.readyReplicas == 4
            and len(await cluster.active("sc")) == 4
            and rcs.status.readyReplicas == 3
            and len(await cluster.active("legacy")) == 3
        )

    await wait_for(sized, what="scaled to 4 and 3")

    # A precondition that does not hold writes nothing.
    code, out, err = await kyb(cluster.url, "scale", "rs/sc", "--replicas", "1", "--current-replicas", "2")
    assert code == 1
    assert "Expected replicas to be 2, was 4" in err
    assert (await cluster.rs("sc")).spec.replicas == 4
    deploy = workload_manifest("Deployment", "front", 1, "busybox")
    await cluster.api.apply(deploy)
    code, out, err = await kyb(cluster.url, "scale", "deploy/front", "--replicas", "5")
    assert code == 0, err
    assert out.strip() == "deployment.apps/front scaled"
    assert (await cluster.store.get("Deployment", "default", "front")).spec.replicas == 5
    code, _, err = await kyb(cluster.url, "scale", "pod/x", "--replicas", "1")
    assert code == 1 and "not scalable" in err
