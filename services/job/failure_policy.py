"""What a failed pod means for its Job: the verdict of ``spec.podFailurePolicy`` and the failure
counts per completion index that ``spec.backoffLimitPerIndex`` limits.

Kept apart from the plan because it is a question about one pod (or the pods of one index),
answered the same way every time it is asked: the plan may ask again after a crash and gets the
same answer, which is what makes counting through the finalizer exact.

Rules are evaluated in order and the first that matches decides, as Kubernetes'
``matchPodFailurePolicy`` does: an ``onExitCodes`` rule matches a container (or init container)
that terminated with a non-zero exit code the operator accepts, optionally only the container
named; an ``onPodConditions`` rule matches when any pattern equals a pod condition's type and
status. No match counts the failure as usual.
"""

from __future__ import annotations

import msgspec

from schemas.batch import PodFailurePolicy, PodFailurePolicyAction, PodFailurePolicyOnExitCodesRequirement
from schemas.pod import ContainerStatus, Pod

INDEX_FAILURES_KEY = "batch.kubernetes.io/job-index-failure-count"
INDEX_IGNORED_KEY = "batch.kubernetes.io/job-index-ignored-failure-count"


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """The decision on one failed pod; ``action`` None when no rule matched."""

    action: PodFailurePolicyAction | None = None
    rule: int | None = None  # index of the rule that matched
    message: str = ""  # set for FailJob, worded as Kubernetes words it

    @property
    def counts(self) -> bool:
        """Whether the failure counts towards backoffLimit (and backoffLimitPerIndex)."""
        return self.action != "Ignore"


COUNT = Verdict()


def _exit_code_matches(code: int, req: PodFailurePolicyOnExitCodesRequirement) -> bool:
    return (code in req.values) == (req.operator == "In")


def _matching_container(pod: Pod, req: PodFailurePolicyOnExitCodesRequirement) -> ContainerStatus | None:
    for s in [*pod.status.containerStatuses, *pod.status.initContainerStatuses]:
        term = s.state.terminated
        if term is None or term.exitCode == 0:
            continue
        if req.containerName is not None and req.containerName != s.name:
            continue
        if _exit_code_matches(term.exitCode, req):
            return s
    return None


def judge(policy: PodFailurePolicy | None, pod: Pod) -> Verdict:
    """The verdict of ``policy`` on the failed ``pod``: the first matching rule decides."""
    if policy is None:
        return COUNT
    where = f"{pod.metadata.namespace}/{pod.metadata.name}"
    for i, rule in enumerate(policy.rules):
        if rule.onExitCodes is not None:
            status = _matching_container(pod, rule.onExitCodes)
            if status is None:
                continue
            assert status.state.terminated is not None
            message = (
                f"Container {status.name} for pod {where} failed with exit code "
                f"{status.state.terminated.exitCode} matching {rule.action} rule at index {i}"
            )
        elif rule.onPodConditions:
            cond = next(
                (c for c in pod.status.conditions for p in rule.onPodConditions if (c.type, c.status) == (p.type, p.status)),
                None,
            )
            if cond is None:
                continue
            message = f"Pod {where} has condition {cond.type} matching {rule.action} rule at index {i}"
        else:
            continue
        return Verdict(action=rule.action, rule=i, message=message if rule.action == "FailJob" else "")
    return COUNT


# --- per-index failure counts ----------------------------------------------------------------


def _annotation_count(pod: Pod, key: str) -> int:
    raw = pod.metadata.annotations.get(key, "")
    return int(raw) if raw.isdigit() else 0


def failure_counts(pod: Pod, failed: bool, verdict: Verdict) -> tuple[int, int]:
    """(counted, ignored) failures of the pod's index up to and including this pod: what its
    replacement carries in its annotations. ``failed``: the pod ended without succeeding."""
    counted = _annotation_count(pod, INDEX_FAILURES_KEY)
    ignored = _annotation_count(pod, INDEX_IGNORED_KEY)
    if failed:
        if verdict.counts:
            counted += 1
        else:
            ignored += 1
    return counted, ignored
