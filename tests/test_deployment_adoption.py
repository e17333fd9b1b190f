"""A Deployment adopts and releases ReplicaSets as Kubernetes' does, on a real nats-server with
the api, replication, deployment and gc services in-process and hollow pods (the hollow
kubelet of tests/cluster.py reports each pod Running and Ready and removes terminating ones):
an orphan ReplicaSet with the Deployment's template becomes its ReplicaSet instead of a
duplicate, an orphan with another template is adopted and rolled down to zero, a Deployment
deleted with ``--cascade=orphan`` and applied again takes its ReplicaSet back, and a
ReplicaSet relabelled out of the selector is let go and replaced."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest

from kyb import errors
from kyb.client import ApiClient
from kyb.store import Store
from schemas.pod import Pod
from tests.cluster import FAST_LEASE, HollowKubelet, Services, wait_api, wait_for, workload_manifest

pytestmark = pytest.mark.timeout(60)

NEVER_PULL = {"imagePullPolicy": "Never"}


class Cluster:
    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.store = Store(nc.jetstream())
        self.api = ApiClient(nc)

    async def deployment(self, name: str = "web") -> dict:
        return await self.api.get("deployments", "default", name)

    async def replica_sets(self) -> dict[str, dict]:
        return {r["metadata"]["name"]: r for r in await self.api.list("replicasets", "default")}

    async def pods(self) -> list[Pod]:
        return [p for p in await self.store.list("Pod", "default") if not p.metadata.deletionTimestamp]  # type: ignore[misc]

    async def ready_pods(self, n: int) -> list[Pod] | None:
        pods = await self.pods()
        ok = len(pods) == n and all(p.status.phase == "Running" for p in pods)
        return pods if ok else None

    async def rolled_out(self, name: str = "web", timeout: float = 20) -> dict:
        async def done() -> dict | None:
            d = await self.deployment(name)
            s = d.get("status") or {}
            conds = {c["type"]: c for c in s.get("conditions") or []}
            ok = (s.get("observedGeneration") == d["metadata"]["generation"]
                  and s.get("updatedReplicas") == s.get("availableReplicas") == s.get("replicas") == d["spec"]["replicas"]
                  and conds.get("Progressing", {}).get("reason") == "NewReplicaSetAvailable")
            return d if ok else None

        return await wait_for(done, timeout, f"deployment {name} rolled out")

    async def events(self, kind: str, name: str) -> list[dict]:
        sub = await self.nc.jetstream().subscribe(f"kyb.events.default.{kind}.{name}", ordered_consumer=True)
        out = []
        try:
            with contextlib.suppress(TimeoutError):
                while True:
                    msg = await sub.next_msg(timeout=0.5)
                    out.append(json.loads(msg.data))
        finally:
            await sub.unsubscribe()
        return out


@pytest.fixture
async def cluster(nats_url, nc):
    services = Services(["api", "replication", "deployment", "gc"], nats_url, FAST_LEASE).start()
    pods: HollowKubelet | None = None
    try:
        await wait_api(nc, services.task)
        c = Cluster(nc)
        pods = HollowKubelet(c.store, nc, node="hollow-0").start()
        await pods.wait_synced()
        yield c
    finally:
        if pods is not None:
            await pods.stop()
        await services.stop()


def deployment(replicas: int, image: str = "img:1") -> dict:
    return workload_manifest("Deployment", "web", replicas, image, container=NEVER_PULL,
                             strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}})


def replica_set(name: str, replicas: int, image: str) -> dict:
    """A ReplicaSet of its own whose labels and pod template are those ``deployment`` makes."""
    rs = workload_manifest("ReplicaSet", name, replicas, image, labels={"app": "web"}, container=NEVER_PULL)
    rs["metadata"]["labels"] = {"app": "web"}
    return rs


def controller(obj: dict) -> dict | None:
    return next((r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")), None)


async def test_an_orphan_with_the_deployments_template_is_adopted_instead_of_duplicated(cluster):
    await cluster.api.apply(replica_set("web-legacy", 2, "img:1"))
    before = {p.metadata.name for p in await wait_for(lambda: cluster.ready_pods(2), 20, "the orphan's pods")}

    await cluster.api.apply(deployment(replicas=3))
    d = await cluster.rolled_out()

    rss = await cluster.replica_sets()
    assert list(rss) == ["web-legacy"], "a second ReplicaSet was created next to the adoptable one"
    rs = rss["web-legacy"]
    ref = controller(rs)
    assert ref is not None and ref["kind"] == "Deployment" and ref["uid"] == d["metadata"]["uid"]
    assert rs["spec"]["replicas"] == 3
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    pods = await wait_for(lambda: cluster.ready_pods(3), 20, "three pods")
    assert before <= {p.metadata.name for p in pods}, "the adopted ReplicaSet's pods were replaced"


async def test_an_orphan_with_another_template_is_adopted_and_rolled_down_to_zero(cluster):
    await cluster.api.apply(replica_set("legacy", 2, "img:0"))
    await wait_for(lambda: cluster.ready_pods(2), 20, "the orphan's pods")

    await cluster.api.apply(deployment(replicas=2, image="img:1"))
    d = await cluster.rolled_out()

    async def legacy_at_zero() -> dict | None:
        rs = (await cluster.replica_sets())["legacy"]
        return rs if rs["spec"]["replicas"] == 0 else None

    legacy = await wait_for(legacy_at_zero, 20, "the adopted ReplicaSet scaled to 0")
    ref = controller(legacy)
    assert ref is not None and ref["uid"] == d["metadata"]["uid"]
    rss = await cluster.replica_sets()
    assert len(rss) == 2
    pods = await wait_for(lambda: cluster.ready_pods(2), 20, "two pods")
    assert {p.spec.containers[0].image for p in pods} == {"img:1"}
    events = await cluster.events("Deployment", "web")
    assert any(e["reason"] == "ScalingReplicaSet" and e["message"].startswith("Scaled down replica set legacy")
               for e in events), [e["message"] for e in events]


async def test_a_replicaset_relabelled_out_of_the_selector_is_released_and_replaced(cluster):
    await cluster.api.apply(deployment(replicas=2))
    d = await cluster.rolled_out()
    (name, rs), = (await cluster.replica_sets()).items()
    kept = {p.metadata.name for p in await cluster.pods()}

    rs = {k: v for k, v in rs.items() if k != "status"}
    rs["metadata"]["labels"] = {**rs["metadata"]["labels"], "app": "retired"}
    await cluster.api.replace(rs)

    async def released() -> dict | None:
        cur = (await cluster.replica_sets())[name]
        return cur if controller(cur) is None else None

    gone = await wait_for(released, 20, "the relabelled ReplicaSet released")
    assert not any(r["uid"] == d["metadata"]["uid"] for r in gone["metadata"].get("ownerReferences") or [])

    async def replaced() -> dict | None:
        ours = [r for r in (await cluster.replica_sets()).values()
                if (ref := controller(r)) is not None and ref["uid"] == d["metadata"]["uid"]]
        return ours[0] if len(ours) == 1 and ours[0]["metadata"]["name"] != name else None

    new = await wait_for(replaced, 20, "a new ReplicaSet for the Deployment")
    d = await cluster.rolled_out()
    assert d["status"].get("collisionCount") == 1  # the released one still holds the first name
    assert new["spec"]["replicas"] == 2
    # No longer managed: the released ReplicaSet keeps its size and its pods.
    assert (await cluster.replica_sets())[name]["spec"]["replicas"] == 2
    pods = await wait_for(lambda: cluster.ready_pods(4), 20, "old and new pods side by side")
    assert kept <= {p.metadata.name for p in pods}


async def test_a_deployment_deleted_with_orphan_cascade_takes_its_replicaset_back_when_applied_again(cluster):
    await cluster.api.apply(deployment(replicas=2))
    first = await cluster.rolled_out()
    (name,) = await cluster.replica_sets()
    kept = {p.metadata.name for p in await cluster.pods()}

    await cluster.api.delete("deployments", "default", "web", propagation="Orphan")

    async def orphaned() -> bool:
        try:
            await cluster.deployment()
            return False
        except errors.NotFound:
            rs = (await cluster.replica_sets())[name]
            return not rs["metadata"].get("ownerReferences")

    await wait_for(orphaned, 20, "the Deployment gone and its ReplicaSet orphaned", ignoring=())
    await cluster.api.apply(deployment(replicas=2))
    second = await cluster.rolled_out()
    assert second["metadata"]["uid"] != first["metadata"]["uid"]

    rss = await cluster.replica_sets()
    assert list(rss) == [name], "the orphaned ReplicaSet was not taken back"
    ref = controller(rss[name])
    assert ref is not None and ref["uid"] == second["metadata"]["uid"]
    assert {p.metadata.name for p in await cluster.pods()} == kept  # nothing restarted
