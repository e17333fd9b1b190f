"""What the Job controller should do next, as a pure function of the Job, its pods and the time.

``plan(job, pods, now, settings) -> Plan`` never applies anything; the service shell writes
the Job's status and tracking annotation first, then removes pod finalizers, then creates and
deletes pods. Counting a finished pod exactly once follows Kubernetes' finalizer tracking:

1. a finished pod that still carries ``batch.kubernetes.io/job-tracking`` and is not yet in the
   Job's *uncounted* set is added to it (the Job is written before anything else);
2. every pod in the uncounted set gets its finalizer removed;
3. a uid in the uncounted set whose pod has no finalizer any more (or is gone) moves into
   ``status.succeeded`` / ``status.failed`` and leaves the set.

A crash between any two writes repeats at most an idempotent step, so no result is lost or
counted twice. A finished condition (Complete, Failed) is only written once the uncounted set is
empty, in the same write as the counts that decided it: the plan that records the last success
must not also complete the Job, or the Job reads Complete with ``succeeded`` short of
``completions`` until the finalizer removals are seen (as Kubernetes holds its condition until
``uncountedTerminatedPods`` is empty). The uncounted set lives in the annotation ``UNCOUNTED_ANNOTATION`` (Kubernetes
keeps it in ``status.uncountedTerminatedPods``).

A failed pod that an ``Ignore`` rule of ``spec.podFailurePolicy`` matches never enters the
uncounted set: its finalizer is removed straight away, the verdict being the same whenever it is
asked. A ``FailJob`` match is kept in the ``FailureTarget`` condition, written with the uncounted
set that holds the pod; ``Failed`` follows once it is counted. With ``backoffLimitPerIndex``, an
index whose recorded failures pass the limit joins ``status.failedIndexes`` in that same write.

A pod is *finished* when its phase is Succeeded or Failed, or when it is being deleted (then it
counts as failed unless it succeeded, as Kubernetes' job controller counts it). A terminating
pod still holds its slot (and its completion index) until it is gone or terminal, so the Job
never runs more than ``parallelism`` pods at once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import msgspec
from msgspec.structs import replace

from schemas.batch import (
    DEFAULT_BACKOFF_LIMIT,
    LABEL_CONTROLLER_UID,
    LABEL_JOB_NAME,
    LEGACY_CONTROLLER_UID,
    LEGACY_JOB_NAME,
    Job,
    JobSpec,
    JobStatus,
)
from schemas.helpers import format_time, owner_reference, parse_time
from schemas.meta import Condition, LabelSelector, ObjectMeta
from schemas.pod import EnvVar, EnvVarSource, ObjectFieldSelector, Pod
from services.job.failure_policy import (
    COUNT,
    INDEX_FAILURES_KEY,
    INDEX_IGNORED_KEY,
    Verdict,
    failure_counts,
    judge,
)

INDEX_KEY = "batch.kubernetes.io/job-completion-index"
FINALIZER = "batch.kubernetes.io/job-tracking"
UNCOUNTED_ANNOTATION = "kybernetes.io/uncounted-terminated-pods"
INDEX_ENV = "JOB_COMPLETION_INDEX"


@dataclass(frozen=True)
class Settings:
    backoff_base: float = 10.0  # seconds before recreating after the first failure
    backoff_cap: float = 360.0  # the back-off doubles per failure up to this
    max_creates: int = 500  # pods created by one reconcile at most (Kubernetes' burst)


class Uncounted(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Uids of finished pods whose result is recorded but not yet in the counters."""

    succeeded: list[str] = []
    failed: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.succeeded or self.failed)


class Event(msgspec.Struct, frozen=True, kw_only=True):
    reason: str
    message: str
    type: str = "Normal"


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    status: JobStatus
    uncounted: Uncounted
    create: list[Pod] = []  # new pods (generateName set; the store names them)
    delete: list[str] = []  # pod names to delete, finalizer kept (their result is counted as failed)
    release: list[str] = []  # pod names whose tracking finalizer goes (their result is recorded)
    discard: list[str] = []  # pod names to delete uncounted: finalizer removed first (suspend, excess, TTL)
    delete_job: bool = False  # ttlSecondsAfterFinished has passed
    events: list[Event] = []
    requeue_after: float | None = None


# --- small questions -----------------------------------------------------------------------


def is_finished(pod: Pod) -> bool:
    return pod.status.phase in ("Succeeded", "Failed") or pod.metadata.deletionTimestamp is not None


def is_terminal(pod: Pod) -> bool:
    return pod.status.phase in ("Succeeded", "Failed")


def succeeded(pod: Pod) -> bool:
    return pod.status.phase == "Succeeded"


def tracked(pod: Pod) -> bool:
    return FINALIZER in pod.metadata.finalizers


def pod_index(pod: Pod) -> int | None:
    raw = pod.metadata.annotations.get(INDEX_KEY, pod.metadata.labels.get(INDEX_KEY))
    if raw is None or not raw.isdigit():
        return None
    return int(raw)


def condition(job: Job, type_: str) -> Condition | None:
    return next((c for c in job.status.conditions if c.type == type_), None)


def is_job_finished(job: Job) -> bool:
    return any(c.type in ("Complete", "Failed") and c.status == "True" for c in job.status.conditions)


def finish_time(job: Job) -> dt.datetime | None:
    if job.status.completionTime:
        return parse_time(job.status.completionTime)
    for c in job.status.conditions:
        if c.type in ("Complete", "Failed") and c.status == "True" and c.lastTransitionTime:
            return parse_time(c.lastTransitionTime)
    return None


def read_uncounted(job: Job) -> Uncounted:
    raw = job.metadata.annotations.get(UNCOUNTED_ANNOTATION)
    if not raw:
        return Uncounted()
    try:
        return msgspec.json.decode(raw, type=Uncounted)
    except msgspec.DecodeError:
        return Uncounted()


def write_uncounted(meta: ObjectMeta, uncounted: Uncounted) -> ObjectMeta:
    annotations = dict(meta.annotations)
    if uncounted:
        annotations[UNCOUNTED_ANNOTATION] = msgspec.json.encode(uncounted).decode()
    else:
        annotations.pop(UNCOUNTED_ANNOTATION, None)
    return replace(meta, annotations=annotations)


# --- completed indexes ("1,3-5") -----------------------------------------------------------


def parse_indexes(text: str) -> set[int]:
    out: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            out.update(range(int(lo), int(hi or lo) + 1))
    return out


def format_indexes(indexes: set[int]) -> str:
    parts: list[str] = []
    ordered = sorted(indexes)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


# --- selector setup -------------------------------------------------------------------------


def with_generated_selector(job: Job) -> Job | None:
    """The Job with selector ``controller-uid=<uid>`` and the template labels Kubernetes sets,
    or None when nothing needs to change (a manual selector, or done already)."""
    uid = job.metadata.uid or ""
    if job.spec.manualSelector or not uid:
        return None
    labels = dict(job.spec.template.metadata.labels)
    wanted = {
        LABEL_CONTROLLER_UID: uid,
        LABEL_JOB_NAME: job.metadata.name,
        LEGACY_CONTROLLER_UID: uid,
        LEGACY_JOB_NAME: job.metadata.name,
    }
    selector = job.spec.selector
    if selector is not None and all(labels.get(k) == v for k, v in wanted.items()):
        return None
    labels.update(wanted)
    template = replace(job.spec.template, metadata=replace(job.spec.template.metadata, labels=labels))
    if selector is None:
        selector = LabelSelector(matchLabels={LABEL_CONTROLLER_UID: uid})
    return replace(job, spec=replace(job.spec, selector=selector, template=template))


# --- pod building ----------------------------------------------------------------------------


def new_pod(job: Job, index: int | None, failures: tuple[int, int] | None = None) -> Pod:
    """A pod from the Job's template, owned by it and carrying the tracking finalizer;
    ``failures``: the (counted, ignored) failures of its index so far, kept in its annotations
    when the Job limits failures per index."""
    tmpl = job.spec.template
    labels = dict(tmpl.metadata.labels)
    annotations = dict(tmpl.metadata.annotations)
    if failures is not None:
        annotations[INDEX_FAILURES_KEY] = str(failures[0])
        annotations[INDEX_IGNORED_KEY] = str(failures[1])
    spec = tmpl.spec
    generate = f"{job.metadata.name}-"
    if index is not None:
        labels[INDEX_KEY] = str(index)
        annotations[INDEX_KEY] = str(index)
        generate = f"{job.metadata.name}-{index}-"
        env = EnvVar(
            name=INDEX_ENV,
            valueFrom=EnvVarSource(fieldRef=ObjectFieldSelector(fieldPath=f"metadata.annotations['{INDEX_KEY}']")),
        )

        def add_env(cs):  # noqa: ANN001, ANN202 - a local helper over containers
            return [c if any(e.name == INDEX_ENV for e in c.env) else replace(c, env=[*c.env, env]) for c in cs]

        spec = replace(
            spec,
            containers=add_env(spec.containers),
            initContainers=add_env(spec.initContainers),
            hostname=spec.hostname or f"{job.metadata.name}-{index}",
        )
    meta = ObjectMeta(
        generateName=generate,
        namespace=job.metadata.namespace,
        labels=labels,
        annotations=annotations,
        ownerReferences=[owner_reference(job)],
        finalizers=[FINALIZER],
    )
    return Pod(metadata=meta, spec=spec)


# --- the plan --------------------------------------------------------------------------------


def _set_condition(conds: list[Condition], type_: str, status: str, reason: str, message: str, now: str) -> list[Condition]:
    out = [c for c in conds if c.type != type_]
    old = next((c for c in conds if c.type == type_), None)
    if old is not None and old.status == status and old.reason == reason:
        return conds
    out.append(
        Condition(type=type_, status=status, reason=reason, message=message, lastProbeTime=now, lastTransitionTime=now)
    )
    return out


def _failure_time(pod: Pod) -> dt.datetime:
    times = [
        s.state.terminated.finishedAt
        for s in [*pod.status.containerStatuses, *pod.status.initContainerStatuses]
        if s.state.terminated is not None and s.state.terminated.finishedAt
    ]
    if pod.metadata.deletionTimestamp:
        times.append(pod.metadata.deletionTimestamp)
    times += [c.lastTransitionTime for c in pod.status.conditions if c.lastTransitionTime]
    if not times and pod.metadata.creationTimestamp:
        times.append(pod.metadata.creationTimestamp)
    return max((parse_time(t) for t in times), default=dt.datetime.min.replace(tzinfo=dt.UTC))


def _restarts(pods: list[Pod]) -> int:
    return sum(
        s.restartCount
        for p in pods
        if p.status.phase in ("Pending", "Running")
        for s in [*p.status.containerStatuses, *p.status.initContainerStatuses]
    )


def _deletion_order(pod: Pod) -> tuple:
    """Kubernetes deletes the least useful pods first: unbound, pending, not ready, newest."""
    ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)
    return (bool(pod.spec.nodeName), pod.status.phase == "Running", ready, "~" + (pod.metadata.creationTimestamp or ""))


def backoff_limit(spec: JobSpec) -> int:
    return spec.backoffLimit if spec.backoffLimit is not None else DEFAULT_BACKOFF_LIMIT


def _backoff_delay(failures: int, settings: Settings) -> float:
    return min(settings.backoff_base * 2 ** min(failures - 1, 30), settings.backoff_cap)


def failed(pod: Pod) -> bool:
    """The pod ended without succeeding (a pod being deleted counts)."""
    return is_finished(pod) and not succeeded(pod)


def plan(job: Job, pods: list[Pod], now: dt.datetime, settings: Settings = Settings()) -> Plan:
    """See the module docstring. ``pods`` are the Job's own pods (controller owner = the Job)."""
    spec = job.spec
    now_s = format_time(now)
    status = job.status
    conds = list(status.conditions)
    events: list[Event] = []
    by_uid = {p.metadata.uid: p for p in pods if p.metadata.uid}
    indexed = spec.completionMode == "Indexed"
    per_index = indexed and spec.backoffLimitPerIndex is not None
    completions = spec.completions
    parallelism = spec.parallelism if spec.parallelism is not None else 1
    verdicts: dict[str, Verdict] = {p.metadata.name: judge(spec.podFailurePolicy, p) for p in pods if failed(p)}

    def verdict(pod: Pod) -> Verdict:
        return verdicts.get(pod.metadata.name, COUNT)

    # -- counting: steps 3 and 1 of the module docstring ------------------------------------
    old = read_uncounted(job)
    counted_s = counted_f = 0
    keep_s: list[str] = []
    keep_f: list[str] = []
    ignored: list[str] = []  # failed pods an Ignore rule matched: released, never counted
    for uid in old.succeeded:
        p = by_uid.get(uid)
        if p is None or not tracked(p):
            counted_s += 1
        else:
            keep_s.append(uid)
    for uid in old.failed:
        p = by_uid.get(uid)
        if p is None or not tracked(p):
            counted_f += 1
        else:
            keep_f.append(uid)
    known = set(old.succeeded) | set(old.failed)
    completed = parse_indexes(status.completedIndexes)
    for p in pods:
        if not (is_finished(p) and tracked(p)) or p.metadata.uid in known or not p.metadata.uid:
            continue
        if succeeded(p):
            keep_s.append(p.metadata.uid)
        elif verdict(p).counts:
            keep_f.append(p.metadata.uid)
        else:
            ignored.append(p.metadata.name)
    for p in pods:
        if succeeded(p) and (tracked(p) or p.metadata.uid in known):
            i = pod_index(p)
            if indexed and i is not None and completions is not None and i < completions:
                completed.add(i)
    uncounted = Uncounted(succeeded=sorted(keep_s), failed=sorted(keep_f))
    n_succeeded = status.succeeded + counted_s
    n_failed = status.failed + counted_f
    total_succeeded = n_succeeded + len(uncounted.succeeded)
    total_failed = n_failed + len(uncounted.failed)
    in_set = set(uncounted.succeeded) | set(uncounted.failed)
    release = [p.metadata.name for p in pods if tracked(p) and p.metadata.uid in in_set] + ignored

    # -- failures per index (backoffLimitPerIndex) ----------------------------------------------
    # A failure being recorded (tracked or in the uncounted set) decides whether its index
    # fails; status.failedIndexes keeps the decision, written with the uncounted set.
    failed_indexes = parse_indexes(status.failedIndexes or "") if per_index else set()
    index_failures: dict[int, tuple[int, int]] = {}
    for p in pods:
        i = pod_index(p)
        if i is None:
            continue
        counts = failure_counts(p, failed(p), verdict(p))
        prev = index_failures.get(i, (0, 0))
        index_failures[i] = (max(prev[0], counts[0]), max(prev[1], counts[1]))
        if per_index and failed(p) and (tracked(p) or p.metadata.uid in known) and completions is not None:
            limit = spec.backoffLimitPerIndex
            assert limit is not None
            if i < completions and (verdict(p).action == "FailIndex" or counts[0] > limit):
                failed_indexes.add(i)
    failed_indexes -= completed

    # -- who is running -----------------------------------------------------------------------
    occupying = [p for p in pods if not is_terminal(p)]  # includes terminating pods
    active = [p for p in occupying if p.metadata.deletionTimestamp is None]
    ready = sum(1 for p in active if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions))

    create: list[Pod] = []
    delete: list[str] = []
    discard: list[str] = []
    requeue: list[float] = []
    start_time = status.startTime
    completion_time = status.completionTime
    finished = is_job_finished(job)

    def requeue_in(seconds: float) -> None:
        requeue.append(max(0.0, seconds))

    if not finished:
        suspended_before = (c := condition(job, "Suspended")) is not None and c.status == "True"
        if spec.suspend:
            discard += [p.metadata.name for p in active]
            if not suspended_before:
                conds = _set_condition(conds, "Suspended", "True", "JobSuspended", "Job suspended", now_s)
                events.append(Event(reason="Suspended", message="Job suspended"))
        else:
            if suspended_before:
                conds = _set_condition(conds, "Suspended", "False", "JobResumed", "Job resumed", now_s)
                events.append(Event(reason="Resumed", message="Job resumed"))
                start_time = now_s
            if start_time is None:
                start_time = now_s

        # -- finishing ------------------------------------------------------------------------
        # A FailJob rule's decision is kept in the FailureTarget condition, written with the
        # uncounted set that holds the pod, so it survives the pod's release (as in Kubernetes).
        failure: tuple[str, str] | None = None
        target = condition(job, "FailureTarget")
        if target is None or target.status != "True":
            fail_job = sorted(
                (p for p in pods if failed(p) and (tracked(p) or p.metadata.uid in known) and verdict(p).action == "FailJob"),
                key=lambda p: (_failure_time(p), p.metadata.name),
            )
            if fail_job:
                message = verdict(fail_job[0]).message
                conds = _set_condition(conds, "FailureTarget", "True", "PodFailurePolicy", message, now_s)
                target = condition(replace(job, status=replace(status, conditions=conds)), "FailureTarget")
        if target is not None and target.status == "True":
            failure = (target.reason or "PodFailurePolicy", target.message or "")
            delete += [p.metadata.name for p in active]  # FailJob terminates the other pods at once
        elif not spec.suspend:
            limit = backoff_limit(spec)
            past_on_failure = spec.template.spec.restartPolicy == "OnFailure" and (
                _restarts(active) > 0 if limit == 0 else _restarts(active) >= limit
            )
            if total_failed > limit or past_on_failure:
                failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
            elif spec.activeDeadlineSeconds is not None and start_time is not None:
                deadline = parse_time(start_time) + dt.timedelta(seconds=spec.activeDeadlineSeconds)
                if now >= deadline:
                    failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
                else:
                    requeue_in((deadline - now).total_seconds())
            if failure is None and per_index and completions is not None:
                if spec.maxFailedIndexes is not None and len(failed_indexes) > spec.maxFailedIndexes:
                    failure = ("MaxFailedIndexesExceeded", "Job has exceeded the specified maximal number of failed indexes")
                elif failed_indexes and len(failed_indexes) + len(completed) >= completions:
                    failure = ("FailedIndexes", "Job has failed indexes")
        # A finished condition waits until every recorded result is in the counters, so a
        # Job is never seen Complete (or Failed) with counts short of what decided it; the
        # finalizer removals of this plan bring the next reconcile.
        if failure is not None and uncounted:
            pass  # hold: no new pods; the active ones are deleted with the condition
        elif failure is not None:
            conds = _set_condition(conds, "Failed", "True", failure[0], failure[1], now_s)
            events.append(Event(reason=failure[0], message=failure[1], type="Warning"))
            delete += [p.metadata.name for p in active]
            finished = True
        elif not spec.suspend:
            if indexed:
                done = completions is not None and len(completed) >= completions
            elif completions is None:
                done = total_succeeded > 0 and not occupying
            else:
                done = total_succeeded >= completions
            if done and uncounted:
                discard += [p.metadata.name for p in active]  # no longer needed; Complete follows
            elif done:
                conds = _set_condition(
                    conds, "Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods", now_s
                )
                events.append(Event(reason="Completed", message="Job completed"))
                completion_time = now_s
                discard += [p.metadata.name for p in active]
                finished = True
            else:
                # the pods of a failed index stop (counted as failed); the index is not retried
                delete += [p.metadata.name for p in active if pod_index(p) in failed_indexes]
                counted_failures = [p for p in pods if failed(p) and verdict(p).counts]
                ready_at: dict[int | None, dt.datetime] = {}
                if per_index:
                    for i, (n, _) in index_failures.items():
                        times = [_failure_time(p) for p in counted_failures if pod_index(p) == i]
                        if n > 0 and times:
                            ready_at[i] = max(times) + dt.timedelta(seconds=_backoff_delay(n, settings))
                elif total_failed > 0 and counted_failures:
                    last = max(_failure_time(p) for p in counted_failures)
                    ready_at[None] = last + dt.timedelta(seconds=_backoff_delay(total_failed, settings))
                c, d, wait = _manage(
                    job, occupying, active, completed | failed_indexes, total_succeeded, parallelism, now, settings, ready_at
                )
                create = [new_pod(job, i, index_failures.get(i, (0, 0)) if per_index else None) for i in c]
                discard += d
                if wait is not None:
                    requeue_in(wait)
    elif any(c.type == "Failed" and c.status == "True" for c in conds):
        delete += [p.metadata.name for p in active]  # left over by an interrupted run
    else:
        discard += [p.metadata.name for p in active]

    # -- TTL ------------------------------------------------------------------------------------
    delete_job = False
    if finished and spec.ttlSecondsAfterFinished is not None:
        done_at = parse_time(completion_time) if completion_time else None
        if done_at is None:
            failed_c = next((c for c in conds if c.type == "Failed" and c.status == "True"), None)
            done_at = parse_time(failed_c.lastTransitionTime) if failed_c and failed_c.lastTransitionTime else now
        expires = done_at + dt.timedelta(seconds=spec.ttlSecondsAfterFinished)
        if now >= expires:
            delete_job = True
            discard = sorted({*discard, *(p.metadata.name for p in pods if p.metadata.deletionTimestamp is None)} - set(delete))
        else:
            requeue_in((expires - now).total_seconds())

    delete = sorted(set(delete))
    going = set(discard) | set(delete)
    new_status = replace(
        status,
        active=sum(1 for p in active if p.metadata.name not in going),
        succeeded=n_succeeded,
        failed=n_failed,
        ready=ready,
        startTime=start_time,
        completionTime=completion_time,
        conditions=conds,
        completedIndexes=format_indexes(completed) if indexed else status.completedIndexes,
        failedIndexes=format_indexes(failed_indexes) if per_index else status.failedIndexes,
    )
    return Plan(
        status=new_status,
        uncounted=uncounted,
        create=create,
        delete=delete,
        release=release,
        discard=sorted(set(discard) - set(delete)),
        delete_job=delete_job,
        events=events,
        requeue_after=min(requeue) if requeue else None,
    )


def _manage(
    job: Job,
    occupying: list[Pod],
    active: list[Pod],
    done_indexes: set[int],
    total_succeeded: int,
    parallelism: int,
    now: dt.datetime,
    settings: Settings,
    ready_at: dict[int | None, dt.datetime],
) -> tuple[list[int | None], list[str], float | None]:
    """(indexes of the pods to create — None when not Indexed —, pod names to discard, seconds
    to wait before creating more) for a running Job. ``done_indexes``: completed or failed;
    ``ready_at``: when the back-off after failures ends, per index (None: for the whole Job)."""
    spec = job.spec
    completions = spec.completions
    discard: list[str] = []
    if spec.completionMode == "Indexed":
        assert completions is not None
        seen: set[int] = set()
        keep: list[Pod] = []
        for p in sorted(occupying, key=lambda p: (p.metadata.deletionTimestamp is None, p.metadata.creationTimestamp or "")):
            i = pod_index(p)
            if i is None or i >= completions or i in done_indexes or i in seen:
                if p.metadata.deletionTimestamp is None:
                    discard.append(p.metadata.name)
                elif i is not None:
                    seen.add(i)
                continue
            seen.add(i)
            keep.append(p)
        if len(keep) > parallelism:
            extra = sorted((p for p in keep if p.metadata.deletionTimestamp is None), key=_deletion_order)
            discard += [p.metadata.name for p in extra[: len(keep) - parallelism]]
        slots = parallelism - sum(1 for p in occupying if p.metadata.name not in discard)
        pending: list[int | None] = [i for i in range(completions) if i not in done_indexes and i not in seen]
    else:
        if completions is None and total_succeeded > 0:
            return [], discard, None  # work queue: no new pods once one succeeded; the rest run out
        if completions is None:
            want_active = parallelism
        else:
            want_active = max(0, min(parallelism, completions - total_succeeded))
        terminating = len(occupying) - len(active)
        if len(active) > want_active:
            extra = sorted(active, key=_deletion_order)
            discard += [p.metadata.name for p in extra[: len(active) - want_active]]
        slots = want_active - len(active) - terminating
        pending = [None] * max(0, slots)
    waiting = [ready_at[i] for i in pending if i in ready_at and now < ready_at[i]]
    if None in ready_at and now < ready_at[None]:
        waiting.append(ready_at[None])
        pending = []
    pending = [i for i in pending if not (i in ready_at and now < ready_at[i])]
    targets = pending[: min(max(0, slots), settings.max_creates)]
    wait = (min(waiting) - now).total_seconds() if waiting and slots > len(targets) else None
    return targets, discard, wait
