"""The deployment service on a real nats-server, with the api, the replication service and
hollow pods: the in-test kubelet of tests/cluster.py reports each pod Running and Ready (unless
readiness is held or its image is "bad") and removes terminating pods at once. Driven by the
`kyb` commands a user would type."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import sys
import time

import pytest
from click.testing import CliRunner

from kyb.cli.main import cli
from kyb.client import ApiClient
from schemas.pod import Pod
from tests.cluster import FAST_LEASE, HollowCluster, deployment_rolled_out, wait_for, workload_manifest

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("services.replication.service") is None,
                       reason="the replication service is not here yet"),
    pytest.mark.timeout(90),
]

FAST = FAST_LEASE
ROLLING_ONE_BY_ONE = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}


def good_image(pod: Pod) -> bool:
    """Readiness of the hollow kubelet: a pod whose image is "bad" never passes it."""
    return "bad" not in pod.spec.containers[0].image


def deployment(name: str = "web", replicas: int = 4, image: str = "img:1", **spec) -> dict:
    return workload_manifest(
        "Deployment", name, replicas, image, container={"imagePullPolicy": "Never"}, strategy=ROLLING_ONE_BY_ONE, **spec
    )


class Cluster(HollowCluster):
    def __init__(self, nc, url: str) -> None:
        super().__init__(nc, url, ready=good_image, options=FAST)

    async def kyb(self, *args: str) -> tuple[int, str]:
        """Run a `kyb` command as a user would (in a thread: it has its own event loop)."""
        result = await asyncio.to_thread(CliRunner().invoke, cli, ["--nats", self.url, *args])
        return result.exit_code, result.output

    async def deployment(self, name: str = "web") -> dict:
        return await self.api.get("deployments", "default", name)

    async def replica_sets(self) -> list[dict]:
        return await self.api.list("replicasets", "default")

    async def pods(self) -> list:
        return [p for p in await self.store.list("Pod", "default") if not p.metadata.deletionTimestamp]

    async def rolled_out(self, name: str = "web", timeout: float = 30) -> dict:
        return await deployment_rolled_out(self.api, name, timeout)


@pytest.fixture
async def cluster(nats_url, nc):
    c = Cluster(nc, nats_url)
    c.start("api", "replication", "deployment")
    c.kubelet.start()
    try:
        await wait_for(lambda: _answers(c.api), 20, "api up")
        await c.kubelet.wait_synced()
        yield c
    finally:
        await c.kubelet.stop()
        await c.stop_all()


async def _answers(api: ApiClient) -> bool:
    with contextlib.suppress(Exception):
        await api.get("namespaces", None, "default")
        return True
    return False


def images(pods) -> set[str]:
    return {p.spec.containers[0].image for p in pods}


async def test_rollout_set_image_history_and_undo_to_an_earlier_revision(cluster):
    await cluster.api.apply(deployment(replicas=4))
    d = await cluster.rolled_out()
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    code, out = await cluster.kyb("rollout", "status", "deployment/web")
    assert code == 0 and 'deployment "web" successfully rolled out' in out

    # During the rollout the pod count never passes replicas + maxSurge (sampled).
    code, out = await cluster.kyb("set", "image", "deploy/web", "app=img:2")
    assert code == 0 and "deployment.apps/web image updated" in out, out
    most = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        most = max(most, len(await cluster.pods()))
        d = await cluster.deployment()
        if (d.get("status") or {}).get("updatedReplicas") == 4 and images(await cluster.pods()) == {"img:2"}:
            break
    assert most <= 5
    code, out = await cluster.kyb("rollout", "status", "deploy/web", "--timeout", "30")
    assert code == 0 and 'deployment "web" successfully rolled out' in out, out
    assert images(await cluster.pods()) == {"img:2"} and len(await cluster.pods()) == 4

    rss = await cluster.replica_sets()
    assert len(rss) == 2
    by_rev = {r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]: r for r in rss}
    assert by_rev["1"]["spec"]["replicas"] == 0 and by_rev["2"]["spec"]["replicas"] == 4
    for rs in rss:
        h = rs["metadata"]["labels"]["pod-template-hash"]
        assert rs["spec"]["selector"]["matchLabels"]["pod-template-hash"] == h
        assert rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == "4"
        assert rs["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] == "5"

    code, out = await cluster.kyb("rollout", "history", "deployment/web")
    assert code == 0 and out.splitlines()[1].split() == ["REVISION", "CHANGE-CAUSE"], out
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["1", "2"]
    code, out = await cluster.kyb("rollout", "history", "deployment/web", "--revision", "1")
    assert code == 0 and "image: img:1" in out and "pod-template-hash" not in out, out

    code, out = await cluster.kyb("rollout", "undo", "deployment/web", "--to-revision", "1")
    assert code == 0 and "deployment.apps/web rolled back" in out, out
    d = await cluster.rolled_out()
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "img:1"
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    rss = await cluster.replica_sets()
    assert len(rss) == 2  # the revision-1 ReplicaSet came back as revision 3
    assert {r["metadata"]["name"] for r in rss} == set(by_rev[k]["metadata"]["name"] for k in ("1", "2"))
    await wait_for(lambda: _only_images(cluster, {"img:1"}, 4), 20, "old pods gone")


async def _only_images(cluster: Cluster, want: set[str], n: int) -> bool:
    pods = await cluster.pods()
    return images(pods) == want and len(pods) == n


async def test_paused_deployment_scales_but_does_not_roll_until_resumed(cluster):
    await cluster.api.apply(deployment(replicas=2))
    await cluster.rolled_out()
    code, out = await cluster.kyb("rollout", "pause", "deploy/web")
    assert code == 0 and "deployment.apps/web paused" in out
    code, _ = await cluster.kyb("set", "image", "deploy/web", "app=img:2")
    assert code == 0

    async def paused_seen():
        d = await cluster.deployment()
        conds = {c["type"]: c for c in d["status"].get("conditions") or []}
        return conds.get("Progressing", {}).get("reason") == "DeploymentPaused"

    await wait_for(paused_seen, 10, "paused condition")
    d = await cluster.deployment()
    d["spec"]["replicas"] = 3
    await cluster.api.replace({k: v for k, v in d.items() if k != "status"})
    await wait_for(lambda: _only_images(cluster, {"img:1"}, 3), 20, "scaled while paused")
    assert len(await cluster.replica_sets()) == 1

    code, out = await cluster.kyb("rollout", "resume", "deploy/web")
    assert code == 0 and "deployment.apps/web resumed" in out
    await cluster.rolled_out()
    await wait_for(lambda: _only_images(cluster, {"img:2"}, 3), 20, "rolled out after resume")


async def test_restart_rolls_new_pods_with_the_restarted_at_annotation(cluster):
    await cluster.api.apply(deployment(replicas=2))
    await cluster.rolled_out()
    before = {p.metadata.name for p in await cluster.pods()}
    code, out = await cluster.kyb("rollout", "restart", "deployment/web")
    assert code == 0 and "deployment.apps/web restarted" in out
    d = await cluster.rolled_out()
    assert "kubectl.kubernetes.io/restartedAt" in d["spec"]["template"]["metadata"]["annotations"]

    async def replaced():
        pods = await cluster.pods()
        return len(pods) == 2 and not ({p.metadata.name for p in pods} & before)

    await wait_for(replaced, 20, "every pod replaced")


async def test_bad_rollout_hits_its_deadline_and_rollout_status_fails(cluster):
    await cluster.api.apply(deployment(replicas=3, progressDeadlineSeconds=2))
    await cluster.rolled_out()
    code, _ = await cluster.kyb("set", "image", "deploy/web", "app=kyb-test/bad:1")
    assert code == 0

    async def exceeded():
        d = await cluster.deployment()
        conds = {c["type"]: c for c in d["status"].get("conditions") or []}
        p = conds.get("Progressing", {})
        return d if (p.get("status"), p.get("reason")) == ("False", "ProgressDeadlineExceeded") else None

    d = await wait_for(exceeded, 20, "ProgressDeadlineExceeded")
    assert d["status"]["availableReplicas"] >= 2  # maxUnavailable 1 kept the old pods serving
    code, out = await cluster.kyb("rollout", "status", "deploy/web", "--timeout", "10")
    assert code == 1 and 'deployment "web" exceeded its progress deadline' in out


async def serve_deployment(url: str) -> asyncio.subprocess.Process:
    """`kyb serve deployment` as its own process, with a short leader lease."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kyb.cli.main", "serve", "deployment", "--nats", url,
        "--lease-seconds", "1", "--renew-seconds", "0.2", "--retry-seconds", "0.1",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )


async def test_controller_killed_mid_rollout_converges_without_extra_pods(cluster):
    await cluster.stop("deployment")
    first = await serve_deployment(cluster.url)
    try:
        await cluster.api.apply(deployment(replicas=6))
        await cluster.rolled_out()
        cluster.kubelet.hold()  # new pods stay unready: the rollout stops half way
        code, _ = await cluster.kyb("set", "image", "deploy/web", "app=img:2")
        assert code == 0

        async def mid_rollout():
            return "img:2" in images(await cluster.pods())

        await wait_for(mid_rollout, 20, "rollout started")
        first.kill()  # SIGKILL: no lease release, no clean-up
        await first.wait()
        cluster.kubelet.release()
        second = await serve_deployment(cluster.url)
        try:
            d = await cluster.rolled_out(timeout=40)
            await wait_for(lambda: _only_images(cluster, {"img:2"}, 6), 20, "converged")
            rss = await cluster.replica_sets()
            assert sorted(r["spec"]["replicas"] for r in rss) == [0, 6]
            assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
        finally:
            second.terminate()
            await second.wait()
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()


async def test_events_tell_the_scaling_story(cluster):
    await cluster.api.apply(deployment(replicas=2))
    await cluster.rolled_out()
    js = cluster.nc.jetstream()
    sub = await js.subscribe("kyb.events.default.Deployment.web", ordered_consumer=True)
    reasons = []
    with contextlib.suppress(TimeoutError):
        while True:
            msg = await sub.next_msg(timeout=1)
            reasons.append(json.loads(msg.data))
    await sub.unsubscribe()
    assert any(e["reason"] == "ScalingReplicaSet" and "Scaled up replica set web-" in e["message"] for e in reasons)
