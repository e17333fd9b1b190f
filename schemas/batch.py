"""batch/v1 Job: run pods to completion, with retries (backoffLimit), parallelism and
indexed completions."""

from __future__ import annotations

from typing import Literal

from schemas.meta import Base, Condition, LabelSelector, Object
from schemas.pod import PodTemplateSpec


class JobSpec(Base, kw_only=True):
    template: PodTemplateSpec = PodTemplateSpec()
    parallelism: int | None = None  # defaulted to 1
    completions: int | None = None  # unset: any one success completes the job (when parallelism unset: 1)
    completionMode: Literal["NonIndexed", "Indexed"] = "NonIndexed"
    backoffLimit: int = 6
    activeDeadlineSeconds: int | None = None
    ttlSecondsAfterFinished: int | None = None
    suspend: bool = False
    selector: LabelSelector | None = None  # generated from the controller-uid when unset
    manualSelector: bool | None = None


class JobStatus(Base, kw_only=True):
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    ready: int | None = None
    startTime: str | None = None
    completionTime: str | None = None
    conditions: list[Condition] = []  # Complete, Failed, Suspended
    completedIndexes: str = ""  # "1,3-5"
    failedIndexes: str | None = None


class Job(Object, kw_only=True):
    API_VERSION = "batch/v1"
    KIND = "Job"

    spec: JobSpec = JobSpec()
    status: JobStatus = JobStatus()
