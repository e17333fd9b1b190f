"""The benchmark's ideal rolling update (bench/rolling_ideal.py), Kubernetes' rolling algorithm
played with instant controllers: every pod is started exactly once, no step starts more than
maxSurge + maxUnavailable pods, and the steps are the dependent ones Kubernetes' rules give."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.rolling_ideal import fenceposts, ideal_seconds, rolling_steps, waves
from services.deployment import reconcile as rc
from tests.test_deployment_reconcile import deployment

budgets = st.integers(1, 200).flatmap(
    lambda r: st.tuples(st.just(r), st.integers(0, r + 1), st.integers(0, r)).filter(lambda t: t[1] or t[2])
)


@given(budgets)
def test_every_new_pod_starts_once_within_the_budget(case):
    replicas, surge, unavailable = case
    steps = rolling_steps(replicas, surge, unavailable)
    assert sum(steps) == replicas
    assert all(0 < n <= surge + unavailable for n in steps)
    assert len(steps) >= math.ceil(replicas / (surge + unavailable))


@given(budgets)
def test_dependent_steps_are_the_waves_of_a_fresh_rollout(case):
    # From a fully available old ReplicaSet every step but the last starts a full wave.
    replicas, surge, unavailable = case
    steps = rolling_steps(replicas, surge, unavailable)
    assert len(steps) == waves(replicas, surge, unavailable)
    assert all(n == min(replicas, surge + unavailable) for n in steps[:-1])


@pytest.mark.parametrize(
    ("replicas", "surge", "unavailable", "want"),
    [
        pytest.param(100, "25%", "25%", (50, 50), id="100-25pct-25pct"),
        pytest.param(100, "25%", 0, (25, 25, 25, 25), id="surge-only"),
        pytest.param(100, 0, "25%", (25, 25, 25, 25), id="unavailable-only"),
        pytest.param(7, "25%", "25%", (3, 3, 1), id="last-step-smaller"),
        pytest.param(3, 1, 0, (1, 1, 1), id="one-by-one"),
        pytest.param(4, "0%", "0%", (1, 1, 1, 1), id="both-zero-means-one-unavailable"),
        pytest.param(10, "100%", 0, (10,), id="all-at-once"),
    ],
)
def test_steps_of_known_rollouts(replicas, surge, unavailable, want):
    assert rolling_steps(replicas, *fenceposts(replicas, surge, unavailable)) == want


@given(st.integers(1, 300), st.sampled_from(["0%", "10%", "25%", "33%", "50%", "100%"]),
       st.sampled_from(["0%", "10%", "25%", "33%", "50%", "100%"]))
def test_fenceposts_resolve_as_the_deployment_controller_does(replicas, surge, unavailable):
    d = deployment(replicas, surge, unavailable)
    assert fenceposts(replicas, surge, unavailable) == (rc.surge_and_unavailable(d)[0], rc.max_unavailable(d))


def test_ideal_sums_the_start_time_of_each_step():
    assert ideal_seconds((50, 50), lambda n: n / 100) == 1.0
    assert ideal_seconds((3, 3, 1), {3: 0.5, 1: 0.2}.__getitem__) == 1.2
