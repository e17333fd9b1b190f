"""The StatefulSet controller on a real nats-server with the api (and gc), pods run by a hollow
kubelet that reports them Running and Ready as the test allows, and a clock the test advances
(for ``minReadySeconds``). The Kubernetes documentation's example (headless Service ``nginx``,
StatefulSet ``web`` with claim template ``www``) is applied unchanged but for the image."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kyb.cli.streams import events_filter, read_events
from kyb.client import ApiClient
from kyb.store import Store
from services.statefulset.service import StatefulSetController
from tests.cluster import QUIET, HollowKubelet, Services, wait_api, wait_for

EXAMPLE = Path(__file__).parent / "manifests" / "statefulset-web.yaml"


class Clock:
    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset


def example() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(EXAMPLE.read_text()))


def sts_manifest(name: str, replicas: int, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas, "serviceName": name, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": "kyb-test:1"}]}},
            **spec,
        },
    }


@pytest.fixture
async def env(nats_url, nc):
    base = Services(["api", "gc"], nats_url, QUIET).start()
    store = Store(nc.jetstream())
    await wait_api(nc)
    allowed: set[str] = set()
    clock = Clock()
    kubelet = HollowKubelet(store, nc, node="hollow-0", ready=lambda p: "*" in allowed or p.metadata.name in allowed)
    kubelet.start()
    sc = StatefulSetController(nc, store, clock=clock)
    await sc.start()
    stop = asyncio.Event()
    task = asyncio.create_task(sc.controller.run(stop))
    try:
        yield store, ApiClient(nc), kubelet, allowed, clock, sc
    finally:
        stop.set()
        await task
        await sc.stop()
        await kubelet.stop()
        await base.stop()


async def live_pods(store: Store, app: str) -> dict[str, Any]:
    return {p.metadata.name: p for p in await store.list("pods", "default")
            if p.metadata.labels.get("app") == app and p.metadata.deletionTimestamp is None}


async def names(store: Store, app: str) -> list[str]:
    return sorted(await live_pods(store, app))


def allow(env_, *pod_names: str) -> None:
    _, _, kubelet, allowed, _, sc = env_
    allowed.update(pod_names)
    kubelet.resync()


async def test_documentation_example_orderedready_identities_claims_and_scale_down(env, nc):
    store, api, kubelet, allowed, clock, sc = env
    for doc in example():
        await api.apply(doc)
    await wait_for(lambda: names(store, "nginx"), 10, "web-0 created")
    assert await names(store, "nginx") == ["web-0"]
    web0 = (await live_pods(store, "nginx"))["web-0"]
    assert web0.spec.hostname == "web-0" and web0.spec.subdomain == "nginx"
    assert web0.metadata.labels["statefulset.kubernetes.io/pod-name"] == "web-0"
    assert web0.metadata.labels["apps.kubernetes.io/pod-index"] == "0"
    assert web0.metadata.labels["controller-revision-hash"].startswith("web-")
    assert [v.persistentVolumeClaim.claimName for v in web0.spec.volumes if v.persistentVolumeClaim] == ["www-web-0"]
    claim = await store.get("PersistentVolumeClaim", "default", "www-web-0")
    assert claim.metadata.labels == {"app": "nginx"} and claim.spec.resources.requests == {"storage": "1Gi"}

    # web-0 Ready, but minReadySeconds (10) not yet passed: web-1 waits
    allow(env, "web-0")
    await wait_for(lambda: _ready(store, "web-0"), 10, "web-0 ready")
    sc.controller.resync()
    await wait_for(lambda: _status(api, "web", readyReplicas=1), 10, "status counts web-0 ready")
    assert await names(store, "nginx") == ["web-0"]
    clock.offset += dt.timedelta(seconds=11)
    sc.controller.resync()
    await wait_for(lambda: _is(names(store, "nginx"), ["web-0", "web-1"]), 10, "web-1 after web-0 is available")
    clock.offset += dt.timedelta(seconds=11)
    allow(env, "web-1", "web-2")
    await wait_for(lambda: _ready(store, "web-1"), 10, "web-1 ready")
    clock.offset += dt.timedelta(seconds=11)
    sc.controller.resync()
    await wait_for(lambda: _ready(store, "web-2"), 10, "web-2 ready")
    clock.offset += dt.timedelta(seconds=11)
    sc.controller.resync()
    sts = await wait_for(lambda: _status(api, "web", readyReplicas=3, availableReplicas=3, replicas=3), 10, "3 ready")
    assert sts["status"]["currentRevision"] == sts["status"]["updateRevision"]
    assert sts["status"]["observedGeneration"] == sts["metadata"]["generation"]
    order = [e["message"] for e in await _events(nc, "web") if e["reason"] == "SuccessfulCreate"]
    assert [m for m in order if "create Pod" in m] == [f"create Pod web-{i} in StatefulSet web successful" for i in range(3)]

    # scale down: the highest ordinal goes first, the claims stay
    sts["spec"]["replicas"] = 1
    await api.replace(sts, "default")
    await wait_for(lambda: _is(names(store, "nginx"), ["web-0"]), 10, "scaled to web-0")
    deletes = [e["message"] for e in await _events(nc, "web") if e["reason"] == "SuccessfulDelete"]
    assert deletes == ["delete Pod web-2 in StatefulSet web successful", "delete Pod web-1 in StatefulSet web successful"]
    claims = sorted(c.metadata.name for c in await store.list("persistentvolumeclaims", "default"))
    assert claims == ["www-web-0", "www-web-1", "www-web-2"]


async def test_parallel_rolling_update_with_partition_and_delete_retention(env):
    store, api, kubelet, allowed, clock, sc = env
    allow(env, "*")
    m = sts_manifest("db", 4, podManagementPolicy="Parallel",
                     persistentVolumeClaimRetentionPolicy={"whenScaled": "Delete", "whenDeleted": "Delete"},
                     volumeClaimTemplates=[{"metadata": {"name": "data"},
                                            "spec": {"accessModes": ["ReadWriteOnce"],
                                                     "resources": {"requests": {"storage": "1Gi"}}}}],
                     updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 2}})
    await api.apply(m)
    await wait_for(lambda: _status(api, "db", readyReplicas=4), 15, "4 ready in parallel")
    first = await api.get("statefulsets", "default", "db")
    old_rev = first["status"]["updateRevision"]

    m["spec"]["template"]["spec"]["containers"][0]["image"] = "kyb-test:2"
    await api.apply(m)
    sts = await wait_for(lambda: _status(api, "db", updatedReplicas=2, readyReplicas=4), 15, "ordinals >= 2 updated")
    pods = await live_pods(store, "db")
    images = {n: p.spec.containers[0].image for n, p in pods.items()}
    assert images == {"db-0": "kyb-test:1", "db-1": "kyb-test:1", "db-2": "kyb-test:2", "db-3": "kyb-test:2"}
    assert sts["status"]["currentRevision"] == old_rev != sts["status"]["updateRevision"]
    revs = [r for r in await api.list("controllerrevisions", "default") if r["metadata"]["name"].startswith("db-")]
    assert sorted(r["revision"] for r in revs) == [1, 2]

    # partition 0 finishes the rollout: currentRevision follows
    m["spec"]["updateStrategy"]["rollingUpdate"]["partition"] = 0
    await api.apply(m)
    sts = await wait_for(lambda: _status(api, "db", updatedReplicas=4, readyReplicas=4, currentReplicas=4), 15,
                         "all updated")
    assert sts["status"]["currentRevision"] == sts["status"]["updateRevision"]

    # whenScaled: Delete: the claims of removed ordinals go with their pods
    m["spec"]["replicas"] = 2
    await api.apply(m)
    await wait_for(lambda: _claims(store, ["data-db-0", "data-db-1"]), 15, "surplus claims deleted")
    # whenDeleted: Delete: the rest go with the set
    await api.delete("statefulsets", "default", "db")
    await wait_for(lambda: _claims(store, []), 15, "claims deleted with the set")


async def _claims(store: Store, expected: list[str]) -> bool:
    have = sorted(c.metadata.name for c in await store.list("persistentvolumeclaims", "default")
                  if c.metadata.deletionTimestamp is None)
    return have == expected


async def _ready(store: Store, name: str) -> bool:
    pod = await store.get("Pod", "default", name)
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


async def _status(api: ApiClient, name: str, **want: int) -> dict[str, Any] | None:
    sts = await api.get("statefulsets", "default", name)
    st = sts.get("status") or {}
    return sts if all(st.get(k, 0) == v for k, v in want.items()) else None


async def _is(value: Any, expected: Any) -> bool:
    return (await value) == expected


async def _events(nc: Any, name: str) -> list[dict[str, Any]]:
    return await read_events(nc, events_filter("default", "StatefulSet", name))


async def kyb(url: str, *args: str) -> tuple[int, str]:
    """`kyb` as a user runs it (its own process: the CLI runs its own event loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from kyb.cli.main import main; main()", "--nats", url, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_kyb_scale_rollout_get_and_describe(env, nats_url):
    store, api, kubelet, allowed, clock, sc = env
    allow(env, "*")
    await api.apply(sts_manifest("app", 2, podManagementPolicy="Parallel"))
    code, out = await kyb(nats_url, "scale", "sts/app", "--replicas", "3")
    assert code == 0 and out.strip() == "statefulset.apps/app scaled", out
    code, out = await kyb(nats_url, "rollout", "status", "sts/app", "--timeout", "20s")
    assert code == 0 and "partitioned roll out complete: 3 new pods have been updated..." in out, out
    code, out = await kyb(nats_url, "get", "sts")
    assert out.split("\n")[0].split() == ["NAME", "READY", "AGE"] and out.split("\n")[1].split()[:2] == ["app", "3/3"]
    code, out = await kyb(nats_url, "get", "all")
    assert "statefulset.apps/app" in out, out

    code, out = await kyb(nats_url, "set", "image", "sts/app", "c=kyb-test:2")
    assert code == 0, out
    await wait_for(lambda: _status(api, "app", updatedReplicas=3, readyReplicas=3, currentReplicas=3), 20, "rolled")
    code, out = await kyb(nats_url, "rollout", "history", "sts/app")
    assert code == 0 and [line.split()[0] for line in out.strip().splitlines()[2:]] == ["1", "2"], out
    code, out = await kyb(nats_url, "rollout", "undo", "sts/app")
    assert code == 0 and out.strip() == "statefulset.apps/app rolled back", out
    await wait_for(lambda: _images(store, "app", {"kyb-test:1"}), 20, "back on kyb-test:1")
    code, out = await kyb(nats_url, "rollout", "restart", "sts/app")
    assert code == 0 and out.strip() == "statefulset.apps/app restarted", out
    await wait_for(lambda: _restarted(store, "app"), 20, "every pod restarted")
    code, out = await kyb(nats_url, "describe", "sts", "app")
    assert code == 0 and "Update Revision:" in out and "SuccessfulCreate" in out, out


async def _images(store: Store, app: str, want: set[str]) -> bool:
    pods = await live_pods(store, app)
    return len(pods) == 3 and {p.spec.containers[0].image for p in pods.values()} == want


async def _restarted(store: Store, app: str) -> bool:
    pods = await live_pods(store, app)
    return len(pods) == 3 and all("kubectl.kubernetes.io/restartedAt" in p.metadata.annotations for p in pods.values())
