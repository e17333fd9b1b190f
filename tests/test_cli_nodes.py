"""kyb cordon / uncordon / drain: the drain filters as properties, then the commands against a
real nats-server with the api and the scheduler running and a small kubelet stand-in that runs
bound pods (marks them Running) and finishes their graceful deletion."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, TypeVar

import msgspec
import nats
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from kyb import errors
from kyb.cli.drainplan import (
    ERR_DAEMONSET,
    ERR_LOCAL_STORAGE,
    ERR_UNREPLICATED,
    MIRROR_ANNOTATION,
    DrainOptions,
    plan_drain,
)
from kyb.cli.main import cli
from kyb.cli.nodes import Duration
from kyb.serve import run_services
from kyb.store import Store
from schemas.core import Node, NodeCondition, NodeStatus
from schemas.meta import ObjectMeta, OwnerReference
from schemas.pod import Container, EmptyDirVolumeSource, Pod, PodCondition, PodSpec, PodStatus, Volume
from tests.cluster import wait_for

T = TypeVar("T")

# -- the drain filters ------------------------------------------------------------------------------


def pod_dict(name: str, owner: str | None, *, emptydir: bool = False, mirror: bool = False, phase: str = "Running") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "uid": f"uid-{name}"}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner, "name": "o", "uid": "o-uid", "controller": True}]
    if mirror:
        meta["annotations"] = {MIRROR_ANNOTATION: "x"}
    spec: dict[str, Any] = {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}
    if emptydir:
        spec["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    return {"metadata": meta, "spec": spec, "status": {"phase": phase}}


pods = st.lists(
    st.builds(
        lambda i, owner, emptydir, mirror, phase: pod_dict(f"p{i}", owner, emptydir=emptydir, mirror=mirror, phase=phase),
        st.integers(0, 10_000),
        st.sampled_from([None, "ReplicaSet", "DaemonSet", "Job", "ReplicationController"]),
        st.booleans(),
        st.booleans(),
        st.sampled_from(["Pending", "Running", "Succeeded", "Failed"]),
    ),
    max_size=8,
    unique_by=lambda p: p["metadata"]["name"],
)
options = st.builds(DrainOptions, ignore_daemonsets=st.booleans(), delete_emptydir_data=st.booleans(), force=st.booleans())


@given(ps=pods, opts=options)
def test_drain_never_evicts_daemonset_or_mirror_pods(ps, opts):
    plan = plan_drain(ps, opts)
    for p in plan.evict:
        assert "annotations" not in p["metadata"]
        assert not any(r["kind"] == "DaemonSet" for r in p["metadata"].get("ownerReferences", []))
    assert len(plan.evict) + len(plan.skipped) == len(ps)


@given(ps=pods, opts=options)
def test_drain_refuses_what_kubectl_refuses(ps, opts):
    plan = plan_drain(ps, opts)
    running = [p for p in ps if p["status"]["phase"] not in ("Succeeded", "Failed") and "annotations" not in p["metadata"]]
    owner = lambda p: next((r["kind"] for r in p["metadata"].get("ownerReferences", [])), None)  # noqa: E731
    assert (ERR_DAEMONSET in plan.errors) == (not opts.ignore_daemonsets and any(owner(p) == "DaemonSet" for p in ps if "annotations" not in p["metadata"]))
    unmanaged = [p for p in running if owner(p) is None]
    assert (ERR_UNREPLICATED in plan.errors) == (not opts.force and bool(unmanaged))
    local = [p for p in running if owner(p) != "DaemonSet" and "volumes" in p["spec"]]
    assert (ERR_LOCAL_STORAGE in plan.errors) == (not opts.delete_emptydir_data and bool(local))


def test_drain_error_names_the_pods():
    plan = plan_drain([pod_dict("bare", None), pod_dict("ds", "DaemonSet"), pod_dict("web", "ReplicaSet")], DrainOptions())
    assert sorted(plan.error_lines()) == sorted([
        f"{ERR_DAEMONSET}: default/ds",
        f"{ERR_UNREPLICATED}: default/bare",
    ])
    assert [p["metadata"]["name"] for p in plan.evict] == ["web"]


@pytest.mark.parametrize(
    "text, seconds",
    [pytest.param("0", 0, id="zero"), pytest.param("90s", 90, id="seconds"), pytest.param("1h30m", 5400, id="compound"), pytest.param("2.5", 2.5, id="float")],
)
def test_duration(text, seconds):
    assert Duration().convert(text, None, None) == seconds


# -- against a cluster ------------------------------------------------------------------------------


async def stand_in_kubelet(store: Store, nodes: set[str], stop: asyncio.Event) -> None:
    """Marks bound pods Running and Ready; removes pods marked for deletion (their containers
    'stopped')."""
    while not stop.is_set():
        for p in await store.list("Pod"):
            if p.spec.nodeName not in nodes:
                continue
            with contextlib.suppress(errors.NotFound, errors.Conflict):
                if p.metadata.deletionTimestamp:
                    await store.delete("Pod", p.metadata.namespace, p.metadata.name, grace_period_seconds=0)
                elif p.status.phase != "Running":
                    running = msgspec.structs.replace(
                        p, status=PodStatus(phase="Running", conditions=[PodCondition(type="Ready", status="True")])
                    )
                    await store.update(running)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


def node(name: str) -> Node:
    res = {"cpu": "4", "memory": "8Gi", "pods": "110"}
    return Node(
        metadata=ObjectMeta(name=name, labels={"kubernetes.io/hostname": name}),
        status=NodeStatus(capacity=res, allocatable=res, conditions=[NodeCondition(type="Ready", status="True")]),
    )


def bound_pod(name: str, node_name: str, owner: str | None = None, emptydir: bool = False) -> Pod:
    refs = [OwnerReference(apiVersion="apps/v1", kind=owner, name="o", uid="o-uid", controller=True)] if owner else []
    return Pod(
        metadata=ObjectMeta(name=name, namespace="default", ownerReferences=refs),
        spec=PodSpec(
            containers=[Container(name="c", image="busybox")],
            nodeName=node_name,
            volumes=[Volume(name="scratch", emptyDir=EmptyDirVolumeSource())] if emptydir else [],
        ),
    )


@pytest.fixture
async def cluster(nats_url):
    nc = await nats.connect(nats_url)
    store = Store(nc.jetstream())
    await store.ensure_buckets()
    for name in ("n1", "n2"):
        await store.create(node(name))
    stop = asyncio.Event()
    services = asyncio.create_task(run_services(["api", "scheduler"], nats_url, {"configure_logging": False}, stop))
    kubelet = asyncio.create_task(stand_in_kubelet(store, {"n1", "n2"}, stop))

    async def api_up() -> bool:
        try:
            await nc.request("kyb.api.get", b'{"kind":"nodes","name":"n1"}', timeout=1)
        except Exception:
            return False
        return True

    await wait_for(api_up, 20.0, "api answering", ignoring=())
    yield store, nats_url
    stop.set()
    await asyncio.wait_for(asyncio.gather(services, kubelet), 30)
    await nc.close()


async def kyb(url: str, *args: str) -> Any:
    """Run the kyb command in a thread (it runs its own event loop), as a user would."""
    return await asyncio.to_thread(CliRunner().invoke, cli, ["--nats", url, *args])


async def test_cordon_keeps_new_pods_pending_and_uncordon_lets_them_bind(cluster):
    store, url = cluster
    await store.mutate("Node", None, "n2", lambda n: msgspec.structs.replace(n, spec=msgspec.structs.replace(n.spec, unschedulable=True)))
    result = await kyb(url, "cordon", "n1")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "node/n1 cordoned"
    assert (await store.get("Node", None, "n1")).spec.unschedulable
    again = await kyb(url, "cordon", "n1")
    assert again.output.strip() == "node/n1 already cordoned"

    await store.create(Pod(metadata=ObjectMeta(name="newcomer", namespace="default"), spec=PodSpec(containers=[Container(name="c", image="busybox")])))

    async def unschedulable() -> Pod | None:
        p = await store.get("Pod", "default", "newcomer")
        scheduled = next((c for c in p.status.conditions if c.type == "PodScheduled"), None)
        return p if scheduled is not None and scheduled.status == "False" else None

    pending = await wait_for(unschedulable, 20.0, "scheduler reporting the pod unschedulable", ignoring=())
    assert pending.spec.nodeName in ("", None)
    assert pending.status.phase == "Pending"

    result = await kyb(url, "uncordon", "n1")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "node/n1 uncordoned"

    async def bound() -> Pod | None:
        p = await store.get("Pod", "default", "newcomer")
        return p if p.spec.nodeName == "n1" else None

    await wait_for(bound, 20.0, "pod bound after uncordon", ignoring=())


async def test_drain_evicts_managed_pods_and_leaves_daemonset_pods(cluster):
    store, url = cluster
    for p in (
        bound_pod("web-1", "n1", "ReplicaSet"),
        bound_pod("cache-1", "n1", "ReplicaSet", emptydir=True),
        bound_pod("agent-n1", "n1", "DaemonSet"),
        bound_pod("bare", "n1"),
        bound_pod("web-2", "n2", "ReplicaSet"),
    ):
        await store.create(p)

    async def all_running() -> bool:
        return all(p.status.phase == "Running" for p in await store.list("Pod"))

    await wait_for(all_running, 20.0, "pods running", ignoring=())

    refused = await kyb(url, "drain", "n1")
    assert refused.exit_code == 1
    assert "node/n1 cordoned" in refused.output
    assert 'unable to drain node "n1"' in refused.output
    assert f"{ERR_DAEMONSET}: default/agent-n1" in refused.output
    assert f"{ERR_UNREPLICATED}: default/bare" in refused.output
    assert f"{ERR_LOCAL_STORAGE}: default/cache-1" in refused.output
    assert len(await store.list("Pod")) == 5, "a refused drain evicted something"

    result = await kyb(url, "drain", "n1", "--ignore-daemonsets", "--force", "--delete-emptydir-data", "--timeout", "30s")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "node/n1 already cordoned"
    for name in ("web-1", "cache-1", "bare"):
        assert f"evicting pod default/{name}" in lines
        assert f"pod/{name} evicted" in lines
    assert "Warning: ignoring DaemonSet-managed Pods: default/agent-n1" in lines
    assert lines[-1] == "node/n1 drained"
    assert sorted(p.metadata.name for p in await store.list("Pod")) == ["agent-n1", "web-2"]
    assert (await store.get("Node", None, "n1")).spec.unschedulable


async def test_cordon_of_a_missing_node_fails_like_kubectl(cluster):
    _, url = cluster
    result = await kyb(url, "cordon", "nope")
    assert result.exit_code == 1
    assert 'nodes "nope" not found' in result.output
