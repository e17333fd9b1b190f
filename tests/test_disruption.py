"""PodDisruptionBudgets: the pure rules (status as Kubernetes' disruption controller computes it,
one eviction's verdict, validation), then the disruption controller, the api's evictions and
``kyb drain`` on a real nats-server with the api, the ReplicaSet controller and gc, pods run by
a hollow kubelet that reports them Ready as the test allows."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kyb import errors
from kyb.cli.drainplan import DrainOptions
from kyb.cli.nodes import drain
from kyb.client import ApiClient
from kyb.store import Store
from schemas.pod import Pod
from schemas.policy import (
    REFUSED,
    PodDisruptionBudget,
    Scale,
    budget_status,
    eviction_verdict,
    taken,
)
from schemas.validation import SchemaError, decode
from services.disruption.service import DisruptionController
from tests.cluster import QUIET, HollowKubelet, Services, wait_api, wait_for, workload_manifest

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def pdb(spec: dict[str, Any], status: dict[str, Any] | None = None, generation: int = 1) -> PodDisruptionBudget:
    return msgspec.convert({"metadata": {"name": "b", "namespace": "default", "generation": generation},
                            "spec": {"selector": {"matchLabels": {"app": "a"}}, **spec}, "status": status or {}},
                           PodDisruptionBudget)


def pod(name: str, ready: bool = True, owner: str = "rs-1", deleting: bool = False) -> Pod:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "labels": {"app": "a"}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner, "uid": owner,
                                    "controller": True}]
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return msgspec.convert({"metadata": meta, "status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True" if ready else "False"}]}}, Pod)


RS = {"rs-1": Scale("ReplicaSet", "rs-1", 4)}


# -- pure ------------------------------------------------------------------------------------

def test_an_integer_min_available_counts_the_pods_themselves() -> None:
    s = budget_status(pdb({"minAvailable": 2}), [pod("p1"), pod("p2"), pod("p3", ready=False)], {}, NOW)
    assert (s.expectedPods, s.currentHealthy, s.desiredHealthy, s.disruptionsAllowed) == (3, 2, 2, 0)
    assert s.conditions[0].type == "DisruptionAllowed" and s.conditions[0].reason == "InsufficientPods"
    assert s.observedGeneration == 1


def test_percentages_and_max_unavailable_count_the_controllers_replicas() -> None:
    pods = [pod("p1"), pod("p2"), pod("p3")]  # 3 of the ReplicaSet's 4
    s = budget_status(pdb({"minAvailable": "50%"}), pods, RS, NOW)
    assert (s.expectedPods, s.desiredHealthy, s.disruptionsAllowed) == (4, 2, 1)
    s = budget_status(pdb({"maxUnavailable": 1}), pods, RS, NOW)
    assert (s.expectedPods, s.desiredHealthy, s.disruptionsAllowed) == (4, 3, 0)
    s = budget_status(pdb({"maxUnavailable": "30%"}), pods, RS, NOW)  # 1.2 rounds up to 2 unavailable
    assert (s.desiredHealthy, s.disruptionsAllowed) == (2, 1)
    assert s.conditions[0].reason == "SufficientPods"


def test_a_pod_without_a_controller_makes_a_percentage_allow_nothing() -> None:
    s = budget_status(pdb({"maxUnavailable": "50%"}), [pod("p1"), pod("bare", owner="")], RS, NOW)
    assert s.disruptionsAllowed == 0 and s.conditions[0].reason == "SyncFailed" and "bare" in s.conditions[0].message


def test_neither_field_lets_every_healthy_pod_go() -> None:
    assert budget_status(pdb({}), [pod("p1"), pod("p2")], {}, NOW).disruptionsAllowed == 2


def test_pods_let_go_count_as_unhealthy_until_deleted_or_two_minutes_passed() -> None:
    recent = (NOW - dt.timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    old = (NOW - dt.timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    budget = pdb({"minAvailable": 1}, {"disruptedPods": {"p1": recent, "p2": old, "gone": recent}})
    s = budget_status(budget, [pod("p1"), pod("p2"), pod("p3")], {}, NOW)
    assert s.disruptedPods == {"p1": recent}  # p2 expired, "gone" no longer exists
    assert (s.currentHealthy, s.disruptionsAllowed) == (2, 1)


def test_an_eviction_takes_a_disruption_or_is_refused_with_the_reason() -> None:
    ok = pdb({"minAvailable": 1}, {"observedGeneration": 1, "disruptionsAllowed": 1, "currentHealthy": 2,
                                   "desiredHealthy": 1})
    assert eviction_verdict(ok, pod("p1")).take
    after = taken(ok, "p1", NOW)
    assert after is not None and after.status.disruptionsAllowed == 0 and "p1" in after.status.disruptedPods
    assert taken(after, "p2", NOW) is None  # nothing left: the api refuses instead
    refused = eviction_verdict(after, pod("p2"))
    assert not refused.allow and refused.code == 429 and refused.message == REFUSED
    assert "needs 1 healthy pods and has 2 currently" in refused.cause
    stale = pdb({"minAvailable": 1}, {"observedGeneration": 1, "disruptionsAllowed": 5}, generation=2)
    assert eviction_verdict(stale, pod("p1")).code == 429  # the controller has not seen the new spec


def test_unhealthy_pods_go_without_taking_a_disruption_when_the_policy_lets_them() -> None:
    status = {"observedGeneration": 1, "disruptionsAllowed": 0, "currentHealthy": 2, "desiredHealthy": 2}
    sick = pod("p3", ready=False)
    assert eviction_verdict(pdb({"minAvailable": 2}, status), sick) == eviction_verdict(
        pdb({"minAvailable": 2, "unhealthyPodEvictionPolicy": "AlwaysAllow"}, status), sick)
    verdict = eviction_verdict(pdb({"minAvailable": 2}, status), sick)
    assert verdict.allow and not verdict.take
    short = {**status, "currentHealthy": 1}  # IfHealthyBudget: only while the budget is met
    assert not eviction_verdict(pdb({"minAvailable": 2}, short), sick).allow
    assert eviction_verdict(pdb({"minAvailable": 2, "unhealthyPodEvictionPolicy": "AlwaysAllow"}, short), sick).allow


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=12),
       st.one_of(st.integers(0, 15).map(lambda n: {"minAvailable": n}),
                 st.integers(0, 100).map(lambda p: {"minAvailable": f"{p}%"}),
                 st.integers(0, 15).map(lambda n: {"maxUnavailable": n}),
                 st.integers(0, 100).map(lambda p: {"maxUnavailable": f"{p}%"})),
       st.integers(0, 15))
def test_allowed_disruptions_never_take_healthy_pods_below_the_desired(pods_spec, spec, replicas) -> None:
    pods = [pod(f"p{i}", ready=r, deleting=d) for i, (r, d) in enumerate(pods_spec)]
    s = budget_status(pdb(spec), pods, {"rs-1": Scale("ReplicaSet", "rs-1", replicas)}, NOW)
    healthy = sum(1 for (r, d) in pods_spec if r and not d)
    assert s.currentHealthy == healthy
    assert 0 <= s.disruptionsAllowed == max(0, healthy - s.desiredHealthy)
    assert s.desiredHealthy <= max(s.expectedPods, spec.get("minAvailable", 0) if isinstance(spec.get("minAvailable"), int) else 0)


@pytest.mark.parametrize("spec, field", [
    ({"minAvailable": 1, "maxUnavailable": 1}, "spec"),
    ({"minAvailable": -1}, "spec.minAvailable"),
    ({"maxUnavailable": "120%"}, "spec.maxUnavailable"),
    ({"maxUnavailable": "lots"}, "spec.maxUnavailable"),
    ({"unhealthyPodEvictionPolicy": "Sometimes"}, "spec.unhealthyPodEvictionPolicy"),
])
def test_bad_budgets_are_refused_naming_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(SchemaError) as e:
        decode({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "b"}, "spec": spec})
    assert field in str(e.value)


# -- on the bus ------------------------------------------------------------------------------

@pytest.fixture
async def env(nats_url, nc):
    base = Services(["api", "gc", "replication"], nats_url, QUIET).start()
    store = Store(nc.jetstream())
    await wait_api(nc)
    kubelet = HollowKubelet(store, nc, node="hollow-0", ready=lambda p: True)  # hold() keeps new pods unready
    kubelet.start()
    dc = DisruptionController(nc, store)
    await dc.start()
    stop = asyncio.Event()
    task = asyncio.create_task(dc.controller.run(stop))
    try:
        yield store, ApiClient(nc), kubelet
    finally:
        stop.set()
        await task
        await dc.stop()
        await kubelet.stop()
        await base.stop()


async def budget_allows(store: Store, n: int) -> PodDisruptionBudget | None:
    b = await store.get("PodDisruptionBudget", "default", "web")
    return b if b.status.disruptionsAllowed == n and b.status.observedGeneration == b.metadata.generation else None


async def running(store: Store) -> list[Pod]:
    return sorted((p for p in await store.list("Pod", "default") if not p.metadata.deletionTimestamp
                   and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions)),
                  key=lambda p: p.metadata.name)


async def ready_pods(store: Store, n: int) -> list[Pod] | None:
    pods = await running(store)
    return pods if len(pods) == n else None


async def test_evictions_honour_the_budget_and_concurrent_ones_never_both_take_the_last(env) -> None:
    store, api, kubelet = env
    await api.apply(workload_manifest("ReplicaSet", "web", 3, "kyb-test:1"))
    await api.apply({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                     "metadata": {"name": "web", "namespace": "default"},
                     "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}})
    await wait_for(lambda: budget_allows(store, 1), 20, "the budget allows one disruption of three Ready pods")
    pods = await wait_for(lambda: ready_pods(store, 3), 20, "three Ready pods")
    kubelet.hold()  # replacements stay unready: the budget cannot recover meanwhile
    results = await asyncio.gather(*(api.evict("default", p.metadata.name) for p in pods[:2]), return_exceptions=True)
    refused = [r for r in results if isinstance(r, errors.TooManyRequests)]
    assert len(refused) == 1 and len(results) - len(refused) == 1, results
    assert refused[0].message == REFUSED and "needs 2 healthy pods and has" in str(refused[0])
    with pytest.raises(errors.TooManyRequests):
        await api.evict("default", pods[2].metadata.name)
    # the replacement turns Ready: one disruption allowed again, and the next eviction goes
    kubelet.release()
    await wait_for(lambda: budget_allows(store, 1), 20, "the budget recovers once the replacement is Ready")
    left = [p for p in await running(store) if p.metadata.name in {q.metadata.name for q in pods}]
    await api.evict("default", left[0].metadata.name)
    with pytest.raises(errors.NotFound):
        await api.evict("default", "no-such-pod")


async def test_drain_waits_for_the_budget_and_says_so(env) -> None:
    store, api, kubelet = env
    await api.apply({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "hollow-0"}})
    await api.apply(workload_manifest("ReplicaSet", "web", 2, "kyb-test:1"))
    await api.apply({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                     "metadata": {"name": "web", "namespace": "default"},
                     "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "web"}}}})
    await wait_for(lambda: budget_allows(store, 0), 20, "maxUnavailable 0 allows nothing")
    await wait_for(lambda: ready_pods(store, 2), 20, "two Ready pods")
    warnings: list[str] = []
    with pytest.raises(errors.Temporary, match="global timeout reached"):
        await drain(api, "hollow-0", DrainOptions(), timeout=1.5, echo=lambda _: None, warn=warnings.append,
                    retry=0.3)
    assert any('error when evicting pods/"web-' in w and "(will retry after 0s)" in w and REFUSED in w
               for w in warnings), warnings
    assert len(await running(store)) == 2  # nothing was evicted
    # the budget relaxed: the drain goes through
    await api.apply({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                     "metadata": {"name": "web", "namespace": "default"},
                     "spec": {"maxUnavailable": 2, "selector": {"matchLabels": {"app": "web"}}}})
    await wait_for(lambda: budget_allows(store, 2), 20, "maxUnavailable 2 allows both")
    lines: list[str] = []
    assert await drain(api, "hollow-0", DrainOptions(), timeout=20, echo=lines.append, warn=lines.append,
                       retry=0.3)
    assert any(line.endswith("evicted") for line in lines) and lines[-1] == "node/hollow-0 drained"
