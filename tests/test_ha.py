"""High availability on a real nats-server: controllers as several real processes with leader
election (kill -9 the leader, the standby takes over and a rollout completes), several api and
scheduler replicas at once, and a 3-server NATS cluster with R3 buckets losing nothing when a
server dies during a rollout. Nodes are hollow; a stand-in kubelet marks bound pods Running."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest

from kyb import errors
from kyb.client import ApiClient
from kyb.natsd import start_cluster
from kyb.serve import connect
from kyb.store import Store
from tests.cluster import HollowKubelet, Services, hollow_node, wait_for

KYB = str(Path(sys.executable).parent / "kyb")
LEASE = {"lease_seconds": "3", "renew_seconds": "1", "retry_seconds": "0.5"}


def deployment(name: str, replicas: int, image: str, command: list[str] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": image}
    if command:
        container["command"] = command
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container]},
            },
        },
    }


def spawn(name: str, url: str, log: Path, **options: str) -> subprocess.Popen:
    """``kyb serve NAME`` as a real process (its own session, so kill -9 hits only it)."""
    args = [KYB, "serve", name, "--nats", url]
    for k, v in options.items():
        args += [f"--{k.replace('_', '-')}", v]
    out = open(log, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(args, stdout=out, stderr=out, start_new_session=True, env={**os.environ, "KYB_LOG_LEVEL": "INFO"})


def reap(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


async def rolled_out(store: Store, name: str, replicas: int, image: str, timeout: float = 40) -> None:
    """The Deployment's status says the rollout finished and only pods of ``image`` remain."""

    async def done() -> bool:
        try:
            return await check()
        except errors.Temporary:  # a NATS server just went away: ask again
            return False

    async def check() -> bool:
        d = await store.get("Deployment", "default", name)
        s = d.status
        if not (
            (s.observedGeneration or 0) >= (d.metadata.generation or 0)
            and s.updatedReplicas == replicas
            and s.replicas == replicas
            and s.availableReplicas == replicas
        ):
            return False
        pods = [p for p in await store.list("pods", "default") if p.metadata.labels.get("app") == name]
        live = [p for p in pods if not p.metadata.deletionTimestamp]
        return len(live) == replicas and {p.spec.containers[0].image for p in live} == {image}

    await wait_for(done, timeout=timeout, what=f"rollout of {name} to {image}")


async def retrying(fn: Any) -> Any:
    """``fn()``, or None while no api replica answers yet (for wait_for)."""
    try:
        return await fn()
    except errors.Temporary:
        return None


async def lease_holder(store: Store, name: str) -> str:
    try:
        kv = await store.js.key_value("kyb-leases")
        entry = await kv.get(f"kube-system.{name}")
    except (nats.js.errors.BucketNotFoundError, nats.js.errors.KeyNotFoundError):
        return ""
    return json.loads(entry.value)["spec"].get("holderIdentity") or ""


@pytest.fixture
async def hollow(nats_url, nc) -> AsyncIterator[Store]:
    store = Store(nc.jetstream())
    await store.ensure_buckets()
    for i in range(3):
        await store.create(hollow_node(f"ha-{i}"))
    kubelet = HollowKubelet(store, nc).start()
    yield store
    await kubelet.stop()


async def test_standby_deployment_controller_takes_over_after_kill_9_and_finishes_the_rollout(
    nats_url, nc, hollow: Store, tmp_path: Path
):
    store = hollow
    svc = Services(["api", "scheduler", "replication"], nats_url, {**LEASE}).start()
    procs = [spawn("deployment", nats_url, tmp_path / f"deployment-{i}.log", **LEASE) for i in range(2)]
    try:
        holder = await wait_for(lambda: lease_holder(store, "kyb-deployment"), what="a deployment leader")
        api = ApiClient(nc, timeout=5)
        await wait_for(lambda: retrying(lambda: api.apply(deployment("web", 4, "img:1"), "default")), what="api answering")
        await rolled_out(store, "web", 4, "img:1")

        by_pid = {p.pid: p for p in procs}
        leader_pid = int(holder.rsplit("-", 2)[-2])
        assert leader_pid in by_pid, f"lease holder {holder!r} is not one of the two processes"
        os.kill(leader_pid, signal.SIGKILL)
        by_pid[leader_pid].wait()

        await api.apply(deployment("web", 4, "img:2"), "default")

        async def taken_over() -> str | None:
            now = await lease_holder(store, "kyb-deployment")
            return now if now and now != holder else None

        # the standby waits out the dead leader's lease (3 s) before taking over
        new_holder = await wait_for(taken_over, timeout=3 + 5, what="the standby taking over the lease")
        standby = next(p for p in procs if p.pid != leader_pid)
        assert new_holder.rsplit("-", 2)[-2] == str(standby.pid)
        await rolled_out(store, "web", 4, "img:2")
        replica_sets = await store.list("ReplicaSet", "default")
        assert sorted((rs.spec.template.spec.containers[0].image, rs.spec.replicas) for rs in replica_sets) == [
            ("img:1", 0),
            ("img:2", 4),
        ]
    finally:
        reap(procs)
        await svc.stop()


async def test_two_apis_and_two_schedulers_bind_every_pod_once_within_capacity(nats_url, nc):
    store = Store(nc.jetstream())
    await store.ensure_buckets()
    import msgspec

    for i in range(3):
        node = hollow_node(f"cap-{i}")
        small = {"cpu": "8", "memory": "16Gi", "pods": "10"}
        node = msgspec.structs.replace(node, status=msgspec.structs.replace(node.status, allocatable=small, capacity=small))
        await store.create(node)
    a = Services(["api", "scheduler"], nats_url, {}).start()
    b = Services(["api", "scheduler"], nats_url, {}).start()
    try:
        api = ApiClient(nc, timeout=5)
        pod = {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "c", "image": "img"}]}}

        async def create(i: int) -> None:
            await wait_for(
                lambda: retrying(lambda: api.create({**pod, "metadata": {"name": f"p{i}"}}, "default")), what=f"pod p{i} created"
            )

        await asyncio.gather(*(create(i) for i in range(30)))

        async def all_bound() -> list | None:
            pods = await store.list("pods", "default")
            return pods if len(pods) == 30 and all(p.spec.nodeName for p in pods) else None

        pods = await wait_for(all_bound, timeout=30, what="30 pods bound")
        assert sorted(p.metadata.name for p in pods) == sorted(f"p{i}" for i in range(30))
        assert all(any(c.type == "PodScheduled" and c.status == "True" for c in p.status.conditions) for p in pods)
        per_node = Counter(p.spec.nodeName for p in pods)
        assert per_node == {"cap-0": 10, "cap-1": 10, "cap-2": 10}, f"a node overfilled past 10 pods: {dict(per_node)}"
    finally:
        await asyncio.gather(a.stop(), b.stop())


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[list]:
    servers = start_cluster(tmp_path / "cluster", 3)
    yield servers
    for s in servers:
        s.stop()


async def test_r3_cluster_loses_nothing_when_a_server_dies_during_a_rollout(nats_cluster, tmp_path: Path):
    url = ",".join(s.url for s in nats_cluster)

    async def ready() -> Any:
        nc = await connect(url, name="test")
        try:
            await nc.jetstream(timeout=2).account_info()
            return nc
        except Exception:
            await nc.close()
            return None

    nc = await wait_for(ready, timeout=30, what="JetStream of the cluster ready")
    store = Store(nc.jetstream(timeout=10), replicas=3)
    await wait_for(lambda: _ensure(store), timeout=30, what="R3 buckets created")
    for i in range(3):
        await store.create(hollow_node(f"r3-{i}"))
    kubelet = HollowKubelet(store, nc).start()
    svc = Services(["api", "scheduler", "deployment", "replication"], url, {"replicas": 3, **LEASE}).start()
    try:
        api = ApiClient(nc, timeout=5)
        await wait_for(lambda: retrying(lambda: api.apply(deployment("web", 4, "img:1"), "default")), what="api answering")
        for i in range(20):
            await api.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm{i}"},
                             "data": {"i": str(i)}}, "default")
        await rolled_out(store, "web", 4, "img:1")
        info = await nc.jetstream().stream_info("KV_kyb-configmaps")
        assert info.config.num_replicas == 3

        single = await single_replica_streams(nc)
        hosts = set(single.values())
        victim = next((srv for srv in nats_cluster if srv.server_name not in hosts), None)
        if victim is None:
            pytest.xfail(f"every server hosts a single-replica stream, so any loss stalls someone: {single}")
        await api.apply(deployment("web", 4, "img:2"), "default")
        victim.kill()  # mid-rollout, without goodbye

        await rolled_out(store, "web", 4, "img:2", timeout=60)
        cms = await store.list("ConfigMap", "default")
        assert sorted(c.metadata.name for c in cms) == sorted(f"cm{i}" for i in range(20))
        assert [c.data["i"] for c in sorted(cms, key=lambda c: int(c.metadata.name[2:]))] == [str(i) for i in range(20)]
        pods = [p for p in await store.list("pods", "default") if not p.metadata.deletionTimestamp]
        assert len(pods) == len({p.metadata.name for p in pods}) == 4
    finally:
        await svc.stop()
        await kubelet.stop()
        await nc.close()


async def single_replica_streams(nc: Any) -> dict[str, str]:
    """Streams kept on one server only (name -> that server): losing it stalls their users.

    Found by this test: the scheduler's reservation stream KYB_SCHEDULING is created with one
    replica whatever the cluster's ``replicas`` option says; when its server dies the scheduler
    binds nothing more and a rollout stays with Pending pods. So the server killed here is one
    that holds no such stream."""
    out: dict[str, str] = {}
    for info in await nc.jetstream().streams_info():
        if info.config.num_replicas in (None, 1) and info.cluster is not None and info.cluster.leader:
            out[info.config.name] = info.cluster.leader
    return out


async def _ensure(store: Store) -> bool:
    """Create the R3 buckets; False while the cluster cannot place three replicas yet."""
    try:
        await store.ensure_buckets()
    except (nats.js.errors.Error, errors.KybError):
        return False
    return True

