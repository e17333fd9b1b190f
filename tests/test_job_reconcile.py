"""Properties of the pure Job plan, driven through a simulated cluster: pods start, succeed,
fail, get deleted, and the controller may stop half-way through applying a plan."""

from __future__ import annotations

import datetime as dt
import itertools

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from schemas.batch import Job
from schemas.defaults import apply_defaults
from schemas.helpers import format_time
from schemas.pod import ContainerStatus, Pod
from services.job import reconcile
from services.job.reconcile import FINALIZER, INDEX_KEY, Settings, format_indexes, parse_indexes

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
FAST = Settings(backoff_base=1.0, backoff_cap=8.0)


def job(**spec) -> Job:
    raw = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "pi", "namespace": "default", "uid": "job-uid", "resourceVersion": "1"},
        "spec": {
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}},
            **spec,
        },
    }
    j = apply_defaults(msgspec.convert(raw, Job))
    return reconcile.with_generated_selector(j) or j


class World:
    """Pods as a store holds them, and a controller that applies plans (maybe partially)."""

    def __init__(self, j: Job) -> None:
        self.job = j
        self.pods: dict[str, Pod] = {}
        self.names = itertools.count()
        self.now = T0
        self.ever_succeeded: set[str] = set()
        self.ever_failed: set[str] = set()
        self.max_occupying = 0
        self.plans = 0
        self.finished = False  # a Complete or Failed condition has been seen

    def occupying(self) -> list[Pod]:
        return [p for p in self.pods.values() if p.status.phase not in ("Succeeded", "Failed")]

    def observe(self) -> None:
        """What a correct count must include: tracked pods that succeeded, and tracked pods that
        failed or were deleted before succeeding."""
        for p in self.pods.values():
            if FINALIZER not in p.metadata.finalizers:
                continue
            if p.status.phase == "Succeeded":
                self.ever_succeeded.add(p.metadata.uid)
            elif p.status.phase == "Failed" or p.metadata.deletionTimestamp:
                self.ever_failed.add(p.metadata.uid)

    def check(self) -> None:
        self.observe()
        occ = self.occupying()
        self.max_occupying = max(self.max_occupying, len(occ))
        assert len(occ) <= (self.job.spec.parallelism or 1), "more pods than parallelism at once"
        if self.job.spec.completionMode == "Indexed":
            idx = [p.metadata.annotations[INDEX_KEY] for p in occ]
            assert len(idx) == len(set(idx)), f"two running pods with one index: {idx}"
        un = reconcile.read_uncounted(self.job)
        st_ = self.job.status
        assert st_.succeeded + len(un.succeeded) <= len(self.ever_succeeded), "a success counted twice"
        assert st_.failed + len(un.failed) <= len(self.ever_failed), "a failure counted twice"
        if reconcile.is_job_finished(self.job) and not self.finished:
            assert not un, f"finished with results still uncounted: {un}"
            self.finished = True
        complete = reconcile.condition(self.job, "Complete")
        by_policy = complete is not None and complete.reason == reconcile.SUCCESS_POLICY_REASON
        if complete is not None and complete.status == "True" and self.job.spec.completions is not None and not by_policy:
            assert st_.succeeded >= self.job.spec.completions, (
                f"Complete with succeeded={st_.succeeded} of completions={self.job.spec.completions}"
            )

    def reconcile(self, steps: int = 99) -> reconcile.Plan:
        """Plan and apply the first ``steps`` writes (in the service's order)."""
        p = reconcile.plan(self.job, list(self.pods.values()), self.now, FAST)
        self.plans += 1
        writes = []
        writes.append(lambda: self._write_job(p))
        writes += [lambda n=n: self._release(n) for n in p.release]
        writes += [lambda n=n: self._delete(n) for n in p.delete]
        for n in p.discard:
            writes += [lambda n=n: self._release_unfinished(n), lambda n=n: self._delete(n)]
        writes += [lambda pod=pod: self._create(pod) for pod in p.create]
        for w in writes[:steps]:
            w()
            self.check()
        return p

    def _write_job(self, p: reconcile.Plan) -> None:
        meta = reconcile.write_uncounted(self.job.metadata, p.uncounted)
        self.job = replace(self.job, metadata=meta, status=p.status)

    def _release(self, name: str) -> None:
        pod = self.pods.get(name)
        if pod is not None:
            fin = [f for f in pod.metadata.finalizers if f != FINALIZER]
            self.pods[name] = replace(pod, metadata=replace(pod.metadata, finalizers=fin))
            self._gc(name)

    def _release_unfinished(self, name: str) -> None:
        """A discarded pod's finalizer goes, as the service does it: unless the stored pod has
        finished meanwhile (then its result is recorded like any other)."""
        pod = self.pods.get(name)
        if pod is not None and pod.status.phase not in ("Succeeded", "Failed"):
            self._release(name)

    def _delete(self, name: str) -> None:
        self.observe()
        pod = self.pods.get(name)
        if pod is None:
            return
        if pod.metadata.finalizers or pod.status.phase not in ("Succeeded", "Failed"):
            self.pods[name] = replace(pod, metadata=replace(pod.metadata, deletionTimestamp=format_time(self.now)))
        else:
            del self.pods[name]

    def _gc(self, name: str) -> None:
        pod = self.pods[name]
        if pod.metadata.deletionTimestamp and not pod.metadata.finalizers and pod.status.phase in ("Succeeded", "Failed"):
            del self.pods[name]

    def _create(self, pod: Pod) -> None:
        n = next(self.names)
        name = f"{pod.metadata.generateName}{n}"
        meta = replace(pod.metadata, name=name, uid=f"uid-{n}", creationTimestamp=format_time(self.now))
        self.pods[name] = replace(pod, metadata=meta)

    # -- the outside world ---------------------------------------------------------------

    def finish(self, i: int, ok: bool) -> None:
        self.observe()
        running = sorted(n for n, p in self.pods.items() if p.status.phase not in ("Succeeded", "Failed"))
        if not running:
            return
        name = running[i % len(running)]
        pod = self.pods[name]
        ok = ok and pod.metadata.deletionTimestamp is None
        self.pods[name] = replace(pod, status=replace(pod.status, phase="Succeeded" if ok else "Failed"))
        self._gc(name)

    def kubelet_removes_terminating(self) -> None:
        for name, pod in list(self.pods.items()):
            if pod.metadata.deletionTimestamp and pod.status.phase not in ("Succeeded", "Failed"):
                self.pods[name] = replace(pod, status=replace(pod.status, phase="Failed"))
                self._gc(name)


actions = st.lists(
    st.one_of(
        st.tuples(st.just("finish"), st.integers(0, 20), st.booleans()),
        st.tuples(st.just("reconcile"), st.integers(0, 12), st.none()),
        st.tuples(st.just("tick"), st.integers(1, 20), st.none()),
        st.tuples(st.just("kubelet"), st.none(), st.none()),
    ),
    max_size=60,
)


def drive(w: World, acts) -> None:
    for kind, a, b in acts:
        if kind == "finish":
            w.finish(a, b)
        elif kind == "reconcile":
            w.reconcile(steps=a)
        elif kind == "tick":
            w.now += dt.timedelta(seconds=a)
        else:
            w.kubelet_removes_terminating()
        w.check()


def settle(w: World, ok: bool = True) -> None:
    """Run to the end: every pod succeeds (or fails), the controller finishes its writes."""
    for _ in range(400):
        p = w.reconcile()
        if reconcile.is_job_finished(w.job) and not p.release and not w.occupying() and not reconcile.read_uncounted(w.job):
            w.reconcile()
            return
        w.finish(0, ok)
        w.kubelet_removes_terminating()
        w.now += dt.timedelta(seconds=10)
    raise AssertionError(f"job never finished: {w.job.status}")


job_shapes = st.one_of(
    st.builds(lambda c, p: {"completions": c, "parallelism": p}, st.integers(1, 6), st.integers(1, 4)),
    st.builds(lambda p: {"parallelism": p}, st.integers(1, 4)),
    st.builds(
        lambda c, p: {"completions": c, "parallelism": p, "completionMode": "Indexed"}, st.integers(1, 6), st.integers(1, 4)
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=job_shapes, acts=actions)
def test_never_over_parallelism_never_double_counted_and_completes(shape, acts):
    w = World(job(backoffLimit=1000, **shape))
    drive(w, acts)
    settle(w)
    status = w.job.status
    assert any(c.type == "Complete" and c.status == "True" for c in status.conditions)
    # everything that finished is counted exactly once in the end
    assert status.succeeded == len(w.ever_succeeded)
    assert status.failed == len(w.ever_failed)
    assert status.active == 0
    assert not any(FINALIZER in p.metadata.finalizers for p in w.pods.values())
    if shape.get("completionMode") == "Indexed":
        assert parse_indexes(status.completedIndexes) == set(range(shape["completions"]))
    elif "completions" in shape:
        assert status.succeeded >= shape["completions"]


class LaggingWorld(World):
    """The service's view: the Job read from the store (fresh: every write names its revision),
    the pods from a watch cache that lags the store by any number of writes but never goes
    back, and expectations: a plan waits until the cache shows the pods it created and deleted."""

    def __init__(self, j: Job) -> None:
        super().__init__(j)
        self.history: list[dict[str, Pod]] = [{}]
        self.seen = 0  # history index of the cache
        self.floor = 0  # expectations: the cache must have reached this index

    def check(self) -> None:
        super().check()
        if self.history[-1] != self.pods:
            self.history.append(dict(self.pods))

    def reconcile_lagging(self, lag: int) -> reconcile.Plan:
        self.seen = max(self.seen, self.floor, len(self.history) - 1 - lag)
        view = list(self.history[self.seen].values())
        p = reconcile.plan(self.job, view, self.now, FAST)
        self._write_job(p)
        self.check()
        writes = [lambda n=n: self._release(n) for n in p.release]
        expected = [lambda n=n: self._delete(n) for n in p.delete]
        for n in p.discard:
            expected += [lambda n=n: self._release_unfinished(n), lambda n=n: self._delete(n)]
        expected += [lambda pod=pod: self._create(pod) for pod in p.create]
        for w in writes:
            w()
            self.check()
        for w in expected:
            w()
            self.check()
            self.floor = len(self.history) - 1
        return p


lagging_actions = st.lists(
    st.one_of(
        st.tuples(st.just("finish"), st.integers(0, 20), st.booleans()),
        st.tuples(st.just("reconcile"), st.integers(0, 6), st.none()),
        st.tuples(st.just("tick"), st.integers(1, 20), st.none()),
        st.tuples(st.just("kubelet"), st.none(), st.none()),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=job_shapes, acts=lagging_actions)
def test_a_lagging_pod_cache_never_counts_twice_nor_completes_short(shape, acts):
    """Kubelets finish pods and finalizer removals land while the controller plans from an
    older view of the pods: no result is counted twice, a Job is never Complete with fewer
    succeeded than completions, and in the end every result is counted once."""
    w = LaggingWorld(job(backoffLimit=1000, **shape))
    for kind, a, b in acts:
        if kind == "finish":
            w.finish(a, b)
        elif kind == "reconcile":
            w.reconcile_lagging(lag=a)
        elif kind == "tick":
            w.now += dt.timedelta(seconds=a)
        else:
            w.kubelet_removes_terminating()
        w.check()
    for _ in range(400):
        p = w.reconcile_lagging(lag=0)
        if reconcile.is_job_finished(w.job) and not p.release and not w.occupying() and not reconcile.read_uncounted(w.job):
            break
        w.finish(0, True)
        w.kubelet_removes_terminating()
        w.check()
        w.now += dt.timedelta(seconds=10)
    w.reconcile_lagging(lag=0)
    status = w.job.status
    assert reconcile.condition(w.job, "Complete") is not None
    assert status.succeeded == len(w.ever_succeeded)
    assert status.failed == len(w.ever_failed)


def _released(pods: dict[str, Pod]) -> dict[str, Pod]:
    return {n: replace(p, metadata=replace(p.metadata, finalizers=[])) for n, p in pods.items()}


def test_the_last_success_completes_the_job_only_once_it_is_counted():
    """The race behind an early Complete: the plan that records the last successes in the
    uncounted set must not also declare the Job Complete, whatever the pod cache shows next."""
    w = World(job(completions=2, parallelism=2))
    w.reconcile()
    w.finish(0, True)
    w.finish(0, True)
    done = dict(w.pods)  # both Succeeded, both still tracked
    first = reconcile.plan(w.job, list(done.values()), w.now, FAST)
    assert sorted(first.release) == sorted(done) and len(first.uncounted.succeeded) == 2
    assert first.status.succeeded == 0 and reconcile.condition(replace(w.job, status=first.status), "Complete") is None
    recorded = replace(w.job, metadata=reconcile.write_uncounted(w.job.metadata, first.uncounted), status=first.status)

    # the cache has not seen the finalizer removals yet: nothing changes, nothing new is started
    again = reconcile.plan(recorded, list(done.values()), w.now, FAST)
    assert again.status.succeeded == 0 and not again.create and again.uncounted == first.uncounted
    assert not reconcile.is_job_finished(replace(recorded, status=again.status))

    # one removal seen: one counted, still not Complete
    (a, b) = sorted(done)
    half = {**done, a: _released(done)[a]}
    step = reconcile.plan(recorded, list(half.values()), w.now, FAST)
    assert step.status.succeeded == 1 and step.uncounted.succeeded == [done[b].metadata.uid]
    assert not reconcile.is_job_finished(replace(recorded, status=step.status))

    # both seen, from the Job as recorded before either count: each counted once, and the
    # Complete condition goes out in the same write as the counts that reach completions
    final = reconcile.plan(recorded, list(_released(done).values()), w.now, FAST)
    counted = replace(recorded, metadata=reconcile.write_uncounted(recorded.metadata, final.uncounted), status=final.status)
    complete = reconcile.condition(counted, "Complete")
    assert final.status.succeeded == 2 and not final.uncounted
    assert complete is not None and complete.reason == "CompletionsReached"
    assert not final.create and not final.release
    # and a later look counts nothing again
    assert reconcile.plan(counted, list(_released(done).values()), w.now, FAST).status == final.status


def test_a_pod_that_finished_before_its_discard_is_counted_not_dropped():
    """Suspension discards the pods the cache shows running; one that succeeded meanwhile keeps
    its finalizer (the service checks the stored pod) and its success is counted."""
    w = World(job(completions=2, parallelism=2))
    w.reconcile()
    stale = list(w.pods.values())  # both running in the cache
    w.finish(0, True)
    w.job = replace(w.job, spec=replace(w.job.spec, suspend=True))
    p = reconcile.plan(w.job, stale, w.now, FAST)
    assert sorted(p.discard) == sorted(w.pods)
    w._write_job(p)
    for n in p.discard:
        w._release_unfinished(n)
        w._delete(n)
    w.kubelet_removes_terminating()
    w.reconcile()
    w.reconcile()
    assert (w.job.status.succeeded, w.job.status.failed) == (1, 0)


@given(st.sets(st.integers(0, 60)))
def test_completed_indexes_round_trip(indexes):
    assert parse_indexes(format_indexes(indexes)) == indexes


@pytest.mark.parametrize(
    ("indexes", "text"),
    [pytest.param({0, 1, 2, 4}, "0-2,4", id="range-and-single"), pytest.param(set(), "", id="empty")],
)
def test_completed_indexes_format(indexes, text):
    assert format_indexes(indexes) == text


def test_work_queue_job_creates_no_new_pod_after_a_success_and_completes_when_all_ended():
    w = World(job(parallelism=3))
    w.reconcile()
    assert len(w.occupying()) == 3
    w.finish(0, True)
    w.reconcile()
    assert len(w.occupying()) == 2, "a new pod was started after one succeeded"
    assert not reconcile.is_job_finished(w.job)
    w.finish(0, True)
    w.finish(0, False)
    w.reconcile()
    w.reconcile()
    assert reconcile.is_job_finished(w.job)
    assert (w.job.status.succeeded, w.job.status.failed) == (2, 1)


def test_backoff_limit_fails_the_job_and_backoff_delays_recreation():
    w = World(job(backoffLimit=2, completions=1))
    w.reconcile()
    w.finish(0, False)
    p = w.reconcile()
    assert not w.occupying() and p.requeue_after == pytest.approx(1.0), "failed pod recreated without back-off"
    w.now += dt.timedelta(seconds=1)
    w.reconcile()
    assert len(w.occupying()) == 1
    w.finish(0, False)
    w.reconcile()
    w.now += dt.timedelta(seconds=1)
    p = w.reconcile()
    assert not w.occupying() and p.requeue_after == pytest.approx(1.0), "back-off did not double"
    w.now += dt.timedelta(seconds=1)
    w.reconcile()
    w.finish(0, False)
    w.reconcile()
    w.reconcile()
    failed = next(c for c in w.job.status.conditions if c.type == "Failed")
    assert failed.reason == "BackoffLimitExceeded"
    assert w.job.status.failed == 3


def test_onfailure_restarts_count_toward_the_backoff_limit():
    w = World(job(backoffLimit=2, completions=1, template={"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "b"}]}}))
    w.reconcile()
    (name,) = w.pods
    pod = w.pods[name]
    cs = ContainerStatus(name="c", restartCount=2)
    w.pods[name] = replace(pod, status=replace(pod.status, phase="Running", containerStatuses=[cs]))
    w.reconcile()
    w.reconcile()
    assert next(c for c in w.job.status.conditions if c.type == "Failed").reason == "BackoffLimitExceeded"
    assert w.pods[name].metadata.deletionTimestamp is not None, "the active pod was not deleted"


def test_active_deadline_fails_the_job_and_deletes_active_pods():
    w = World(job(completions=5, parallelism=2, activeDeadlineSeconds=30))
    p = w.reconcile()
    assert p.requeue_after == pytest.approx(30)
    w.now += dt.timedelta(seconds=31)
    w.reconcile()
    assert next(c for c in w.job.status.conditions if c.type == "Failed").reason == "DeadlineExceeded"
    assert all(p.metadata.deletionTimestamp for p in w.occupying())
    w.kubelet_removes_terminating()
    w.reconcile()
    w.reconcile()
    assert w.job.status.failed == 2 and w.job.status.active == 0


def test_suspend_deletes_active_pods_and_resume_restarts():
    w = World(job(completions=3, parallelism=2))
    w.reconcile()
    w.job = replace(w.job, spec=replace(w.job.spec, suspend=True))
    w.reconcile()
    assert next(c for c in w.job.status.conditions if c.type == "Suspended").status == "True"
    w.kubelet_removes_terminating()
    w.reconcile()
    assert not w.occupying() and w.job.status.failed == 0, "suspension counted as failures"
    w.job = replace(w.job, spec=replace(w.job.spec, suspend=False))
    w.reconcile()
    assert len(w.occupying()) == 2
    assert next(c for c in w.job.status.conditions if c.type == "Suspended").status == "False"


def test_indexed_pods_carry_index_hostname_and_env():
    w = World(job(completions=3, parallelism=3, completionMode="Indexed"))
    p = w.reconcile()
    assert sorted(pod.metadata.annotations[INDEX_KEY] for pod in p.create) == ["0", "1", "2"]
    pod = next(pod for pod in p.create if pod.metadata.annotations[INDEX_KEY] == "1")
    assert pod.spec.hostname == "pi-1"
    env = pod.spec.containers[0].env[-1]
    assert env.name == "JOB_COMPLETION_INDEX"
    assert env.valueFrom.fieldRef.fieldPath == f"metadata.annotations['{INDEX_KEY}']"
    assert pod.metadata.labels["batch.kubernetes.io/job-name"] == "pi"
    assert pod.metadata.labels["controller-uid"] == "job-uid"
    assert pod.metadata.finalizers == [FINALIZER]


def test_ttl_deletes_the_job_and_its_pods():
    w = World(job(completions=1, ttlSecondsAfterFinished=60))
    settle(w)
    p = w.reconcile()
    assert not p.delete_job and p.requeue_after is not None and p.requeue_after <= 60
    w.now += dt.timedelta(seconds=61)
    before = set(w.pods)
    assert before, "the finished pod should still be there before the TTL"
    p = w.reconcile()
    assert p.delete_job and set(p.discard) == before
    assert not w.pods
