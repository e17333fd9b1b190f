"""Properties of the pure CronJob plan over simulated time: Jobs start on schedule, finish at
random, and the controller may be away for any length of time."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from schemas import cron
from schemas.batch import CronJob, Job, JobStatus
from schemas.defaults import apply_defaults
from schemas.helpers import format_time
from schemas.meta import Condition
from services.cronjob import reconcile

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def cronjob(schedule: str = "* * * * *", **spec) -> CronJob:
    raw = {"apiVersion": "batch/v1", "kind": "CronJob",
           "metadata": {"name": "hello", "namespace": "default", "uid": "cj-uid", "creationTimestamp": format_time(T0)},
           "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {
               "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}, **spec}}
    return apply_defaults(msgspec.convert(raw, CronJob))


def done(job: Job, kind: str, at: dt.datetime) -> Job:
    cond = Condition(type=kind, status="True")
    return replace(job, status=JobStatus(conditions=[cond], startTime=job.metadata.creationTimestamp,
                                         completionTime=format_time(at) if kind == "Complete" else None))


class Sim:
    def __init__(self, cj: CronJob) -> None:
        self.cj = cj
        self.jobs: dict[str, Job] = {}

    def step(self, now: dt.datetime) -> reconcile.Plan:
        plan = reconcile.plan(self.cj, list(self.jobs.values()), now)
        for n in plan.delete:
            self.jobs.pop(n, None)
        status = plan.status
        if plan.create is not None:
            job = replace(plan.create, metadata=replace(plan.create.metadata, uid=plan.create.metadata.name,
                                                         creationTimestamp=format_time(now)))
            self.jobs[job.metadata.name] = job
            status = replace(status, active=[*status.active, reconcile.reference(job)])
        self.cj = replace(self.cj, status=status)
        return plan


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(1, 400), st.sampled_from([None, "Complete", "Failed"])), max_size=40),
       policy=st.sampled_from(["Forbid", "Replace"]))
def test_never_more_than_one_job_active_under_forbid_or_replace(steps, policy):
    sim = Sim(cronjob("*/2 * * * *", concurrencyPolicy=policy))
    now = T0
    for seconds, ending in steps:
        now += dt.timedelta(seconds=seconds)
        sim.step(now)
        running = [j for j in sim.jobs.values() if reconcile.finished(j) is None]
        assert len(running) <= 1
        assert len(sim.cj.status.active) <= 1
        if ending is not None and running:
            sim.jobs[running[0].metadata.name] = done(running[0], ending, now)


@settings(max_examples=150, deadline=None)
@given(away=st.integers(0, 60 * 24 * 400), schedule=st.sampled_from(["* * * * *", "*/7 * * * *", "0 * * * *",
                                                                        "0 3 * * MON,FRI", "@daily", "@monthly"]),
       deadline_=st.one_of(st.none(), st.integers(0, 3600)))
def test_missed_schedules_never_create_more_than_one_job_per_sync(away, schedule, deadline_):
    cj = cronjob(schedule) if deadline_ is None else cronjob(schedule, startingDeadlineSeconds=deadline_)
    now = T0 + dt.timedelta(minutes=away, seconds=30)
    plan = reconcile.plan(cj, [], now)
    sched = cron.parse(schedule)
    times = []
    t = sched.next(T0)
    while t is not None and t <= now and len(times) <= 101:
        times.append(t)
        t = sched.next(t)
    if plan.create is not None:
        stamp = plan.create.metadata.annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        scheduled = dt.datetime.fromisoformat(stamp)
        assert scheduled <= now and (sched.next(scheduled) is None or sched.next(scheduled) > now)
        assert plan.create.metadata.name == f"hello-{int(scheduled.timestamp()) // 60}"
    reasons = [e.reason for e in plan.events]
    if deadline_ is None:
        assert (plan.create is not None) == bool(times)
        assert ("TooManyMissedTimes" in reasons) == (len(times) > 100)


def test_allow_runs_side_by_side_and_history_limits():
    sim = Sim(cronjob(successfulJobsHistoryLimit=2, failedJobsHistoryLimit=1))
    now = T0
    for _ in range(6):
        now += dt.timedelta(minutes=1)
        sim.step(now)
    assert len([j for j in sim.jobs.values() if reconcile.finished(j) is None]) == 6
    for i, name in enumerate(sorted(sim.jobs)):
        sim.jobs[name] = done(sim.jobs[name], "Complete" if i % 2 else "Failed", now)
    names = sorted(sim.jobs)  # in start order; even ones Failed, odd ones Complete
    plan = sim.step(now)
    assert sorted(plan.delete) == sorted([names[0], names[2], names[1]])
    assert sorted(sim.jobs) == [names[3], names[4], names[5]] and sim.cj.status.active == []
    assert sim.cj.status.lastSuccessfulTime == format_time(now)


@pytest.mark.parametrize(("field", "value"), [
    pytest.param("suspend", True, id="suspend"),
    pytest.param("startingDeadlineSeconds", 10, id="deadline-passed"),  # 01:00 was 40 s ago
])
def test_suspend_and_a_passed_starting_deadline_start_nothing(field, value):
    plan = reconcile.plan(cronjob(**{field: value}), [], T0 + dt.timedelta(minutes=1, seconds=40))
    assert plan.create is None
    assert reconcile.plan(cronjob(startingDeadlineSeconds=60), [], T0 + dt.timedelta(minutes=1, seconds=40)).create


def test_time_zone_schedules_in_that_zone():
    cj = cronjob("0 9 * * *", timeZone="Asia/Tokyo")
    plan = reconcile.plan(cj, [], dt.datetime(2024, 1, 2, 0, 0, 30, tzinfo=dt.UTC))
    assert plan.create is not None
    assert plan.create.metadata.annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"] == \
        "2024-01-02T09:00:00+09:00"
