"""A Job's ``spec.successPolicy``: the rule matching, its properties through the simulated
cluster of tests/test_job_reconcile.py, validation, and the controller on a real nats-server."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from kyb import errors
from schemas.batch import Job, SuccessPolicy
from schemas.meta import Condition
from schemas.pod import Pod
from schemas.validation import SchemaError, decode, validate_update
from services.job import reconcile
from services.job.reconcile import (
    INDEX_KEY,
    SUCCESS_CRITERIA_MET,
    format_indexes,
    parse_indexes,
    success_rule,
)
from tests.cluster import HollowKubelet, wait_for
from tests.test_job_reconcile import World, actions, drive, job, settle
from tests.test_job_service import Cluster, cluster, job_manifest  # noqa: F401 - the cluster fixture

# --- the rule ---------------------------------------------------------------------------------


def policy(*rules: dict[str, Any]) -> SuccessPolicy:
    return msgspec.convert({"rules": list(rules)}, SuccessPolicy)


@st.composite
def rules_for(draw: st.DrawFn, completions: int) -> list[dict[str, Any]]:
    """Valid rules for a Job of ``completions`` indexes, as validation admits them."""
    out: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            indexes = draw(st.sets(st.integers(0, completions - 1), min_size=1))
            r: dict[str, Any] = {"succeededIndexes": format_indexes(indexes)}
            if draw(st.booleans()):
                r["succeededCount"] = draw(st.integers(0, len(indexes)))
        else:
            r = {"succeededCount": draw(st.integers(0, completions))}
        out.append(r)
    return out


def met_by_sets(rules: list[dict[str, Any]], succeeded: set[int]) -> int | None:
    """The rule Kubernetes documents, over plain sets."""
    if not succeeded:
        return None
    for i, r in enumerate(rules):
        count = r.get("succeededCount")
        if "succeededIndexes" in r:
            wanted = parse_indexes(r["succeededIndexes"])
            if (count is None and wanted <= succeeded) or (count is not None and len(wanted & succeeded) >= count):
                return i
        elif len(succeeded) >= count:
            return i
    return None


@given(st.integers(1, 40).flatmap(lambda c: st.tuples(st.just(c), rules_for(c), st.sets(st.integers(0, c - 1)))))
def test_the_first_rule_the_succeeded_indexes_meet_decides(case):
    completions, rules, succeeded = case
    assert success_rule(policy(*rules), completions, succeeded) == met_by_sets(rules, succeeded)


@pytest.mark.parametrize(
    ("rules", "succeeded", "position"),
    [
        pytest.param([{"succeededIndexes": "0-2,5"}], {0, 1, 2, 5}, 0, id="all-named-indexes"),
        pytest.param([{"succeededIndexes": "0-2,5"}], {0, 1, 2}, None, id="one-named-index-missing"),
        pytest.param([{"succeededIndexes": "0,2-3", "succeededCount": 1}], {2}, 0, id="count-of-named"),
        pytest.param([{"succeededIndexes": "0,2-3", "succeededCount": 2}], {2, 4}, None, id="count-outside-named"),
        pytest.param([{"succeededCount": 3}], {1, 4, 7}, 0, id="count-alone"),
        pytest.param([{"succeededIndexes": "9"}, {"succeededCount": 1}], {3}, 1, id="second-rule"),
        pytest.param([{"succeededCount": 0}], set(), None, id="nothing-before-a-success"),
    ],
)
def test_rules_as_kubernetes_documents_them(rules, succeeded, position):
    assert success_rule(policy(*rules), 10, succeeded) == position


# --- the plan ---------------------------------------------------------------------------------


class PolicyWorld(World):
    """World, checking after every plan what the success policy promises."""

    def __init__(self, j: Job) -> None:
        super().__init__(j)
        self.met: Condition | None = None

    def reconcile(self, steps: int = 99) -> reconcile.Plan:
        met_before = self.met is not None
        p = super().reconcile(steps)
        if met_before:
            assert not p.create, "a pod was created after the success policy was met"
        criteria = reconcile.condition(self.job, SUCCESS_CRITERIA_MET)
        if criteria is not None and self.met is None:
            self.met = criteria
            completions = self.job.spec.completions
            position = success_rule(self.job.spec.successPolicy, completions, parse_indexes(self.job.status.completedIndexes))
            assert criteria.reason == "SuccessPolicy" and criteria.message == f"Matched rules at index {position}"
        if self.met is not None:
            assert reconcile.condition(self.job, "Failed") is None, "a Job that met its success policy failed"
            assert reconcile.condition(self.job, SUCCESS_CRITERIA_MET) == self.met, "SuccessCriteriaMet changed"
        complete = reconcile.condition(self.job, "Complete")
        if complete is not None and complete.reason == "SuccessPolicy":
            assert self.met is not None and complete.message == self.met.message
            assert not self.occupying(), "Complete while pods still run"
        return p


@st.composite
def policy_jobs(draw: st.DrawFn) -> dict[str, Any]:
    completions = draw(st.integers(1, 6))
    return {
        "completionMode": "Indexed",
        "completions": completions,
        "parallelism": draw(st.integers(1, 4)),
        "backoffLimit": draw(st.sampled_from([0, 1, 3, 1000])),
        "successPolicy": {"rules": draw(rules_for(completions))},
    }


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=policy_jobs(), acts=actions)
def test_a_met_policy_stops_the_pods_never_fails_and_completes(shape, acts):
    """Whatever pods do and however plans are cut short: once a rule is met no pod is created,
    the Job never fails, and it ends Complete (reason SuccessPolicy) with every result counted
    once and nothing left running; a Job that does not fail always meets its policy in the end."""
    w = PolicyWorld(job(**shape))
    drive(w, acts)
    settle(w)
    status = w.job.status
    assert status.succeeded == len(w.ever_succeeded) and status.failed == len(w.ever_failed)
    if reconcile.condition(w.job, "Failed") is None:
        complete = reconcile.condition(w.job, "Complete")
        assert w.met is not None and complete is not None and complete.reason == "SuccessPolicy"
        assert status.active == 0 and not w.occupying()


def end(w: World, index: int, phase: str) -> None:
    """The running pod of ``index`` ends in ``phase``."""
    name = next(n for n, p in w.pods.items() if p.metadata.annotations[INDEX_KEY] == str(index)
                and p.status.phase not in ("Succeeded", "Failed"))
    pod = w.pods[name]
    w.pods[name] = replace(pod, status=replace(pod.status, phase=phase))


def test_met_policy_deletes_the_lingering_pods_counts_them_failed_and_completes_despite_backoff_limit():
    w = World(job(completionMode="Indexed", completions=5, parallelism=5, backoffLimit=0,
                  successPolicy={"rules": [{"succeededIndexes": "0,2"}]}))
    w.reconcile()
    end(w, 0, "Succeeded")
    w.reconcile()
    assert reconcile.condition(w.job, SUCCESS_CRITERIA_MET) is None, "met with index 2 still running"
    end(w, 2, "Succeeded")
    p = w.reconcile()
    met = reconcile.condition(w.job, SUCCESS_CRITERIA_MET)
    assert met is not None and (met.reason, met.message) == ("SuccessPolicy", "Matched rules at index 0")
    assert len(p.delete) == 3 and not p.create, "the lingering pods were not terminated"
    assert reconcile.condition(w.job, "Complete") is None, "Complete before the lingering pods ended"
    w.kubelet_removes_terminating()
    for _ in range(3):
        w.reconcile()
    complete = reconcile.condition(w.job, "Complete")
    assert complete is not None and (complete.reason, complete.message) == ("SuccessPolicy", "Matched rules at index 0")
    assert reconcile.condition(w.job, "Failed") is None
    status = w.job.status
    assert (status.succeeded, status.failed, status.active, status.completedIndexes) == (2, 3, 0, "0,2")
    assert status.completionTime


def test_a_failure_decided_before_the_policy_is_met_wins():
    """As in Kubernetes' job controller: the failure checks run first."""
    w = World(job(completionMode="Indexed", completions=3, parallelism=3, backoffLimit=0,
                  successPolicy={"rules": [{"succeededCount": 1}]}))
    w.reconcile()
    end(w, 0, "Failed")
    end(w, 1, "Succeeded")
    for _ in range(3):
        w.reconcile()
    assert reconcile.condition(w.job, SUCCESS_CRITERIA_MET) is None
    assert reconcile.condition(w.job, "Failed").reason == "BackoffLimitExceeded"


# --- validation -------------------------------------------------------------------------------


def manifest(completions: int = 5, mode: str = "Indexed", **success: Any) -> dict[str, Any]:
    return job_manifest("v", completionMode=mode, completions=completions, successPolicy=success)


@pytest.mark.parametrize(
    ("m", "field", "words"),
    [
        pytest.param(manifest(mode="NonIndexed", rules=[{"succeededCount": 1}]), "spec.successPolicy",
                     "requires indexed completion mode", id="not-indexed"),
        pytest.param(manifest(rules=[]), "spec.successPolicy.rules",
                     "at least one rules must be specified", id="no-rules"),
        pytest.param(manifest(rules=[{"succeededCount": 1}] * 21), "spec.successPolicy.rules",
                     "must have at most 20 items", id="too-many-rules"),
        pytest.param(manifest(rules=[{}]), "spec.successPolicy.rules[0]",
                     "at least one of succeededCount or succeededIndexes must be specified", id="empty-rule"),
        pytest.param(manifest(rules=[{"succeededIndexes": "0-5"}]), "spec.successPolicy.rules[0].succeededIndexes",
                     'error parsing succeededIndexes: too large index: "5"', id="index-past-completions"),
        pytest.param(manifest(rules=[{"succeededIndexes": "3,1"}]), "spec.successPolicy.rules[0].succeededIndexes",
                     "non-increasing order, previous: 3, current: 1", id="decreasing"),
        pytest.param(manifest(rules=[{"succeededIndexes": "1-1"}]), "spec.successPolicy.rules[0].succeededIndexes",
                     "non-increasing order", id="one-index-interval"),
        pytest.param(manifest(rules=[{"succeededIndexes": "0-1-2"}]), "spec.successPolicy.rules[0].succeededIndexes",
                     "at most two parts separated by '-'", id="three-parts"),
        pytest.param(manifest(rules=[{"succeededIndexes": "a"}]), "spec.successPolicy.rules[0].succeededIndexes",
                     'cannot convert string to integer for index: "a"', id="not-a-number"),
        pytest.param(manifest(rules=[{"succeededCount": 6}]), "spec.successPolicy.rules[0].succeededCount",
                     "must be less than or equal to 5 (the number of specified completions)", id="count-past-completions"),
        pytest.param(manifest(rules=[{"succeededIndexes": "0,2", "succeededCount": 3}]),
                     "spec.successPolicy.rules[0].succeededCount",
                     "must be less than or equal to 2 (the number of indexes in the specified succeededIndexes field)",
                     id="count-past-named-indexes"),
        pytest.param(manifest(rules=[{"succeededCount": -1}]), "spec.successPolicy.rules[0].succeededCount",
                     "must be greater than or equal to 0", id="negative-count"),
        pytest.param(manifest(rules=[{"succeededIndex": "1"}]), "spec.successPolicy.rules[0].succeededIndex",
                     "unknown field", id="unknown-field"),
    ],
)
def test_validation_names_the_field(m, field, words):
    with pytest.raises(SchemaError) as raised:
        decode(m)
    assert any(f == field and words in msg for f, msg in raised.value.details), raised.value.details


def test_valid_policies_and_immutability():
    one = decode(manifest(rules=[{"succeededIndexes": "0-2,4", "succeededCount": 4}, {"succeededCount": 5}]))
    assert one.spec.successPolicy.rules[0].succeededIndexes == "0-2,4"  # type: ignore[attr-defined]
    other = decode(manifest(rules=[{"succeededCount": 1}]))
    assert validate_update(one, one) == []
    assert validate_update(other, one) == [("spec.successPolicy", "field is immutable")]
    none = decode(job_manifest("v", completionMode="Indexed", completions=5))
    assert validate_update(none, one) == [("spec.successPolicy", "field is immutable")]


# --- on a real nats-server --------------------------------------------------------------------


async def test_a_job_whose_index_meets_its_policy_completes_and_its_other_pods_go(cluster: Cluster):  # noqa: F811
    """The documented example's shape: any of indexes 0, 2 and 3 succeeding is enough."""

    def exit_code(pod: Pod) -> int | None:
        return 0 if pod.metadata.annotations[INDEX_KEY] == "2" else None  # the others run on

    kubelet = HollowKubelet(cluster.store, cluster.nc, finish=exit_code).start()
    try:
        await cluster.api.apply(job_manifest(
            "ok", completions=5, parallelism=5, completionMode="Indexed", backoffLimit=0,
            successPolicy={"rules": [{"succeededIndexes": "0,2-3", "succeededCount": 1}]},
        ))
        job = await cluster.wait_condition("ok", "Complete", 30)
        pods = await wait_for(lambda: _only_index_2_left(cluster, "ok"), 20, "the lingering pods of ok gone")
    finally:
        await kubelet.stop()
    conditions = {c.type: c for c in job.status.conditions}
    assert set(conditions) == {"SuccessCriteriaMet", "Complete"}
    for c in conditions.values():
        assert (c.status, c.reason, c.message) == ("True", "SuccessPolicy", "Matched rules at index 0")
    status = job.status
    assert (status.succeeded, status.failed, status.active, status.completedIndexes) == (1, 4, 0, "2")
    assert [p.status.phase for p in pods] == ["Succeeded"]


async def _only_index_2_left(c: Cluster, name: str) -> list[Pod] | None:
    pods = await c.pods_of(name)
    return pods if [p.metadata.annotations[INDEX_KEY] for p in pods] == ["2"] else None


async def test_the_api_refuses_a_changed_policy_and_one_on_a_non_indexed_job(cluster: Cluster):  # noqa: F811
    spec = {"completions": 3, "completionMode": "Indexed", "suspend": True}
    await cluster.api.apply(job_manifest("imm", **spec, successPolicy={"rules": [{"succeededCount": 1}]}))
    with pytest.raises(errors.Invalid) as raised:
        await cluster.api.apply(job_manifest("imm", **spec, successPolicy={"rules": [{"succeededCount": 2}]}))
    assert [(d.field, d.message) for d in raised.value.details] == [("spec.successPolicy", "field is immutable")]
    with pytest.raises(errors.Invalid) as raised:
        await cluster.api.apply(job_manifest("flat", completions=3, successPolicy={"rules": [{"succeededCount": 1}]}))
    assert [d.field for d in raised.value.details] == ["spec.successPolicy"]
    job = await cluster.job("imm")
    assert job.spec.successPolicy.rules[0].succeededCount == 1
