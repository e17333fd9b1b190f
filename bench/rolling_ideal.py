"""The ideal length of a Deployment's rolling update, from Kubernetes' own algorithm.

Kubernetes' deployment controller (pkg/controller/deployment/rolling.go) rolls a Deployment in
syncs: each sync either scales the new ReplicaSet up (``reconcileNewReplicaSet``: the sum of all
ReplicaSets' ``spec.replicas`` stays within ``replicas + maxSurge``, util's
``NewRSNewReplicas``) or, failing that, scales old ones down (``reconcileOldReplicaSets``: at
most ``all - minAvailable - newUnavailable``, first the unhealthy pods of
``cleanupUnhealthyReplicas``, then ``available - minAvailable`` of the available ones, with
``minAvailable = replicas - maxUnavailable``). Only available pods let an old ReplicaSet shrink,
so each scale-down waits for the new pods of the step before to be Ready.

:func:`rolling_steps` plays that algorithm with instant controllers (every sync, pod creation and
deletion takes no time) from a fully available old ReplicaSet, and returns how many new pods
each dependent step starts. The ideal rollout is the sum of the time it takes to start each
step's pods (:func:`ideal_seconds`); nothing else in an instant cluster waits.
Pure: the benchmark measures the start times and the unit tests check the steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


def fenceposts(replicas: int, surge: int | str, unavailable: int | str) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as Kubernetes resolves them: a percentage of ``replicas``,
    surge rounded up and unavailable down; when both are 0, one pod may be unavailable
    (util's ``ResolveFenceposts``). maxUnavailable is capped at ``replicas`` (``MaxUnavailable``)."""

    def scaled(value: int | str, round_up: bool) -> int:
        if isinstance(value, int):
            return value
        fraction = int(value.rstrip("%")) * replicas / 100
        return math.ceil(fraction) if round_up else math.floor(fraction)

    s, u = scaled(surge, True), scaled(unavailable, False)
    if s == 0 and u == 0:
        u = 1
    return s, min(u, replicas)


@dataclass
class _State:
    replicas: int
    surge: int
    unavailable: int
    new: int = 0            # the new ReplicaSet's spec.replicas
    new_available: int = 0
    old: int = 0            # the old ReplicaSet's spec.replicas (all of its pods available)

    def scale_new_up(self) -> bool:
        """reconcileNewReplicaSet with NewRSNewReplicas; True if it scaled."""
        if self.new >= self.replicas:
            return False
        room = self.replicas + self.surge - (self.new + self.old)
        if room <= 0:
            return False
        self.new += min(room, self.replicas - self.new)
        return True

    def scale_old_down(self) -> bool:
        """reconcileOldReplicaSets; True if it scaled. The old pods are all available, so
        cleanupUnhealthyReplicas has nothing to remove."""
        if self.old == 0:
            return False
        min_available = self.replicas - self.unavailable
        max_scaled_down = (self.new + self.old) - min_available - (self.new - self.new_available)
        if max_scaled_down <= 0:
            return False
        down = min(self.old, self.old + self.new_available - min_available)
        if down <= 0:
            return False
        self.old -= down
        return True


def rolling_steps(replicas: int, max_surge: int, max_unavailable: int) -> tuple[int, ...]:
    """How many new pods each dependent step of a rolling update starts, from ``replicas``
    available pods of the old template to ``replicas`` of the new one, with the resolved
    budgets (see :func:`fenceposts`). Controllers are instant: within a step the controller
    syncs until nothing changes; the step ends when the pods it started are Ready."""
    if replicas <= 0:
        return ()
    if max_surge <= 0 and max_unavailable <= 0:
        raise ValueError("maxSurge and maxUnavailable cannot both be 0")
    s = _State(replicas, max_surge, max_unavailable, old=replicas)
    steps: list[int] = []
    while s.new_available < replicas or s.old > 0:
        before = s.new
        while s.scale_new_up() or s.scale_old_down():
            pass
        started = s.new - before
        if started == 0:
            if s.new_available == replicas:  # only old pods left to remove: no start waited for
                s.old = 0
                break
            raise AssertionError(f"rolling update stuck at {s}")  # cannot happen with a budget
        steps.append(started)
        s.new_available = s.new  # the step's pods turn Ready
    return tuple(steps)


def waves(replicas: int, max_surge: int, max_unavailable: int) -> int:
    """The older estimate: replicas / (maxSurge + maxUnavailable), rounded up."""
    return math.ceil(replicas / (max_surge + max_unavailable)) if replicas else 0


def ideal_seconds(steps: tuple[int, ...], start_time: Callable[[int], float]) -> float:
    """The ideal rollout: each step's pods started one step after the other, ``start_time(n)``
    being the measured time to start ``n`` pods at once."""
    return sum(start_time(n) for n in steps)
