"""The CronJob controller on a real nats-server with the api, the job controller and gc, pods
finished by a hollow kubelet, and a clock the test moves forward a minute at a time (nothing
waits for real minutes). The Kubernetes documentation's ``hello`` CronJob is applied unchanged."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from pathlib import Path

import pytest
import yaml

from kyb.cli.streams import events_filter, read_events
from kyb.client import ApiClient
from kyb.store import Store
from services.cronjob.service import CronJobController
from tests.cluster import QUIET, HollowKubelet, Services, wait_api, wait_for

EXAMPLE = Path(__file__).parent / "manifests" / "cronjob-hello.yaml"


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
async def env(nats_url, nc):
    base = Services(["api", "job", "gc"], nats_url, QUIET).start()
    store = Store(nc.jetstream())
    await wait_api(nc)
    kubelet = HollowKubelet(store, nc, node="hollow-0",
                            finish=lambda p: None if p.metadata.labels.get("hold") else "Succeeded")
    kubelet.start()
    clock = Clock()
    cc = CronJobController(nc, store, clock=clock)
    await cc.start()
    stop = asyncio.Event()
    task = asyncio.create_task(cc.controller.run(stop))
    try:
        yield store, ApiClient(nc), clock, cc, kubelet
    finally:
        stop.set()
        await task
        await cc.stop()
        await kubelet.stop()
        await base.stop()


def tick(env_, minutes: float) -> None:
    _, _, clock, cc, _ = env_
    clock.now += dt.timedelta(minutes=minutes)
    cc.controller.resync()


async def jobs(api: ApiClient) -> dict[str, dict]:
    return {j["metadata"]["name"]: j for j in await api.list("jobs", "default")}


async def test_documentation_example_runs_every_minute_and_keeps_three(env, nc, nats_url):
    store, api, clock, cc, kubelet = env
    await api.apply(yaml.safe_load(EXAMPLE.read_text()))
    cj = await api.get("cronjobs", "default", "hello")
    assert cj["spec"]["concurrencyPolicy"] == "Allow" and cj["spec"]["successfulJobsHistoryLimit"] == 3
    for _ in range(5):
        tick(env, 1)
        want = int(clock.now.timestamp()) // 60

        async def started(want=want) -> dict | None:
            return (await jobs(api)).get(f"hello-{want}")

        job = await wait_for(started, 15, f"job of minute {want}")
        stamp = job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        assert dt.datetime.fromisoformat(stamp).timestamp() == want * 60
        assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"

        async def complete(name=job["metadata"]["name"]) -> bool:
            j = (await jobs(api)).get(name) or {}
            return any(c["type"] == "Complete" for c in (j.get("status") or {}).get("conditions") or [])

        await wait_for(complete, 15, "job complete")
        cc.controller.resync()

    async def settled() -> dict | None:
        cj = await api.get("cronjobs", "default", "hello")
        st = cj.get("status") or {}
        return cj if not st.get("active") and st.get("lastSuccessfulTime") and len(await jobs(api)) == 3 else None

    cj = await wait_for(settled, 15, "three successful jobs kept, none active")
    assert cj["status"]["lastScheduleTime"] == dt.datetime.fromtimestamp(
        int(clock.now.timestamp()) // 60 * 60, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    # kyb create job --from=cronjob/hello: the template, controlled by the CronJob
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from kyb.cli.main import main; main()", "--nats", nats_url,
        "create", "job", "manual", "--from=cronjob/hello", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 0 and out.decode().strip() == "job.batch/manual created", out
    manual = await api.get("jobs", "default", "manual")
    assert manual["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert manual["metadata"]["ownerReferences"][0]["name"] == "hello"


async def test_forbid_skips_while_running_and_a_long_absence_starts_one_job(env, nc):
    store, api, clock, cc, kubelet = env
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["name"] = "slow"
    doc["spec"]["concurrencyPolicy"] = "Forbid"
    doc["spec"]["jobTemplate"]["spec"]["template"]["metadata"] = {"labels": {"hold": "yes"}}  # pods run on
    await api.apply(doc)
    tick(env, 1)
    first = await wait_for(lambda: _only(api, "slow-"), 15, "first job")
    for _ in range(3):
        tick(env, 1)
        await wait_for(lambda: _event(nc, "slow", "JobAlreadyActive"), 15, "forbidden start reported")
    assert len([n for n in await jobs(api) if n.startswith("slow-")]) == 1
    # the job ends; three hours pass with the controller away: one job, for the latest minute
    await api.delete("jobs", "default", first)
    tick(env, 180)
    latest = int(clock.now.timestamp()) // 60
    await wait_for(lambda: _only(api, "slow-", f"slow-{latest}"), 15, "one job for the latest minute")
    await wait_for(lambda: _event(nc, "slow", "TooManyMissedTimes"), 15, "too many missed")


async def _only(api: ApiClient, prefix: str, name: str | None = None) -> str | None:
    names = [n for n, j in (await jobs(api)).items() if n.startswith(prefix) and not j["metadata"].get("deletionTimestamp")]
    if len(names) == 1 and (name is None or names[0] == name):
        return names[0]
    return None


async def _event(nc, name: str, reason: str) -> bool:
    return any(e["reason"] == reason for e in await read_events(nc, events_filter("default", "CronJob", name)))
