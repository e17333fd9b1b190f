"""End to end on the real Docker engine: api, scheduler, replication and a docker kubelet. A
ReplicaSet of two busybox pods reaches readyReplicas 2, and a pod the user deletes is replaced
by a new one that runs in a container of its own."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import nats

from kyb import errors
from kyb.client import ApiClient
from kyb.serve import run_services
from kyb.store import Store
from tests.cluster import QUIET, containers_of, docker_kubelet_options, node_ready, wait_for
from tests.images import busybox_image  # noqa: F401  (fixture)

NODE = "replication-dock"


async def test_replicaset_of_busybox_pods_is_ready_and_replaces_a_deleted_pod(
    nats_url,
    tmp_path,
    docker_engine,
    busybox_image,  # noqa: F811
):
    kubelet_opts = docker_kubelet_options(NODE, tmp_path, "127.79.0.0/16", lease_interval=0.5)
    nc = await nats.connect(nats_url)
    store = Store(nc.jetstream())
    api = ApiClient(nc)
    stop = asyncio.Event()
    control = asyncio.create_task(run_services(["api", "scheduler", "replication"], nats_url, QUIET, stop))
    kubelet = asyncio.create_task(run_services(["kubelet"], nats_url, kubelet_opts, stop))
    uids: set[str] = set()
    try:

        await wait_for(lambda: node_ready(store, NODE), 40, "kubelet registered a Ready node", ignoring=())
        rs = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "sleepers", "namespace": "default"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "sleepers"}},
                "template": {
                    "metadata": {"labels": {"app": "sleepers"}},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [
                            {
                                "name": "main",
                                "image": busybox_image,
                                "imagePullPolicy": "Never",
                                "command": ["sleep", "3600"],
                            }
                        ],
                    },
                },
            },
        }

        async def applied() -> bool:
            with contextlib.suppress(errors.KybError):
                await api.apply(rs)
                return True
            return False

        await wait_for(applied, 40, "ReplicaSet applied", ignoring=())

        async def two_ready() -> list[Any] | None:
            got = await store.get("ReplicaSet", "default", "sleepers")
            if got.status.readyReplicas != 2:
                return None
            pods = [
                p for p in await store.list("Pod", "default") if p.metadata.labels.get("app") == "sleepers"
            ]
            live = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletionTimestamp]
            return live if len(live) == 2 else None

        pods = await wait_for(two_ready, 40, "readyReplicas 2", ignoring=())
        for p in pods:
            uids.add(p.metadata.uid)
            assert await asyncio.to_thread(containers_of, docker_engine, p.metadata.uid), (
                "each pod runs in containers"
            )

        victim = pods[0]
        await api.delete("Pod", "default", victim.metadata.name)

        async def replaced() -> list[Any] | None:
            got = await store.get("ReplicaSet", "default", "sleepers")
            pods = [
                p for p in await store.list("Pod", "default") if p.metadata.labels.get("app") == "sleepers"
            ]
            live = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletionTimestamp]
            names = {p.metadata.name for p in live}
            if victim.metadata.name in names or len(live) != 2 or got.status.readyReplicas != 2:
                return None
            return live

        live = await wait_for(replaced, 40, "deleted pod replaced and ready", ignoring=())
        new = next(p for p in live if p.metadata.uid not in uids)
        uids.add(new.metadata.uid)
        assert await asyncio.to_thread(containers_of, docker_engine, new.metadata.uid)

        async def victim_container_gone() -> bool:
            return not await asyncio.to_thread(containers_of, docker_engine, victim.metadata.uid)

        await wait_for(victim_container_gone, 40, "the deleted pod's containers removed", ignoring=())
    finally:
        stop.set()
        await asyncio.gather(control, kubelet, return_exceptions=True)
        await nc.close()
        for uid in uids:
            for c in await asyncio.to_thread(containers_of, docker_engine, uid):
                with contextlib.suppress(Exception):
                    c.remove(force=True)
