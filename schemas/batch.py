"""batch/v1 Job: run pods to completion, with retries (backoffLimit, or per index with
backoffLimitPerIndex), parallelism, indexed completions, a pod failure policy that decides
per failed pod whether it fails the Job, fails its index, is ignored or counts as usual, and a
success policy that declares an Indexed Job succeeded once chosen indexes have; and CronJob, which creates Jobs from its jobTemplate on a cron schedule."""

from __future__ import annotations

from typing import Literal

from msgspec.structs import force_setattr

from schemas.meta import Base, Condition, ConditionStatus, LabelSelector, Object, ObjectMeta, ObjectReference
from schemas.pod import PodTemplateSpec

# The selector Kubernetes generates for a Job (unless manualSelector) and the labels it puts on
# the Job's pod template; a manifest never carries them, so a re-apply must keep them.
LABEL_CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
LABEL_JOB_NAME = "batch.kubernetes.io/job-name"
LEGACY_CONTROLLER_UID = "controller-uid"
LEGACY_JOB_NAME = "job-name"
GENERATED_TEMPLATE_LABELS = (LABEL_CONTROLLER_UID, LABEL_JOB_NAME, LEGACY_CONTROLLER_UID, LEGACY_JOB_NAME)

DEFAULT_BACKOFF_LIMIT = 6
UNLIMITED_BACKOFF = 2**31 - 1  # Kubernetes' backoffLimit default when backoffLimitPerIndex is set

PodFailurePolicyAction = Literal["FailJob", "FailIndex", "Ignore", "Count"]


class PodFailurePolicyOnExitCodesRequirement(Base, kw_only=True, frozen=True):
    """Matches a failed pod by the exit code of a terminated container (exit code 0 never matches)."""

    containerName: str | None = None  # unset: any container or init container
    operator: Literal["In", "NotIn"]
    values: list[int]  # ordered, no duplicates, at most 255; no 0 with In


class PodFailurePolicyOnPodConditionsPattern(Base, kw_only=True, frozen=True):
    """Matches a failed pod carrying a condition of this type and status."""

    type: str
    status: ConditionStatus = "True"


class PodFailurePolicyRule(Base, kw_only=True, frozen=True):
    """One rule: exactly one of onExitCodes and onPodConditions; its action when it matches."""

    action: PodFailurePolicyAction
    onExitCodes: PodFailurePolicyOnExitCodesRequirement | None = None
    onPodConditions: list[PodFailurePolicyOnPodConditionsPattern] = []


class PodFailurePolicy(Base, kw_only=True, frozen=True):
    """Rules evaluated in order for each failed pod; the first that matches decides."""

    rules: list[PodFailurePolicyRule]


class SuccessPolicyRule(Base, kw_only=True, frozen=True):
    """Met when the indexes in ``succeededIndexes`` have all succeeded, or ``succeededCount`` of
    them; with ``succeededCount`` alone, when that many indexes of the Job have. At least one."""

    succeededIndexes: str | None = None  # an interval list like "0-2,5", increasing, within completions
    succeededCount: int | None = None  # at most completions, and at most the size of succeededIndexes


class SuccessPolicy(Base, kw_only=True, frozen=True):
    """Rules evaluated in order; the first that is met declares the Job succeeded (Indexed only)."""

    rules: list[SuccessPolicyRule]


class IndexesError(ValueError):
    """An interval list that is not increasing, not numbers, or reaches past completions."""


def index_intervals(text: str, completions: int) -> list[tuple[int, int]]:
    """The intervals of an index list such as ``"0-2,5"`` (first and last index, both included),
    checked as Kubernetes checks ``succeededIndexes``: every index below ``completions``, each
    fragment one number or two joined by '-', strictly increasing ("1-1" is refused). "" is none.
    Raises IndexesError with Kubernetes' words."""
    out: list[tuple[int, int]] = []
    if not text:
        return out
    last: int | None = None
    for fragment in text.split(","):
        limits = fragment.split("-")
        if len(limits) > 2:
            raise IndexesError(f"the fragment {fragment!r} violates the requirement that an index interval "
                               "can have at most two parts separated by '-'")
        bounds: list[int] = []
        for raw in limits:
            if not (raw.isascii() and raw.isdigit()):
                raise IndexesError(f'cannot convert string to integer for index: "{raw}"')
            x = int(raw)
            if x >= completions:
                raise IndexesError(f'too large index: "{raw}"')
            if last is not None and last >= x:
                raise IndexesError(f"non-increasing order, previous: {last}, current: {x}")
            last = x
            bounds.append(x)
        out.append((bounds[0], bounds[-1]))
    return out


class JobSpec(Base, kw_only=True, frozen=True):
    template: PodTemplateSpec = PodTemplateSpec()
    parallelism: int | None = None  # defaulted to 1
    completions: int | None = None  # unset: any one success completes the job (when parallelism unset: 1)
    completionMode: Literal["NonIndexed", "Indexed"] = "NonIndexed"
    backoffLimit: int | None = None  # defaulted to 6, or 2147483647 when backoffLimitPerIndex is set
    backoffLimitPerIndex: int | None = None  # Indexed only: failures allowed per index before it fails
    maxFailedIndexes: int | None = None  # with backoffLimitPerIndex: more failed indexes fail the Job
    podFailurePolicy: PodFailurePolicy | None = None  # requires restartPolicy Never
    successPolicy: SuccessPolicy | None = None  # Indexed only; immutable
    activeDeadlineSeconds: int | None = None
    ttlSecondsAfterFinished: int | None = None
    suspend: bool = False
    selector: LabelSelector | None = None  # generated from the controller-uid when unset
    manualSelector: bool | None = None

    def __post_init__(self) -> None:
        if self.backoffLimit is None:
            limit = DEFAULT_BACKOFF_LIMIT if self.backoffLimitPerIndex is None else UNLIMITED_BACKOFF
            force_setattr(self, "backoffLimit", limit)


class JobStatus(Base, kw_only=True, frozen=True):
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    ready: int | None = None
    startTime: str | None = None
    completionTime: str | None = None
    conditions: list[Condition] = []  # Complete, Failed, FailureTarget, SuccessCriteriaMet, Suspended
    completedIndexes: str = ""  # "1,3-5"
    failedIndexes: str | None = None  # "1,3-5"; set ("" when none) only with backoffLimitPerIndex


class Job(Object, kw_only=True, frozen=True):
    API_VERSION = "batch/v1"
    KIND = "Job"

    spec: JobSpec = JobSpec()
    status: JobStatus = JobStatus()


# CronJob (Kubernetes' batch/v1 CronJob and the annotations its controller and kubectl write).
CRONJOB_SCHEDULED_TIMESTAMP_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
CRONJOB_INSTANTIATE_ANNOTATION = "cronjob.kubernetes.io/instantiate"  # "manual": kubectl create job --from


class JobTemplateSpec(Base, kw_only=True, frozen=True):
    metadata: ObjectMeta = ObjectMeta()
    spec: JobSpec = JobSpec()


class CronJobSpec(Base, kw_only=True, frozen=True):
    schedule: str = ""  # required; checked by validation
    jobTemplate: JobTemplateSpec = JobTemplateSpec()
    timeZone: str | None = None  # an IANA zone name; unset: UTC
    startingDeadlineSeconds: int | None = None
    concurrencyPolicy: Literal["Allow", "Forbid", "Replace"] = "Allow"
    suspend: bool = False
    successfulJobsHistoryLimit: int = 3
    failedJobsHistoryLimit: int = 1


class CronJobStatus(Base, kw_only=True, frozen=True):
    active: list[ObjectReference] = []
    lastScheduleTime: str | None = None
    lastSuccessfulTime: str | None = None


class CronJob(Object, kw_only=True, frozen=True):
    """Jobs on a cron schedule."""

    API_VERSION = "batch/v1"
    KIND = "CronJob"

    spec: CronJobSpec = CronJobSpec()
    status: CronJobStatus = CronJobStatus()
