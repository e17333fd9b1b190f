"""The pure state machine behind container probes: when a probe is due and what a run of
results means, with the kubelet's semantics.

A probe's *result* only changes once the same outcome has been seen ``successThreshold``
(to become healthy) or ``failureThreshold`` (to become unhealthy) times in a row. Readiness
starts out failed, liveness starts out healthy, startup starts out not done; liveness and
readiness are not run until the startup probe has succeeded. Once liveness or startup has
failed, the run is reset so a restarted container gets the full threshold again.

No I/O and no clock of its own: ``now`` (monotonic seconds) is always an argument.
"""

from __future__ import annotations

from typing import Literal

import msgspec

ProbeKind = Literal["liveness", "readiness", "startup"]


class Timing(msgspec.Struct, frozen=True, kw_only=True):
    """The timing fields of a Kubernetes Probe, already defaulted."""

    initial_delay: float = 0.0  # initialDelaySeconds: first run this long after the container started
    period: float = 10.0  # periodSeconds: between two runs
    timeout: float = 1.0  # timeoutSeconds: a run taking longer is a failure
    success_threshold: int = 1  # consecutive successes to become healthy (1 for liveness/startup)
    failure_threshold: int = 3  # consecutive failures to become unhealthy


class ProbeState(msgspec.Struct, frozen=True, kw_only=True):
    kind: ProbeKind
    timing: Timing
    healthy: bool | None  # the result the kubelet acts on; None = unknown (startup not done yet)
    last: bool | None = None  # outcome of the latest run
    run: int = 0  # how many times in a row ``last`` was seen
    next_at: float = 0.0  # monotonic time of the next run
    message: str | None = None  # why the latest failing run failed
    done: bool = False  # startup only: succeeded once, never run again


def initial(kind: ProbeKind, timing: Timing, started_at: float) -> ProbeState:
    """A fresh probe for a container that started at ``started_at``."""
    healthy: bool | None = {"liveness": True, "readiness": False, "startup": None}[kind]
    return ProbeState(kind=kind, timing=timing, healthy=healthy, next_at=started_at + timing.initial_delay)


def due(state: ProbeState, now: float) -> bool:
    return not state.done and now >= state.next_at


def observe(state: ProbeState, ok: bool, now: float, message: str | None = None) -> ProbeState:
    """The state after one run that ended at ``now`` with outcome ``ok``."""
    t = state.timing
    run = state.run + 1 if state.last is ok else 1
    healthy = state.healthy
    success_threshold = t.success_threshold if state.kind == "readiness" else 1  # as Kubernetes enforces
    reached = run >= (success_threshold if ok else t.failure_threshold)
    if reached:
        healthy = ok
    done = state.done or (state.kind == "startup" and healthy is True)
    if reached and not ok and state.kind in ("liveness", "startup"):
        run = 0  # the container is restarted; start counting afresh
    return ProbeState(
        kind=state.kind,
        timing=t,
        healthy=healthy,
        last=ok if run else None,
        run=run,
        next_at=now + t.period,
        message=None if ok else message,
        done=done,
    )


def reset(state: ProbeState, started_at: float) -> ProbeState:
    """The probe of a container that (re)started at ``started_at``: back to its initial state."""
    return initial(state.kind, state.timing, started_at)


class ContainerProbes(msgspec.Struct, frozen=True, kw_only=True):
    """The probes of one container; ``None`` where the container declares none."""

    liveness: ProbeState | None = None
    readiness: ProbeState | None = None
    startup: ProbeState | None = None

    def startup_done(self) -> bool:
        return self.startup is None or self.startup.done

    def ready(self) -> bool:
        if not self.startup_done():
            return False
        return self.readiness is None or self.readiness.healthy is True

    def liveness_failed(self) -> bool:
        if self.startup is not None and self.startup.healthy is False:
            return True  # a startup probe past its failureThreshold kills the container too
        return self.liveness is not None and self.liveness.healthy is False

    def runnable(self, kind: ProbeKind, now: float) -> bool:
        """Whether ``kind`` should run at ``now``: due, and past startup for the other two."""
        state = getattr(self, kind)
        if state is None or not due(state, now):
            return False
        return kind == "startup" or self.startup_done()
