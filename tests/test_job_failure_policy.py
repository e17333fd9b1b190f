"""Job ``spec.podFailurePolicy`` and ``spec.backoffLimitPerIndex``: properties of the pure rule
matching and counting, the api server's validation, and the Job controller on a real nats-server
with pods ending in the exit codes each test needs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from schemas.batch import PodFailurePolicy
from schemas.helpers import format_time
from schemas.pod import ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodCondition
from schemas.validation import SchemaError, decode
from services.job import reconcile
from services.job.failure_policy import judge
from services.job.reconcile import INDEX_KEY, parse_indexes
from tests.cluster import HollowKubelet, wait_for
from tests.test_job_reconcile import World, job
from tests.test_job_service import Cluster, cluster, job_manifest  # noqa: F401 - the cluster fixture

# --- the rules, on one pod ------------------------------------------------------------------


def failed_pod(codes: dict[str, int], conditions: dict[str, str] | None = None, name: str = "p") -> Pod:
    statuses = [
        ContainerStatus(name=n, state=ContainerState(terminated=ContainerStateTerminated(exitCode=c)))
        for n, c in codes.items()
    ]
    conds = [PodCondition(type=t, status=s) for t, s in (conditions or {}).items()]  # type: ignore[arg-type]
    pod = msgspec.convert({"metadata": {"name": name, "namespace": "default"}}, Pod)
    return replace(pod, status=replace(pod.status, phase="Failed", containerStatuses=statuses, conditions=conds))


def policy(*rules: dict[str, Any]) -> PodFailurePolicy:
    return msgspec.convert({"rules": list(rules)}, PodFailurePolicy)


exit_rules = st.builds(
    lambda action, container, op, values: {
        "action": action,
        "onExitCodes": {"operator": op, "values": sorted(values), **({"containerName": container} if container else {})},
    },
    st.sampled_from(["FailJob", "Ignore", "Count", "FailIndex"]),
    st.sampled_from([None, "main", "side"]),
    st.sampled_from(["In", "NotIn"]),
    st.sets(st.integers(1, 6), min_size=1, max_size=3),
)
condition_rules = st.builds(
    lambda action, type_, status: {"action": action, "onPodConditions": [{"type": type_, "status": status}]},
    st.sampled_from(["FailJob", "Ignore", "Count"]),
    st.sampled_from(["DisruptionTarget", "ConfigIssue"]),
    st.sampled_from(["True", "False"]),
)
pods_to_judge = st.builds(
    failed_pod,
    st.dictionaries(st.sampled_from(["main", "side"]), st.integers(0, 6), max_size=2),
    st.dictionaries(st.sampled_from(["DisruptionTarget", "ConfigIssue"]), st.sampled_from(["True", "False"]), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(rules=st.lists(st.one_of(exit_rules, condition_rules), max_size=6), pod=pods_to_judge)
def test_the_first_matching_rule_decides(rules, pod):
    alone = [judge(policy(r), pod).action is not None for r in rules]
    verdict = judge(policy(*rules), pod)
    first = alone.index(True) if any(alone) else None
    assert verdict.rule == first
    assert verdict.action == (rules[first]["action"] if first is not None else None)
    assert verdict.counts == (verdict.action != "Ignore")
    assert bool(verdict.message) == (verdict.action == "FailJob")


@pytest.mark.parametrize(
    ("rule", "pod", "action"),
    [
        pytest.param({"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}, failed_pod({"main": 42}),
                     "FailJob", id="in-matches"),
        pytest.param({"action": "Ignore", "onExitCodes": {"operator": "NotIn", "values": [1, 2]}}, failed_pod({"main": 0}),
                     None, id="exit-0-never-matches"),
        pytest.param({"action": "Ignore", "onExitCodes": {"operator": "NotIn", "values": [1, 2]}}, failed_pod({"main": 3}),
                     "Ignore", id="not-in-matches"),
        pytest.param({"action": "Count", "onExitCodes": {"containerName": "side", "operator": "In", "values": [42]}},
                     failed_pod({"main": 42, "side": 1}), None, id="other-container"),
        pytest.param({"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                     failed_pod({"main": 137}, {"DisruptionTarget": "True"}), "Ignore", id="condition-status-defaults-true"),
        pytest.param({"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                     failed_pod({"main": 137}, {"DisruptionTarget": "False"}), None, id="condition-status-differs"),
    ],
)
def test_rules_match_as_kubernetes_documents(rule, pod, action):
    assert judge(policy(rule), pod).action == action


def test_fail_job_message_names_pod_container_and_exit_code():
    verdict = judge(policy({"action": "Count", "onPodConditions": [{"type": "X"}]},
                           {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}),
                    failed_pod({"main": 42}, name="pi-abc"))
    assert verdict.message == "Container main for pod default/pi-abc failed with exit code 42 matching FailJob rule at index 1"
    by_condition = judge(policy({"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget"}]}),
                         failed_pod({"main": 1}, {"DisruptionTarget": "True"}, name="pi-x"))
    assert by_condition.message == "Pod default/pi-x has condition DisruptionTarget matching FailJob rule at index 0"


# --- the plan, in a simulated cluster whose pods end with exit codes --------------------------


class CodeWorld(World):
    """The simulated cluster of test_job_reconcile, where a pod ends with an exit code (0: it
    succeeded) written in its container status, as a kubelet reports it."""

    def end(self, i: int, code: int) -> str | None:
        self.observe()
        running = sorted(n for n, p in self.pods.items() if p.status.phase not in ("Succeeded", "Failed"))
        if not running:
            return None
        name = running[i % len(running)]
        pod = self.pods[name]
        if pod.metadata.deletionTimestamp is not None:
            code = code or 143
        term = ContainerState(terminated=ContainerStateTerminated(exitCode=code, finishedAt=format_time(self.now)))
        statuses = [ContainerStatus(name=c.name, state=term) for c in pod.spec.containers]
        phase = "Succeeded" if code == 0 else "Failed"
        self.pods[name] = replace(pod, status=replace(pod.status, phase=phase, containerStatuses=statuses))
        self._gc(name)
        return name


def run(w: CodeWorld, acts: list[tuple[str, int, int]], code_of: Callable[[int], int] = lambda c: c) -> list[int]:
    """Apply ``acts``, then let every pod end with ``code_of``(its attempt number) until the Job
    finishes; the exit codes pods ended with, in order."""
    codes: list[int] = []

    def end(i: int, code: int) -> None:
        if w.end(i, code) is not None and not reconcile.is_job_finished(w.job):
            codes.append(code)

    for kind, a, b in acts:
        if kind == "end":
            end(a, b)
        elif kind == "reconcile":
            w.reconcile(steps=a)
        else:
            w.now += dt.timedelta(seconds=a)
        w.check()
    for attempt in range(400):
        p = w.reconcile()
        if reconcile.is_job_finished(w.job) and not p.release and not w.occupying() and not reconcile.read_uncounted(w.job):
            w.reconcile()
            return codes
        end(0, code_of(attempt))
        w.kubelet_removes_terminating()
        w.now += dt.timedelta(seconds=10)
    raise AssertionError(f"job never finished: {w.job.status}")


code_actions = st.lists(
    st.one_of(
        st.tuples(st.just("end"), st.integers(0, 20), st.sampled_from([0, 0, 1, 42, 137])),
        st.tuples(st.just("reconcile"), st.integers(0, 12), st.none()),
        st.tuples(st.just("tick"), st.integers(1, 20), st.none()),
    ),
    max_size=40,
)
shapes = st.one_of(
    st.builds(lambda c, p: {"completions": c, "parallelism": p}, st.integers(1, 4), st.integers(1, 3)),
    st.builds(lambda c, p: {"completions": c, "parallelism": p, "completionMode": "Indexed"},
              st.integers(1, 4), st.integers(1, 3)),
)
IGNORE_137 = {"rules": [{"action": "Ignore", "onExitCodes": {"operator": "In", "values": [137]}}]}
FAIL_42 = {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]}


def killed(pod: Pod) -> bool:
    return any(s.state.terminated is not None and s.state.terminated.exitCode == 137 for s in pod.status.containerStatuses)


class IgnoringWorld(CodeWorld):
    """Also checks after every write that no failure an Ignore rule matched is recorded."""

    def __init__(self, j: Any) -> None:
        super().__init__(j)
        self.counting_failures: set[str] = set()  # failures that must count: not exit code 137

    def observe(self) -> None:
        super().observe()
        self.counting_failures |= {p.metadata.uid for p in self.pods.values()
                                   if p.metadata.uid in self.ever_failed and not killed(p)}

    def check(self) -> None:
        super().check()
        un = reconcile.read_uncounted(self.job)
        assert not {p.metadata.uid for p in self.pods.values() if killed(p)} & set(un.failed), "an ignored failure recorded"
        assert self.job.status.failed + len(un.failed) <= len(self.counting_failures), "an ignored failure counted"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=shapes, acts=code_actions)
def test_ignored_failures_never_count(shape, acts):
    """Exit code 137 is ignored: status.failed only ever holds the other failures, and in the
    end exactly those."""
    w = IgnoringWorld(job(backoffLimit=1000, podFailurePolicy=IGNORE_137, **shape))
    run(w, acts, lambda attempt: 137 if attempt % 3 else 0)
    assert reconcile.condition(w.job, "Complete") is not None
    assert w.job.status.failed == len(w.counting_failures)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=shapes, acts=code_actions, until=st.integers(0, 5))
def test_ignore_lets_a_job_with_backoff_limit_zero_complete(shape, acts, until):
    acts = [a for a in acts if a[0] != "end" or a[2] in (0, 137)]
    w = CodeWorld(job(backoffLimit=0, podFailurePolicy=IGNORE_137, **shape))
    run(w, acts, lambda attempt: 137 if attempt < until else 0)
    assert reconcile.condition(w.job, "Complete") is not None, w.job.status.conditions
    assert w.job.status.failed == 0


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=shapes, acts=code_actions)
def test_a_fail_job_rule_always_ends_the_job_failed(shape, acts):
    """Once a pod ends with 42 while the Job runs, the Job ends Failed with reason
    PodFailurePolicy whatever else happens, however large backoffLimit is."""
    w = CodeWorld(job(backoffLimit=1000, podFailurePolicy=FAIL_42, **shape))
    codes = run(w, acts, lambda attempt: 42 if attempt == 2 else 0)
    failed = reconcile.condition(w.job, "Failed")
    if 42 in codes:
        assert failed is not None and failed.reason == "PodFailurePolicy", w.job.status.conditions
        assert "failed with exit code 42 matching FailJob rule at index 0" in (failed.message or "")
        assert reconcile.condition(w.job, "Complete") is None
    else:
        assert failed is None and reconcile.condition(w.job, "Complete") is not None
    assert w.job.status.active == 0 and not w.occupying()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=shapes, acts=code_actions)
def test_a_policy_that_never_matches_changes_no_plan(shape, acts):
    """Count rules, and rules on exit codes no pod ends with, plan exactly as no policy."""
    quiet = {"rules": [{"action": "Count", "onExitCodes": {"operator": "In", "values": [1, 42, 137]}},
                       {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [99]}},
                       {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
    with_policy = CodeWorld(job(backoffLimit=3, podFailurePolicy=quiet, **shape))
    without = CodeWorld(job(backoffLimit=3, **shape))
    for w in (with_policy, without):
        run(w, acts, lambda attempt: attempt % 2)
    assert with_policy.job.status == without.job.status
    assert sorted(with_policy.pods) == sorted(without.pods)


# --- failures per index ---------------------------------------------------------------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(completions=st.integers(1, 5), parallelism=st.integers(1, 3), limit=st.integers(0, 2),
       bad=st.sets(st.integers(0, 4)), max_failed=st.one_of(st.none(), st.integers(0, 5)))
def test_an_index_past_its_limit_fails_and_is_not_retried(completions, parallelism, limit, bad, max_failed):
    bad = {i for i in bad if i < completions}
    max_failed = None if max_failed is None else min(max_failed, completions)
    spec: dict[str, Any] = {"completions": completions, "parallelism": parallelism, "completionMode": "Indexed",
                            "backoffLimitPerIndex": limit}
    if max_failed is not None:
        spec["maxFailedIndexes"] = max_failed
    w = CodeWorld(job(**spec))
    for _ in range(400):
        p = w.reconcile()
        if reconcile.is_job_finished(w.job) and not p.release and not w.occupying() and not reconcile.read_uncounted(w.job):
            break
        for name, pod in list(w.pods.items()):
            if pod.status.phase not in ("Succeeded", "Failed") and pod.metadata.deletionTimestamp is None:
                i = int(pod.metadata.annotations[INDEX_KEY])
                w.pods[name] = replace(pod, status=replace(pod.status, phase="Failed" if i in bad else "Succeeded"))
        w.kubelet_removes_terminating()
        w.now += dt.timedelta(seconds=30)
    else:
        raise AssertionError(f"job never finished: {w.job.status}")
    status = w.job.status
    attempts = [int(p.metadata.annotations[INDEX_KEY]) for p in w.pods.values()]
    failed_set = parse_indexes(status.failedIndexes or "")
    assert status.failedIndexes is not None
    if max_failed is not None and len(bad) > max_failed:
        reason = "MaxFailedIndexesExceeded"
        assert len(failed_set) > max_failed and failed_set <= bad
    else:
        reason = "FailedIndexes" if bad else None
        assert failed_set == bad
        assert parse_indexes(status.completedIndexes) == set(range(completions)) - bad
    for i in failed_set:
        assert attempts.count(i) == limit + 1, f"index {i} ran {attempts.count(i)} times with backoffLimitPerIndex {limit}"
    assert not failed_set & parse_indexes(status.completedIndexes)
    cond = reconcile.condition(w.job, "Failed")
    assert (cond.reason if cond else None) == reason
    assert (reconcile.condition(w.job, "Complete") is not None) == (reason is None)


# --- validation -------------------------------------------------------------------------------


def manifest(restart: str = "Never", **spec: Any) -> dict[str, Any]:
    m = job_manifest("v", **spec)
    m["spec"]["template"]["spec"]["restartPolicy"] = restart
    return m


def rule(**r: Any) -> dict[str, Any]:
    return {"podFailurePolicy": {"rules": [r]}}


EXIT_42 = {"operator": "In", "values": [42]}
INDEXED = {"completionMode": "Indexed", "completions": 3}


@pytest.mark.parametrize(
    ("m", "field", "words"),
    [
        pytest.param(manifest("OnFailure", **rule(action="FailJob", onExitCodes=EXIT_42)), "spec.template.spec.restartPolicy",
                     'only "Never" is supported when podFailurePolicy is specified', id="restart-policy"),
        pytest.param(manifest(**rule(action="FailIndex", onExitCodes=EXIT_42)), "spec.podFailurePolicy.rules[0].action",
                     "requires the backoffLimitPerIndex to be set", id="fail-index-without-per-index"),
        pytest.param(manifest(**rule(action="Ignore", onExitCodes={"operator": "In", "values": [0, 3]})),
                     "spec.podFailurePolicy.rules[0].onExitCodes.values[0]", "must not be 0 for the In operator", id="zero-in"),
        pytest.param(manifest(**rule(action="Ignore", onExitCodes={"operator": "In", "values": list(range(1, 257))})),
                     "spec.podFailurePolicy.rules[0].onExitCodes.values", "must have at most 255 items", id="too-many-values"),
        pytest.param(manifest(**rule(action="Ignore", onExitCodes={"operator": "NotIn", "values": [3, 1]})),
                     "spec.podFailurePolicy.rules[0].onExitCodes.values", "must be ordered", id="unordered"),
        pytest.param(manifest(**rule(action="Ignore", onExitCodes={"operator": "In", "values": [1, 1]})),
                     "spec.podFailurePolicy.rules[0].onExitCodes.values[1]", "Duplicate value: 1", id="duplicate"),
        pytest.param(manifest(**rule(action="Ignore", onExitCodes={"operator": "In", "values": []})),
                     "spec.podFailurePolicy.rules[0].onExitCodes.values", "at least one value is required", id="no-values"),
        pytest.param(manifest(**rule(action="Ignore", onExitCodes={"containerName": "nope", **EXIT_42})),
                     "spec.podFailurePolicy.rules[0].onExitCodes.containerName",
                     "must be one of the container or initContainer names in the pod template", id="unknown-container"),
        pytest.param(manifest(**rule(action="Ignore")), "spec.podFailurePolicy.rules[0]",
                     "specifying one of OnExitCodes and OnPodConditions is required", id="neither"),
        pytest.param(manifest(**rule(action="Ignore", onExitCodes=EXIT_42, onPodConditions=[{"type": "DisruptionTarget"}])),
                     "spec.podFailurePolicy.rules[0]", "specifying both OnExitCodes and OnPodConditions is not supported",
                     id="both"),
        pytest.param(manifest(podFailurePolicy={"rules": [{"action": "Count", "onExitCodes": EXIT_42}] * 21}),
                     "spec.podFailurePolicy.rules", "must have at most 20 items", id="too-many-rules"),
        pytest.param(manifest(**rule(action="Explode", onExitCodes=EXIT_42)), "spec.podFailurePolicy.rules[0].action",
                     "Explode", id="unknown-action"),
        pytest.param(manifest(**rule(action="Ignore", onExitCodes={"operator": "Is", "values": [1]})),
                     "spec.podFailurePolicy.rules[0].onExitCodes.operator", "Is", id="unknown-operator"),
        pytest.param(manifest(backoffLimitPerIndex=1), "spec.backoffLimitPerIndex", "requires indexed completion mode",
                     id="per-index-not-indexed"),
        pytest.param(manifest(maxFailedIndexes=1, **INDEXED), "spec.backoffLimitPerIndex",
                     "when maxFailedIndexes is specified", id="max-failed-without-per-index"),
        pytest.param(manifest(maxFailedIndexes=4, backoffLimitPerIndex=1, **INDEXED), "spec.maxFailedIndexes",
                     "must be less than or equal to completions", id="max-failed-over-completions"),
        pytest.param(manifest(backoffLimitPerIndex=-1, **INDEXED), "spec.backoffLimitPerIndex",
                     "must be greater than or equal to 0", id="negative-per-index"),
    ],
)
def test_validation_names_the_field(m, field, words):
    with pytest.raises(SchemaError) as raised:
        decode(m)
    assert any(f == field and words in msg for f, msg in raised.value.details), raised.value.details


def test_a_valid_policy_and_the_backoff_limit_default():
    ok = decode(manifest(backoffLimitPerIndex=1, maxFailedIndexes=2, **INDEXED,
                         **rule(action="FailIndex", onExitCodes={"containerName": "work", **EXIT_42})))
    assert ok.spec.backoffLimit == 2**31 - 1  # type: ignore[attr-defined]
    assert decode(manifest(**rule(action="Ignore", onPodConditions=[{"type": "DisruptionTarget"}]))).spec.backoffLimit == 6  # type: ignore[attr-defined]


# --- on a real nats-server --------------------------------------------------------------------


async def test_exit_code_42_fails_the_job_at_once_despite_backoff_limit(cluster: Cluster):  # noqa: F811
    ended: list[str] = []

    def exit_code(pod: Pod) -> int | None:
        if not ended:
            ended.append(pod.metadata.name)
            return 42
        return None  # the others run until the Job terminates them

    kubelet = HollowKubelet(cluster.store, cluster.nc, finish=exit_code).start()
    try:
        await cluster.api.apply(job_manifest("fj", completions=4, parallelism=2, backoffLimit=6, **FAIL_POLICY))
        job = await cluster.wait_condition("fj", "Failed", 30)
        pods = await wait_for(lambda: _all_ended(cluster, "fj"), 20, "the other pods of fj terminated")
    finally:
        await kubelet.stop()
    cond = next(c for c in job.status.conditions if c.type == "Failed")
    assert cond.reason == "PodFailurePolicy"
    assert cond.message == f"Container work for pod default/{ended[0]} failed with exit code 42 matching FailJob rule at index 0"
    assert job.status.succeeded == 0 and job.status.active == 0
    assert len(pods) <= 2, f"{len(pods)} pods: the Job retried after a FailJob failure"


FAIL_POLICY = {"podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {"containerName": "work", **EXIT_42}}]}}


async def _all_ended(c: Cluster, name: str) -> list[Pod] | None:
    pods = await c.pods_of(name)
    return pods if all(p.status.phase in ("Succeeded", "Failed") or p.metadata.deletionTimestamp for p in pods) else None


async def test_ignored_exit_code_137_retries_past_the_backoff_limit(cluster: Cluster):  # noqa: F811
    killed: list[str] = []

    def exit_code(pod: Pod) -> int | None:
        if len(killed) < 3:
            killed.append(pod.metadata.name)
            return 137
        return 0

    kubelet = HollowKubelet(cluster.store, cluster.nc, finish=exit_code).start()
    try:
        await cluster.api.apply(job_manifest(
            "oom", completions=1, backoffLimit=1,
            podFailurePolicy={"rules": [{"action": "Ignore", "onExitCodes": {"operator": "In", "values": [137]}}]},
        ))
        job = await cluster.wait_condition("oom", "Complete", 30)
    finally:
        await kubelet.stop()
    assert (job.status.succeeded, job.status.failed) == (1, 0)
    pods = await cluster.pods_of("oom")
    assert len(pods) == 4 and sorted(p.metadata.name for p in pods if p.status.phase == "Failed") == sorted(killed)


async def test_an_index_past_backoff_limit_per_index_fails_alone(cluster: Cluster):  # noqa: F811
    def exit_code(pod: Pod) -> int | None:
        return 3 if pod.metadata.annotations[INDEX_KEY] == "1" else 0

    kubelet = HollowKubelet(cluster.store, cluster.nc, finish=exit_code).start()
    try:
        await cluster.api.apply(job_manifest("per", completions=3, parallelism=3, completionMode="Indexed",
                                             backoffLimitPerIndex=1))
        job = await cluster.wait_condition("per", "Failed", 30)
    finally:
        await kubelet.stop()
    cond = next(c for c in job.status.conditions if c.type == "Failed")
    assert (cond.reason, cond.message) == ("FailedIndexes", "Job has failed indexes")
    assert (job.status.failedIndexes, job.status.completedIndexes) == ("1", "0,2")
    assert (job.status.succeeded, job.status.failed) == (2, 2)
    pods = await cluster.pods_of("per")
    assert sorted(p.metadata.annotations[INDEX_KEY] for p in pods) == ["0", "1", "1", "2"], "index 1 retried past its limit"
