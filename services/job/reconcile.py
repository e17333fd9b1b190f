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

An Indexed Job's ``spec.successPolicy`` (``success_rule``: its rules in order, the first met
decides) is checked once no failure is decided; when a rule is met the Job gets
``SuccessCriteriaMet`` (reason ``SuccessPolicy``), written with the uncounted set, and from then
on no failure is looked for and no pod created: the lingering pods are deleted (counted as failed
as they end, as Kubernetes counts them) and ``Complete`` follows, with the same reason and
message, once none is left running and every result is counted.

A pod is *finished* when its phase is Succeeded or Failed, or when it is being deleted (then it
counts as failed unless it succeeded, as Kubernetes' job controller counts it). A terminating
pod still holds its slot (and its completion index) until it is gone or terminal, so the Job
never runs more than ``parallelism`` pods at once.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from dataclasses import dataclass, field

import msgspec
from msgspec.structs import replace

from schemas.batch import (
    DEFAULT_BACKOFF_LIMIT,
    LABEL_CONTROLLER_UID,
    LABEL_JOB_NAME,
    LEGACY_CONTROLLER_UID,
    LEGACY_JOB_NAME,
    IndexesError,
    Job,
    JobSpec,
    JobStatus,
    SuccessPolicy,
    index_intervals,
)
from schemas.helpers import format_time, owner_reference, parse_time
from schemas.meta import Condition, ConditionStatus, LabelSelector, ObjectMeta
from schemas.pod import Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod
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
SUCCESS_CRITERIA_MET = "SuccessCriteriaMet"
SUCCESS_POLICY_REASON = "SuccessPolicy"


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


# --- success policy ---------------------------------------------------------------------------


def success_rule(policy: SuccessPolicy | None, completions: int, succeeded: set[int]) -> int | None:
    """The position of the first rule of ``policy`` that the succeeded indexes meet, or None
    (Kubernetes' matchSuccessPolicy): a rule with ``succeededIndexes`` is met when all of those
    indexes succeeded, or ``succeededCount`` of them when it has both; a rule with
    ``succeededCount`` alone when that many indexes of the Job did. Nothing is met before any
    index succeeded; a rule whose index list is empty or unreadable is skipped."""
    if policy is None or not succeeded:
        return None
    done = sorted(succeeded)
    for position, rule in enumerate(policy.rules):
        if rule.succeededIndexes is not None:
            try:
                intervals = index_intervals(rule.succeededIndexes, completions)
            except IndexesError:
                continue
            if not intervals:
                continue
            contains = sum(bisect_right(done, b) - bisect_right(done, a - 1) for a, b in intervals)
            required = sum(b - a + 1 for a, b in intervals) if rule.succeededCount is None else rule.succeededCount
            if contains >= required:
                return position
        elif rule.succeededCount is not None and len(succeeded) >= rule.succeededCount:
            return position
    return None


def success_message(position: int) -> str:
    return f"Matched rules at index {position}"


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

        def add_env(cs: list[Container]) -> list[Container]:
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


def _set_condition(
    conds: list[Condition], type_: str, status: ConditionStatus, reason: str, message: str, now: str
) -> list[Condition]:
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


def _deletion_order(pod: Pod) -> tuple[bool, bool, bool, str]:
    """Kubernetes deletes the least useful pods first: unbound, pending, not ready, newest."""
    ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)
    return (bool(pod.spec.nodeName), pod.status.phase == "Running", ready, "~" + (pod.metadata.creationTimestamp or ""))


def backoff_limit(spec: JobSpec) -> int:
    return spec.backoffLimit if spec.backoffLimit is not None else DEFAULT_BACKOFF_LIMIT


def _backoff_delay(failures: int, settings: Settings) -> float:
    return min(settings.backoff_base * 2.0 ** min(failures - 1, 30), settings.backoff_cap)


def failed(pod: Pod) -> bool:
    """The pod ended without succeeding (a pod being deleted counts)."""
    return is_finished(pod) and not succeeded(pod)


@dataclass(slots=True)
class _Job:
    """What every step of ``plan`` reads: the Job, its pods, the time and what follows from them."""

    job: Job
    pods: list[Pod]
    now: dt.datetime
    settings: Settings
    now_s: str = field(init=False)
    indexed: bool = field(init=False)
    per_index: bool = field(init=False)
    parallelism: int = field(init=False)
    verdicts: dict[str, Verdict] = field(init=False)  # of the failed pods, by name
    occupying: list[Pod] = field(init=False)
    active: list[Pod] = field(init=False)

    def __post_init__(self) -> None:
        spec = self.job.spec
        self.now_s = format_time(self.now)
        self.indexed = spec.completionMode == "Indexed"
        self.per_index = self.indexed and spec.backoffLimitPerIndex is not None
        self.parallelism = spec.parallelism if spec.parallelism is not None else 1
        self.verdicts = {p.metadata.name: judge(spec.podFailurePolicy, p) for p in self.pods if failed(p)}
        self.occupying = [p for p in self.pods if not is_terminal(p)]  # includes terminating pods
        self.active = [p for p in self.occupying if p.metadata.deletionTimestamp is None]

    def verdict(self, pod: Pod) -> Verdict:
        return self.verdicts.get(pod.metadata.name, COUNT)


@dataclass(slots=True)
class _Counts:
    """Steps 1 to 3: the results counted, the uncounted set, what it knows of indexes."""

    uncounted: Uncounted
    succeeded: int  # status.succeeded after this plan (counted results only)
    failed: int
    known: set[str]  # uids of the uncounted set as the Job holds it
    completed: set[int]  # completed indexes
    release: list[str] = field(default_factory=list)
    failed_indexes: set[int] = field(default_factory=set)
    index_failures: dict[int, tuple[int, int]] = field(default_factory=dict)

    @property
    def total_succeeded(self) -> int:
        return self.succeeded + len(self.uncounted.succeeded)

    @property
    def total_failed(self) -> int:
        return self.failed + len(self.uncounted.failed)


@dataclass(slots=True)
class _Draft:
    """What steps 5 to 8 decide, each adding to what the ones before decided."""

    conds: list[Condition]
    start_time: str | None
    completion_time: str | None
    finished: bool
    events: list[Event] = field(default_factory=list)
    create: list[Pod] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    discard: list[str] = field(default_factory=list)
    requeue: list[float] = field(default_factory=list)
    delete_job: bool = False

    def requeue_in(self, seconds: float) -> None:
        self.requeue.append(max(0.0, seconds))

    def condition(self, j: _Job, type_: str, status: ConditionStatus, reason: str, message: str) -> None:
        self.conds = _set_condition(self.conds, type_, status, reason, message, j.now_s)


def plan(job: Job, pods: list[Pod], now: dt.datetime, settings: Settings = Settings()) -> Plan:
    """See the module docstring. ``pods`` are the Job's own pods (controller owner = the Job).

    The steps, in order: 1-3 count (``_count``: settle the uncounted set, add newly finished
    pods, release their finalizers), 4 failures per index (``_index_failures``), 5 suspend and
    resume (``_suspend``), 6 decide a failure (``_failure``) or else whether the success policy
    is met (``_success_policy``), 7 finish or manage the pods (``_finish_or_manage``, with
    ``_manage``; ``_finish_by_success_policy`` once the policy is met), 8 TTL after finishing (``_ttl``), 9 the status
    and the plan (``_result``)."""
    j = _Job(job, pods, now, settings)
    counts = _count(j)
    _index_failures(j, counts)
    draft = _Draft(conds=list(job.status.conditions), start_time=job.status.startTime,
                   completion_time=job.status.completionTime, finished=is_job_finished(job))
    if not draft.finished:
        met = (criteria := condition(job, SUCCESS_CRITERIA_MET)) is not None and criteria.status == "True"
        failure = None
        if not met:  # a Job that met its success policy neither suspends nor fails any more
            _suspend(j, draft)
            failure = _failure(j, counts, draft)
            met = failure is None and _success_policy(j, counts, draft)
        if met:
            _finish_by_success_policy(j, counts, draft)
        else:
            _finish_or_manage(j, counts, draft, failure)
    elif any(c.type == "Failed" and c.status == "True" for c in draft.conds):
        draft.delete += [p.metadata.name for p in j.active]  # left over by an interrupted run
    else:
        draft.discard += [p.metadata.name for p in j.active]
    _ttl(j, draft)
    return _result(j, counts, draft)


def _count(j: _Job) -> _Counts:
    """Steps 1 to 3 of the module docstring (3 first: what the Job's set already holds)."""
    by_uid = {p.metadata.uid: p for p in j.pods if p.metadata.uid}
    old = read_uncounted(j.job)
    # step 3: a uid whose pod has no finalizer any more (or is gone) is counted
    counted_s = counted_f = 0
    keep_s: list[str] = []
    keep_f: list[str] = []
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
    # step 1: a finished pod still tracked and not yet in the set joins it
    known = set(old.succeeded) | set(old.failed)
    ignored: list[str] = []  # failed pods an Ignore rule matched: released, never counted
    for p in j.pods:
        if not (is_finished(p) and tracked(p)) or p.metadata.uid in known or not p.metadata.uid:
            continue
        if succeeded(p):
            keep_s.append(p.metadata.uid)
        elif j.verdict(p).counts:
            keep_f.append(p.metadata.uid)
        else:
            ignored.append(p.metadata.name)
    completed = parse_indexes(j.job.status.completedIndexes)
    completions = j.job.spec.completions
    for p in j.pods:
        if succeeded(p) and (tracked(p) or p.metadata.uid in known):
            i = pod_index(p)
            if j.indexed and i is not None and completions is not None and i < completions:
                completed.add(i)
    uncounted = Uncounted(succeeded=sorted(keep_s), failed=sorted(keep_f))
    # step 2: every pod in the set has its finalizer removed
    in_set = set(uncounted.succeeded) | set(uncounted.failed)
    release = [p.metadata.name for p in j.pods if tracked(p) and p.metadata.uid in in_set] + ignored
    return _Counts(uncounted=uncounted, succeeded=j.job.status.succeeded + counted_s,
                   failed=j.job.status.failed + counted_f, known=known, completed=completed, release=release)


def _index_failures(j: _Job, counts: _Counts) -> None:
    """Step 4: failures per index (backoffLimitPerIndex). A failure being recorded (tracked or in
    the uncounted set) decides whether its index fails; status.failedIndexes keeps the decision,
    written with the uncounted set."""
    spec = j.job.spec
    failed_indexes = parse_indexes(j.job.status.failedIndexes or "") if j.per_index else set()
    index_failures: dict[int, tuple[int, int]] = {}
    for p in j.pods:
        i = pod_index(p)
        if i is None:
            continue
        n = failure_counts(p, failed(p), j.verdict(p))
        prev = index_failures.get(i, (0, 0))
        index_failures[i] = (max(prev[0], n[0]), max(prev[1], n[1]))
        if j.per_index and failed(p) and (tracked(p) or p.metadata.uid in counts.known) and spec.completions is not None:
            limit = spec.backoffLimitPerIndex
            assert limit is not None
            if i < spec.completions and (j.verdict(p).action == "FailIndex" or n[0] > limit):
                failed_indexes.add(i)
    counts.failed_indexes = failed_indexes - counts.completed
    counts.index_failures = index_failures


def _suspend(j: _Job, draft: _Draft) -> None:
    """Step 5: a suspended Job discards its active pods; a resumed one starts its clock again."""
    suspended_before = (c := condition(j.job, "Suspended")) is not None and c.status == "True"
    if j.job.spec.suspend:
        draft.discard += [p.metadata.name for p in j.active]
        if not suspended_before:
            draft.condition(j, "Suspended", "True", "JobSuspended", "Job suspended")
            draft.events.append(Event(reason="Suspended", message="Job suspended"))
        return
    if suspended_before:
        draft.condition(j, "Suspended", "False", "JobResumed", "Job resumed")
        draft.events.append(Event(reason="Resumed", message="Job resumed"))
        draft.start_time = j.now_s
    if draft.start_time is None:
        draft.start_time = j.now_s


def _failure(j: _Job, counts: _Counts, draft: _Draft) -> tuple[str, str] | None:
    """Step 6: the (reason, message) the Job fails with, if it fails. A FailJob rule's decision is
    kept in the FailureTarget condition, written with the uncounted set that holds the pod, so it
    survives the pod's release (as in Kubernetes)."""
    spec, status, now = j.job.spec, j.job.status, j.now
    target = condition(j.job, "FailureTarget")
    if target is None or target.status != "True":
        fail_job = sorted(
            (p for p in j.pods
             if failed(p) and (tracked(p) or p.metadata.uid in counts.known) and j.verdict(p).action == "FailJob"),
            key=lambda p: (_failure_time(p), p.metadata.name),
        )
        if fail_job:
            draft.condition(j, "FailureTarget", "True", "PodFailurePolicy", j.verdict(fail_job[0]).message)
            target = condition(replace(j.job, status=replace(status, conditions=draft.conds)), "FailureTarget")
    if target is not None and target.status == "True":
        draft.delete += [p.metadata.name for p in j.active]  # FailJob terminates the other pods at once
        return (target.reason or "PodFailurePolicy", target.message or "")
    if spec.suspend:
        return None
    failure: tuple[str, str] | None = None
    limit = backoff_limit(spec)
    past_on_failure = spec.template.spec.restartPolicy == "OnFailure" and (
        _restarts(j.active) > 0 if limit == 0 else _restarts(j.active) >= limit
    )
    if counts.total_failed > limit or past_on_failure:
        failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    elif spec.activeDeadlineSeconds is not None and draft.start_time is not None:
        deadline = parse_time(draft.start_time) + dt.timedelta(seconds=spec.activeDeadlineSeconds)
        if now >= deadline:
            failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
        else:
            draft.requeue_in((deadline - now).total_seconds())
    if failure is None and j.per_index and spec.completions is not None:
        if spec.maxFailedIndexes is not None and len(counts.failed_indexes) > spec.maxFailedIndexes:
            failure = ("MaxFailedIndexesExceeded", "Job has exceeded the specified maximal number of failed indexes")
        elif counts.failed_indexes and len(counts.failed_indexes) + len(counts.completed) >= spec.completions:
            failure = ("FailedIndexes", "Job has failed indexes")
    return failure


def _success_policy(j: _Job, counts: _Counts, draft: _Draft) -> bool:
    """Step 6, when no failure is decided: whether a rule of the success policy is met by the
    completed indexes (those recorded, counted or not); the decision is kept in the
    SuccessCriteriaMet condition, written with the uncounted set that holds the successes."""
    completions = j.job.spec.completions
    if not j.indexed or completions is None:
        return False
    position = success_rule(j.job.spec.successPolicy, completions, counts.completed)
    if position is None:
        return False
    draft.condition(j, SUCCESS_CRITERIA_MET, "True", SUCCESS_POLICY_REASON, success_message(position))
    return True


def _finish_by_success_policy(j: _Job, counts: _Counts, draft: _Draft) -> None:
    """Step 7 for a Job that met its success policy: the lingering pods are deleted (each counted
    as failed when it ends, as Kubernetes counts them), none is created, and Complete, with the
    reason and message of SuccessCriteriaMet, waits until no pod runs or terminates and every
    recorded result is counted."""
    draft.delete += [p.metadata.name for p in j.active]
    if counts.uncounted or j.occupying:
        return
    met = next(c for c in draft.conds if c.type == SUCCESS_CRITERIA_MET)
    draft.condition(j, "Complete", "True", met.reason or SUCCESS_POLICY_REASON, met.message or "")
    draft.events.append(Event(reason="Completed", message="Job completed"))
    draft.completion_time = j.now_s
    draft.finished = True


def _finish_or_manage(j: _Job, counts: _Counts, draft: _Draft, failure: tuple[str, str] | None) -> None:
    """Step 7: write Failed or Complete, or else create and discard pods toward the target.

    A finished condition waits until every recorded result is in the counters, so a Job is never
    seen Complete (or Failed) with counts short of what decided it; the finalizer removals of
    this plan bring the next reconcile."""
    spec, active = j.job.spec, j.active
    if failure is not None and counts.uncounted:
        return  # hold: no new pods; the active ones are deleted with the condition
    if failure is not None:
        draft.condition(j, "Failed", "True", failure[0], failure[1])
        draft.events.append(Event(reason=failure[0], message=failure[1], type="Warning"))
        draft.delete += [p.metadata.name for p in active]
        draft.finished = True
        return
    if spec.suspend:
        return
    completions = spec.completions
    if j.indexed:
        done = completions is not None and len(counts.completed) >= completions
    elif completions is None:
        done = counts.total_succeeded > 0 and not j.occupying
    else:
        done = counts.total_succeeded >= completions
    if done and counts.uncounted:
        draft.discard += [p.metadata.name for p in active]  # no longer needed; Complete follows
    elif done:
        draft.condition(j, "Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods")
        draft.events.append(Event(reason="Completed", message="Job completed"))
        draft.completion_time = j.now_s
        draft.discard += [p.metadata.name for p in active]
        draft.finished = True
    else:
        # the pods of a failed index stop (counted as failed); the index is not retried
        draft.delete += [p.metadata.name for p in active if pod_index(p) in counts.failed_indexes]
        counted_failures = [p for p in j.pods if failed(p) and j.verdict(p).counts]
        ready_at: dict[int | None, dt.datetime] = {}
        if j.per_index:
            for i, (n, _) in counts.index_failures.items():
                times = [_failure_time(p) for p in counted_failures if pod_index(p) == i]
                if n > 0 and times:
                    ready_at[i] = max(times) + dt.timedelta(seconds=_backoff_delay(n, j.settings))
        elif counts.total_failed > 0 and counted_failures:
            last = max(_failure_time(p) for p in counted_failures)
            ready_at[None] = last + dt.timedelta(seconds=_backoff_delay(counts.total_failed, j.settings))
        c, d, wait = _manage(
            j.job, j.occupying, active, counts.completed | counts.failed_indexes, counts.total_succeeded,
            j.parallelism, j.now, j.settings, ready_at,
        )
        draft.create = [new_pod(j.job, i, counts.index_failures.get(i, (0, 0)) if j.per_index and i is not None else None) for i in c]
        draft.discard += d
        if wait is not None:
            draft.requeue_in(wait)


def _ttl(j: _Job, draft: _Draft) -> None:
    """Step 8: a finished Job whose ttlSecondsAfterFinished has passed goes, with its pods."""
    ttl = j.job.spec.ttlSecondsAfterFinished
    if not draft.finished or ttl is None:
        return
    done_at = parse_time(draft.completion_time) if draft.completion_time else None
    if done_at is None:
        failed_c = next((c for c in draft.conds if c.type == "Failed" and c.status == "True"), None)
        done_at = parse_time(failed_c.lastTransitionTime) if failed_c and failed_c.lastTransitionTime else j.now
    expires = done_at + dt.timedelta(seconds=ttl)
    if j.now >= expires:
        draft.delete_job = True
        draft.discard = sorted(
            {*draft.discard, *(p.metadata.name for p in j.pods if p.metadata.deletionTimestamp is None)}
            - set(draft.delete)
        )
    else:
        draft.requeue_in((expires - j.now).total_seconds())


def _result(j: _Job, counts: _Counts, draft: _Draft) -> Plan:
    """Step 9: the new status and the plan."""
    status = j.job.status
    ready = sum(1 for p in j.active if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions))
    delete = sorted(set(draft.delete))
    going = set(draft.discard) | set(delete)
    new_status = replace(
        status,
        active=sum(1 for p in j.active if p.metadata.name not in going),
        succeeded=counts.succeeded,
        failed=counts.failed,
        ready=ready,
        startTime=draft.start_time,
        completionTime=draft.completion_time,
        conditions=draft.conds,
        completedIndexes=format_indexes(counts.completed) if j.indexed else status.completedIndexes,
        failedIndexes=format_indexes(counts.failed_indexes) if j.per_index else status.failedIndexes,
    )
    return Plan(
        status=new_status,
        uncounted=counts.uncounted,
        create=draft.create,
        delete=delete,
        release=counts.release,
        discard=sorted(set(draft.discard) - set(delete)),
        delete_job=draft.delete_job,
        events=draft.events,
        requeue_after=min(draft.requeue) if draft.requeue else None,
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
