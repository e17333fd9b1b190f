"""The Job controller on a real nats-server with the api and scheduler services, hollow nodes
and the hollow kubelet of tests/cluster.py finishing pods as each test decides; and once on the
real Docker engine with the real kubelet."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kyb import errors
from kyb.client import ApiClient
from kyb.store import Store
from schemas.pod import Pod
from services.job.reconcile import FINALIZER, INDEX_KEY
from tests.cluster import (
    QUIET,
    Finish,
    HollowKubelet,
    Services,
    docker_kubelet_options,
    hollow_node,
    remove_containers,
    wait_api,
    wait_for,
)

FAST = {"job_backoff_seconds": 0.3, "job_backoff_cap_seconds": 1.0}


def job_manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "work", "image": "busybox"}]}},
            **spec,
        },
    }


class Cluster:
    def __init__(self, nc: Any, store: Store, url: str) -> None:
        self.nc, self.store, self.url = nc, store, url
        self.api = ApiClient(nc)

    def kubelet(self, finish: Finish | None = None) -> HollowKubelet:
        """A hollow kubelet for every node, ending running pods as ``finish`` says (never by default)."""
        return HollowKubelet(self.store, self.nc, finish=finish).start()

    async def job(self, name: str) -> Any:
        return await self.store.get("Job", "default", name)

    async def pods_of(self, name: str) -> list[Pod]:
        return [p for p in await self.store.list("pods", "default") if p.metadata.labels.get("job-name") == name]

    async def wait_condition(self, name: str, type_: str, timeout: float = 20.0) -> Any:
        async def done():
            job = await self.job(name)
            return job if any(c.type == type_ and c.status == "True" for c in job.status.conditions) else None

        return await wait_for(done, timeout, f"job {name} {type_}")


@pytest.fixture
async def cluster(nats_url, nc):
    base = Services(["api", "scheduler"], nats_url, QUIET).start()
    store = Store(nc.jetstream())
    await wait_api(nc)
    for i in range(2):
        await store.create(hollow_node(f"n{i}"))
    jobs = Services(["job"], nats_url, {**QUIET, **FAST}).start()
    c = Cluster(nc, store, nats_url)
    c.jobs = jobs  # type: ignore[attr-defined]
    try:
        yield c
    finally:
        await jobs.stop()
        await base.stop()


async def test_completions_with_parallelism_run_two_at_a_time_and_complete(cluster: Cluster):
    running_at_once = 0

    def decide(pod: Pod) -> str | None:
        return "Succeeded"

    kubelet = cluster.kubelet(decide)
    try:
        await cluster.api.apply(job_manifest("pi", completions=4, parallelism=2))

        async def observe():
            nonlocal running_at_once
            pods = await cluster.pods_of("pi")
            running_at_once = max(running_at_once, sum(1 for p in pods if p.status.phase in ("Pending", "Running")))
            job = await cluster.job("pi")
            return job if any(c.type == "Complete" for c in job.status.conditions) else None

        job = await wait_for(observe, 30, "job pi complete")
    finally:
        await kubelet.stop()
    assert (job.status.succeeded, job.status.failed, job.status.active) == (4, 0, 0)
    assert job.status.completionTime and job.status.startTime
    assert job.spec.selector.matchLabels == {"batch.kubernetes.io/controller-uid": job.metadata.uid}
    assert 1 <= running_at_once <= 2, f"{running_at_once} pods ran at once with parallelism 2"
    pods = await cluster.pods_of("pi")
    assert len(pods) == 4 and all(p.status.phase == "Succeeded" for p in pods)
    assert not any(FINALIZER in p.metadata.finalizers for p in pods), "tracking finalizer left on a counted pod"


async def test_indexed_job_retries_a_failed_index_after_back_off(cluster: Cluster):
    failed_once: set[str] = set()

    def decide(pod: Pod) -> str | None:
        index = pod.metadata.annotations[INDEX_KEY]
        if index == "1" and not failed_once:
            failed_once.add(pod.metadata.name)
            return "Failed"
        return "Succeeded"

    kubelet = cluster.kubelet(decide)
    try:
        await cluster.api.apply(job_manifest("idx", completions=3, parallelism=3, completionMode="Indexed", backoffLimit=2))
        job = await cluster.wait_condition("idx", "Complete", 30)
    finally:
        await kubelet.stop()
    assert job.status.completedIndexes == "0-2"
    assert (job.status.succeeded, job.status.failed) == (3, 1)
    pods = await cluster.pods_of("idx")
    assert sorted(p.metadata.annotations[INDEX_KEY] for p in pods) == ["0", "1", "1", "2"]
    assert {p.spec.hostname for p in pods} == {"idx-0", "idx-1", "idx-2"}


async def test_backoff_limit_fails_the_job(cluster: Cluster):
    kubelet = cluster.kubelet(lambda pod: "Failed")
    try:
        await cluster.api.apply(job_manifest("bad", completions=1, backoffLimit=1))
        job = await cluster.wait_condition("bad", "Failed", 30)
    finally:
        await kubelet.stop()
    cond = next(c for c in job.status.conditions if c.type == "Failed")
    assert cond.reason == "BackoffLimitExceeded"
    assert job.status.failed == 2 and not job.status.completionTime


async def test_deadline_fails_the_job_and_deletes_its_running_pods(cluster: Cluster):
    kubelet = cluster.kubelet()  # pods run forever
    try:
        await cluster.api.apply(job_manifest("slow", completions=2, parallelism=2, activeDeadlineSeconds=2))
        job = await cluster.wait_condition("slow", "Failed", 30)
        assert next(c for c in job.status.conditions if c.type == "Failed").reason == "DeadlineExceeded"
        await wait_for(lambda: _none_left(cluster, "slow"), 20, "pods of slow deleted")
        job = await wait_for(lambda: _counted(cluster, "slow", 2), 20, "deleted pods counted as failed")
    finally:
        await kubelet.stop()
    assert job.status.active == 0


async def _none_left(cluster: Cluster, name: str) -> bool:
    return not await cluster.pods_of(name)


async def _counted(cluster: Cluster, name: str, failed: int) -> Any:
    job = await cluster.job(name)
    return job if job.status.failed == failed else None


async def test_restarted_controller_converges_without_extra_pods(cluster: Cluster):
    release = asyncio.Event()
    kubelet = cluster.kubelet(lambda pod: "Succeeded" if release.is_set() else None)
    try:
        await cluster.api.apply(job_manifest("steady", completions=3, parallelism=2))

        async def two_running():
            pods = await cluster.pods_of("steady")
            return len(pods) == 2 and all(p.status.phase == "Running" for p in pods)

        await wait_for(two_running, 20, "two pods running")
        await cluster.jobs.stop()  # type: ignore[attr-defined]
        cluster.jobs.start()  # type: ignore[attr-defined]
        # the new controller reconciles the same pods; give it the chance to (wrongly) add one
        job = await wait_for(lambda: _synced(cluster, "steady"), 20, "restarted controller reports")
        assert len(await cluster.pods_of("steady")) == 2, "restart created an extra pod"
        release.set()
        kubelet.resync()
        job = await cluster.wait_condition("steady", "Complete", 30)
    finally:
        await kubelet.stop()
    assert job.status.succeeded == 3
    assert len(await cluster.pods_of("steady")) == 3, "more pods than completions were created"


async def _synced(cluster: Cluster, name: str) -> Any:
    """The Job as reported by a controller that has run since the restart: ready=2, active=2."""
    job = await cluster.job(name)
    return job if (job.status.active, job.status.ready) == (2, 2) else None


async def test_ttl_after_finished_deletes_the_job_and_its_pods(cluster: Cluster):
    kubelet = cluster.kubelet(lambda pod: "Succeeded")
    try:
        await cluster.api.apply(job_manifest("brief", completions=1, ttlSecondsAfterFinished=1))
        await cluster.wait_condition("brief", "Complete", 20)

        async def gone():
            try:
                await cluster.job("brief")
            except errors.NotFound:
                return not await cluster.pods_of("brief")
            return False

        await wait_for(gone, 20, "job and pods deleted after the TTL")
    finally:
        await kubelet.stop()


async def test_suspended_job_creates_nothing_until_resumed(cluster: Cluster):
    kubelet = cluster.kubelet()
    try:
        await cluster.api.apply(job_manifest("later", completions=1, suspend=True))
        job = await cluster.wait_condition("later", "Suspended", 20)
        assert not await cluster.pods_of("later") and job.status.startTime is None
        await cluster.api.apply(job_manifest("later", completions=1, suspend=False))

        async def one_pod():
            return len(await cluster.pods_of("later")) == 1

        await wait_for(one_pod, 20, "pod created after resume")
        job = await cluster.job("later")
        assert next(c for c in job.status.conditions if c.type == "Suspended").status == "False"
    finally:
        await kubelet.stop()


# --- on the real Docker engine ----------------------------------------------------------------

from tests.images import busybox_image  # noqa: E402,F401


async def _docker_cluster(nats_url, nc, tmp_path, node: str, cidr: str) -> tuple[Services, Services, Cluster]:
    """api, scheduler and job, and a Docker kubelet for ``node`` with pod range ``cidr``, once the api answers."""
    base = Services(["api", "scheduler", "job"], nats_url, QUIET).start()
    kubelet = Services(["kubelet"], nats_url, docker_kubelet_options(node, tmp_path, cidr)).start()
    try:
        await wait_api(nc)
    except BaseException:
        await kubelet.stop()
        await base.stop()
        raise
    return base, kubelet, Cluster(nc, Store(nc.jetstream()), nats_url)


@pytest.mark.docker
async def test_busybox_job_completes_on_docker(nats_url, nc, tmp_path, busybox_image):  # noqa: F811
    node = "jobnode"
    base, kubelet, c = await _docker_cluster(nats_url, nc, tmp_path, node, "127.78.0.0/16")
    try:
        manifest = job_manifest("hello", completions=3, parallelism=2)
        manifest["spec"]["template"]["spec"]["containers"] = [
            {"name": "work", "image": busybox_image, "imagePullPolicy": "Never", "command": ["sh", "-c", "exit 0"]}
        ]
        manifest["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 1
        await c.api.apply(manifest)
        job = await c.wait_condition("hello", "Complete", 90)
        assert job.status.succeeded == 3 and job.status.failed == 0
        pods = await c.pods_of("hello")
        assert len(pods) == 3 and all(p.status.phase == "Succeeded" and p.spec.nodeName == node for p in pods)
    finally:
        await kubelet.stop()
        await base.stop()
        await remove_containers(node)


@pytest.mark.docker
async def test_job_with_a_sidecar_completes_on_docker(nats_url, nc, tmp_path, busybox_image):  # noqa: F811
    """The sidecar runs forever (and ignores SIGTERM); the Job completes when its main container does."""
    node = "sidecarnode"
    base, kubelet, c = await _docker_cluster(nats_url, nc, tmp_path, node, "127.79.0.0/16")
    try:
        manifest = job_manifest("with-sidecar", completions=1)
        spec = manifest["spec"]["template"]["spec"]
        spec["initContainers"] = [{"name": "logger", "image": busybox_image, "imagePullPolicy": "Never",
                                   "restartPolicy": "Always", "command": ["sh", "-c", "while true; do sleep 1; done"]}]
        spec["containers"] = [{"name": "work", "image": busybox_image, "imagePullPolicy": "Never",
                               "command": ["sh", "-c", "sleep 0.5"]}]
        spec["terminationGracePeriodSeconds"] = 1
        await c.api.apply(manifest)
        job = await c.wait_condition("with-sidecar", "Complete", 60)
        assert job.status.succeeded == 1 and job.status.failed == 0
        [pod] = await c.pods_of("with-sidecar")
        assert pod.status.phase == "Succeeded"
        logger = pod.status.initContainerStatuses[0]
        assert logger.name == "logger" and logger.restartCount == 0
    finally:
        await kubelet.stop()
        await base.stop()
        await remove_containers(node)
