"""What the CronJob controller should do next, as a pure function of the CronJob, its Jobs and
the time (Kubernetes' cronjob controller v2, ``syncCronJob``).

- ``status.active`` lists the CronJob's unfinished Jobs; a finished one leaves it (event
  ``SawCompletedJob``) and a successful one moves ``lastSuccessfulTime``; a listed Job that is
  gone (``missing``, confirmed by the shell) leaves it too (``MissingJob``).
- The scheduled time to act on is the latest one not after ``now`` and after
  ``lastScheduleTime`` (or the creation time), no earlier than ``startingDeadlineSeconds`` ago.
  More than 100 missed times give a ``TooManyMissedTimes`` warning and only the latest starts:
  one Job per sync at most, never a storm.
- A time past its starting deadline is skipped (``MissSchedule``); ``suspend`` starts nothing.
- ``concurrencyPolicy``: Allow starts beside running Jobs; Forbid skips while one runs
  (``JobAlreadyActive``; the time is tried again while within its deadline, as in Kubernetes);
  Replace deletes the running ones first.
- The Job is ``<cronjob>-<scheduled time in minutes since the epoch>``, annotated
  ``batch.kubernetes.io/cronjob-scheduled-timestamp`` (RFC 3339 in the schedule's zone),
  controlled by the CronJob, its labels and annotations the template's.
- Finished Jobs beyond ``successfulJobsHistoryLimit`` / ``failedJobsHistoryLimit`` are deleted,
  oldest first.
- ``requeue_after``: seconds until the next scheduled time.
"""

from __future__ import annotations

import datetime as dt

import msgspec
from msgspec.structs import replace

from schemas import cron
from schemas.batch import CRONJOB_SCHEDULED_TIMESTAMP_ANNOTATION, CronJob, CronJobStatus, Job
from schemas.defaults import apply_defaults
from schemas.helpers import format_time, owner_reference, parse_time
from schemas.meta import ObjectMeta, ObjectReference

MAX_MISSED = 100


class Event(msgspec.Struct, frozen=True):
    reason: str
    message: str
    type: str = "Normal"


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    status: CronJobStatus
    create: Job | None = None
    delete: list[str] = []  # Jobs to delete (Replace, history limits)
    events: list[Event] = []
    requeue_after: float | None = None


def finished(job: Job) -> str | None:
    """"Complete" or "Failed" once the Job has finished, else None."""
    for c in job.status.conditions:
        if c.type in ("Complete", "Failed") and c.status == "True":
            return c.type
    return None


def job_name(cj: CronJob, scheduled: dt.datetime) -> str:
    return f"{cj.metadata.name}-{int(scheduled.timestamp()) // 60}"


def schedule_of(cj: CronJob) -> cron.Schedule:
    return cron.parse(cj.spec.schedule, cj.spec.timeZone)


def missed_times(cj: CronJob, sched: cron.Schedule, now: dt.datetime) -> tuple[dt.datetime | None, int]:
    """(the latest scheduled time to act on, how many were missed: up to MAX_MISSED + 1)."""
    earliest = parse_time(cj.status.lastScheduleTime or cj.metadata.creationTimestamp or format_time(now))
    if cj.spec.startingDeadlineSeconds is not None:
        earliest = max(earliest, now - dt.timedelta(seconds=cj.spec.startingDeadlineSeconds))
    latest: dt.datetime | None = None
    count = 0
    t = sched.next(earliest)
    while t is not None and t <= now:
        latest, count = t, count + 1
        if count > MAX_MISSED:
            break
        t = sched.next(t)
    if count > MAX_MISSED:  # jump to the latest without walking every missed time
        window = dt.timedelta(minutes=1)
        while True:
            start = max(latest or earliest, now - window)
            t = sched.next(start)
            if t is not None and t <= now:
                while (n := sched.next(t)) is not None and n <= now:
                    t = n
                latest = t
                break
            if start <= (latest or earliest):
                break
            window *= 4
    return latest, count


def new_job(cj: CronJob, scheduled: dt.datetime, sched: cron.Schedule) -> Job:
    tmpl = cj.spec.jobTemplate
    annotations = {**tmpl.metadata.annotations,
                   CRONJOB_SCHEDULED_TIMESTAMP_ANNOTATION: scheduled.astimezone(sched.zone).isoformat()}
    meta = ObjectMeta(name=job_name(cj, scheduled), namespace=cj.metadata.namespace,
                      labels=dict(tmpl.metadata.labels), annotations=annotations,
                      ownerReferences=[owner_reference(cj)])
    return apply_defaults(Job(metadata=meta, spec=tmpl.spec))


def reference(job: Job) -> ObjectReference:
    return ObjectReference(kind="Job", namespace=job.metadata.namespace or "", name=job.metadata.name,
                           uid=job.metadata.uid or "", apiVersion="batch/v1",
                           resourceVersion=job.metadata.resourceVersion or "")


def _started(job: Job) -> tuple[str, str]:
    return (job.status.startTime or job.metadata.creationTimestamp or "", job.metadata.name)


def plan(cj: CronJob, jobs: list[Job], now: dt.datetime, missing: frozenset[str] = frozenset()) -> Plan:
    """See the module docstring. ``jobs`` are the CronJob's own (controller owner = it);
    ``missing`` names Jobs of ``status.active`` the shell found gone from the store."""
    events: list[Event] = []
    by_uid = {j.metadata.uid: j for j in jobs}
    active: list[ObjectReference] = []
    for ref in cj.status.active:
        job = by_uid.get(ref.uid)
        if job is None:
            if ref.name in missing:
                events.append(Event("MissingJob", f"Active job went missing: {ref.name}", "Warning"))
            else:
                active.append(ref)  # not seen by the watch yet
            continue
        if (cond := finished(job)) is not None:
            events.append(Event("SawCompletedJob", f"Saw completed job: {job.metadata.name}, condition: {cond}"))
        else:
            active.append(ref)
    listed = {r.uid for r in active}
    active += [reference(j) for j in sorted(jobs, key=_started) if finished(j) is None and j.metadata.uid not in listed]
    last_success = cj.status.lastSuccessfulTime
    for j in jobs:
        if finished(j) == "Complete" and j.status.completionTime:
            if last_success is None or parse_time(j.status.completionTime) > parse_time(last_success):
                last_success = j.status.completionTime
    status = replace(cj.status, active=active, lastSuccessfulTime=last_success)

    delete = _history(cj, jobs)
    if cj.metadata.deletionTimestamp is not None:
        return Plan(status=status, events=events)
    sched = schedule_of(cj)
    nxt = sched.next(now)
    requeue = (nxt - now).total_seconds() + 0.1 if nxt is not None else None
    if cj.spec.suspend:
        return Plan(status=status, delete=delete, events=events)
    scheduled, missed = missed_times(cj, sched, now)
    if scheduled is None:
        return Plan(status=status, delete=delete, events=events, requeue_after=requeue)
    if missed > MAX_MISSED:
        events.append(Event("TooManyMissedTimes", "too many missed start times. Set or decrease "
                            ".spec.startingDeadlineSeconds or check clock skew", "Warning"))
    deadline = cj.spec.startingDeadlineSeconds
    if deadline is not None and scheduled + dt.timedelta(seconds=deadline) < now:
        events.append(Event("MissSchedule", f"Missed scheduled time to start a job: {format_time(scheduled)}",
                            "Warning"))
        return Plan(status=status, delete=delete, events=events, requeue_after=requeue)
    name = job_name(cj, scheduled)
    if any(j.metadata.name == name for j in jobs) or any(r.name == name for r in active):
        return Plan(status=status, delete=delete, events=events, requeue_after=requeue)
    if active and cj.spec.concurrencyPolicy == "Forbid":
        events.append(Event("JobAlreadyActive",
                            "Not starting job because prior execution is running and concurrency policy is Forbid"))
        return Plan(status=status, delete=delete, events=events, requeue_after=requeue)
    if active and cj.spec.concurrencyPolicy == "Replace":
        delete = [*delete, *(r.name for r in active)]
        status = replace(status, active=[])
    job = new_job(cj, scheduled, sched)
    status = replace(status, lastScheduleTime=format_time(scheduled))
    return Plan(status=status, create=job, delete=delete, events=events, requeue_after=requeue)


def _history(cj: CronJob, jobs: list[Job]) -> list[str]:
    out: list[str] = []
    for kind, limit in (("Complete", cj.spec.successfulJobsHistoryLimit), ("Failed", cj.spec.failedJobsHistoryLimit)):
        done = sorted((j for j in jobs if finished(j) == kind), key=_started)
        out += [j.metadata.name for j in done[: max(0, len(done) - limit)]]
    return out
