"""DaemonSet rollouts end to end on a real nats-server: the api, scheduler, daemonset and gc
services, hollow nodes and the hollow kubelet; ``kyb rollout`` driven as a user types it. The
controller keeps one ControllerRevision per template, history and undo read them, and they go
with their DaemonSet."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from click.testing import CliRunner

from kyb.cli.main import cli
from kyb.cli.rollout import same_template
from kyb.client import ApiClient
from kyb.store import Store
from services.daemonset.reconcile import HASH_LABEL
from tests.cluster import QUIET, HollowKubelet, Services, hollow_node, wait_api, wait_for
from tests.test_daemonset_service import ds_manifest

NODES = ("a", "b")


class Env:
    def __init__(self, url: str, store: Store, api: ApiClient) -> None:
        self.url, self.store, self.api = url, store, api

    async def kyb(self, *args: str) -> tuple[int, str]:
        """Run a `kyb` command as a user would (in a thread: it has its own event loop)."""
        result = await asyncio.to_thread(CliRunner().invoke, cli, ["--nats", self.url, *args])
        return result.exit_code, result.output

    async def revisions(self) -> list[dict[str, Any]]:
        return sorted(await self.api.list("controllerrevisions", "default"), key=lambda r: r["revision"])

    async def images_everywhere(self, image: str) -> list[Any] | None:
        """The live pods, once each node runs exactly one, Running, of ``image``."""
        pods = [p for p in await self.store.list("Pod", "default") if p.metadata.deletionTimestamp is None]
        ok = (
            sorted(p.spec.nodeName or "" for p in pods) == list(NODES)
            and all(p.status.phase == "Running" and p.spec.containers[0].image == image for p in pods)
        )
        return pods if ok else None


@pytest.fixture
async def env(nats_url, nc):
    services = Services(["api", "scheduler", "daemonset", "gc"], nats_url, QUIET).start()
    store = Store(nc.jetstream())
    kubelet = HollowKubelet(store, nc)
    try:
        await wait_api(nc, services.task)
        for n in NODES:
            await store.create(hollow_node(n))
        kubelet.start()
        await kubelet.wait_synced()
        yield Env(nats_url, store, ApiClient(nc))
    finally:
        await kubelet.stop()
        await services.stop()


def versioned(image: str, cause: str | None = None, **spec: Any) -> dict[str, Any]:
    m = ds_manifest("agent", image=image)
    if cause:
        m["metadata"]["annotations"] = {"kubernetes.io/change-cause": cause}
    m["spec"].update(spec)
    return m


async def test_two_templates_make_two_revisions_history_lists_them_and_undo_rolls_back(env):
    await env.api.apply(versioned("agent:1"))
    await wait_for(lambda: env.images_everywhere("agent:1"), 20, "agent:1 on every node")
    code, out = await env.kyb("rollout", "status", "ds/agent", "--timeout", "30")
    assert code == 0 and 'daemon set "agent" successfully rolled out' in out, out

    await env.api.apply(versioned("agent:2", cause="image agent:2"))
    code, out = await env.kyb("rollout", "status", "daemonset/agent", "--timeout", "30s")
    assert code == 0 and out.strip().endswith('daemon set "agent" successfully rolled out'), out
    pods = await wait_for(lambda: env.images_everywhere("agent:2"), 20, "agent:2 on every node")

    first, second = revs = await env.revisions()
    ds = await env.api.get("daemonsets", "default", "agent")
    assert [r["revision"] for r in revs] == [1, 2]
    for r in revs:
        (ref,) = r["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["controller"]) == ("DaemonSet", ds["metadata"]["uid"], True)
        assert r["metadata"]["name"] == f"agent-{r['metadata']['labels'][HASH_LABEL]}"
        assert r["metadata"]["labels"]["app"] == "agent"
    assert first["data"]["spec"]["template"]["spec"]["containers"][0]["image"] == "agent:1"
    assert same_template(second["data"]["spec"]["template"], ds["spec"]["template"])
    assert {p.metadata.labels[HASH_LABEL] for p in pods} == {second["metadata"]["labels"][HASH_LABEL]}
    assert ds["status"]["observedGeneration"] == ds["metadata"]["generation"]
    assert ds["status"]["updatedNumberScheduled"] == 2

    code, out = await env.kyb("rollout", "history", "ds/agent")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "daemonset.apps/agent" and lines[1].split() == ["REVISION", "CHANGE-CAUSE"]
    assert lines[2].split() == ["1", "<none>"] and lines[3].split(None, 1) == ["2", "image agent:2"]
    code, out = await env.kyb("rollout", "history", "ds/agent", "--revision", "1")
    assert code == 0 and "daemonset.apps/agent with revision #1" in out and "image: agent:1" in out, out
    code, out = await env.kyb("rollout", "history", "ds/agent", "--revision", "9")
    assert code == 1 and "unable to find the specified revision 9" in out

    code, out = await env.kyb("rollout", "undo", "ds/agent")
    assert code == 0 and "daemonset.apps/agent rolled back" in out, out
    code, out = await env.kyb("rollout", "status", "ds/agent", "--timeout", "30")
    assert code == 0 and 'daemon set "agent" successfully rolled out' in out, out
    pods = await wait_for(lambda: env.images_everywhere("agent:1"), 20, "back to agent:1 on every node")

    async def renumbered():
        revs = await env.revisions()
        return revs if [(r["metadata"]["name"], r["revision"]) for r in revs] == [
            (second["metadata"]["name"], 2), (first["metadata"]["name"], 3)] else None

    await wait_for(renumbered, 20, "the first template is revision 3, with no copy of it")
    assert {p.metadata.labels[HASH_LABEL] for p in pods} == {first["metadata"]["labels"][HASH_LABEL]}
    code, out = await env.kyb("rollout", "undo", "ds/agent", "--to-revision", "3")
    assert code == 0 and "skipped rollback (current template already matches revision 3)" in out, out
    code, out = await env.kyb("rollout", "undo", "ds/agent", "--to-revision", "7")
    assert code == 1 and "unable to find specified revision 7 in history" in out


async def test_restart_rolls_every_pod_and_status_without_watch_reports_once(env):
    await env.api.apply(versioned("agent:1"))
    before = {p.metadata.name for p in await wait_for(lambda: env.images_everywhere("agent:1"), 20, "pods")}
    code, out = await env.kyb("rollout", "restart", "ds/agent")
    assert code == 0 and out.strip() == "daemonset.apps/agent restarted", out
    code, out = await env.kyb("rollout", "status", "ds/agent", "--watch=false")
    assert code == 0 and len(out.strip().splitlines()) == 1, out

    async def replaced():
        pods = await env.images_everywhere("agent:1")
        return pods if pods and not before & {p.metadata.name for p in pods} else None

    pods = await wait_for(replaced, 30, "every pod replaced")
    assert all("kubectl.kubernetes.io/restartedAt" in p.metadata.annotations for p in pods)
    assert len(await env.revisions()) == 2
    code, out = await env.kyb("rollout", "pause", "ds/agent")
    assert code == 1 and 'daemonsets.apps "agent" pausing is not supported' in out, out


async def test_on_delete_daemonset_has_no_rollout_status(env):
    await env.api.apply(versioned("agent:1", updateStrategy={"type": "OnDelete"}))
    code, out = await env.kyb("rollout", "status", "ds/agent", "--timeout", "5")
    assert code == 1 and "rollout status is only available for RollingUpdate strategy type" in out, out


async def test_deleting_the_daemonset_removes_its_controller_revisions(env):
    await env.api.apply(versioned("agent:1"))
    await env.api.apply(versioned("agent:2"))
    await wait_for(lambda: env.images_everywhere("agent:2"), 30, "agent:2 on every node")
    await wait_for(lambda: _count(env, 2), 20, "two revisions")
    await env.api.delete("DaemonSet", "default", "agent")
    await wait_for(lambda: _count(env, 0), 20, "revisions collected with their DaemonSet")


async def _count(env: Env, n: int) -> bool:
    return len(await env.revisions()) == n
