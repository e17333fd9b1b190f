"""What the kubelet should do about one pod, decided without touching anything.

``plan(pod, observed, now, memory, ...)`` looks at the pod's spec, the containers the runtime
reports for it and what the kubelet remembers between syncs (crash back-off, the last failed
start of each container) and returns a :class:`Plan`: containers to start (init containers
one after another to completion first, then every app container), containers to kill
(liveness failures, leftovers), old attempts to remove, the status to report, the memory to
keep and when to look again. The async shell (``sync.py``) applies it.

Kubernetes semantics, as documented in "Pod Lifecycle":
- restartPolicy Always / OnFailure / Never decides whether an exited container comes back;
  init containers are restarted on failure unless the policy is Never (then the pod fails);
- a crashed container is restarted at once the first time, then after a back-off doubling
  from ``base_backoff`` to ``max_backoff`` (reported as waiting CrashLoopBackOff); a container
  that ran ``reset_after`` seconds before exiting starts the sequence again;
- a failed image pull is reported as ErrImagePull, then ImagePullBackOff while it waits;
- phases Pending, Running, Succeeded, Failed and the conditions PodScheduled, Initialized,
  ContainersReady and Ready follow the kubelet's rules (getPhase);
- a pod active longer than ``spec.activeDeadlineSeconds`` (from ``status.startTime``) is
  Failed with reason DeadlineExceeded and its containers are killed.

Sidecars ("Sidecar Containers": init containers with ``restartPolicy: Always``) start in the
init sequence; the next init container starts once the sidecar runs and its startup probe,
if any, succeeded, without waiting for it to exit. They restart whenever they exit, whatever
the pod's restartPolicy (with the crash back-off), a liveness failure restarts them, their
readiness counts for the pod's, and the phase is the app containers' alone: once those ended
for good the pod is Succeeded or Failed and its sidecars are killed, last started first
(``stop_waves``, also the order of a graceful deletion). A sidecar blocks what follows it only
until something after it has started (Kubernetes' "previously initialized").

No I/O, no asyncio: ``now`` is an argument.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Protocol, TypeVar

import msgspec

from schemas.helpers import format_time, qos_class
from schemas.meta import ConditionStatus
from schemas.pod import (
    Container,
    ContainerState,
    ContainerStateRunning,
    ContainerStateTerminated,
    ContainerStateWaiting,
    ContainerStatus,
    HostIP,
    Pod,
    PodCondition,
    PodIP,
    PodPhase,
    PodStatus,
    ResourceRequirements,
    is_sidecar,
)
from schemas.quantity import cpu_millis, format_quantity, to_bytes
from services.kubelet.handlers import DEADLINE_MESSAGE, DEADLINE_REASON, deadline_left
from services.kubelet.runtime.base import ContainerInfo

IMAGE_PULL_ERRORS = ("ErrImagePull", "ErrImageNeverPull")


@dataclass(frozen=True, slots=True)
class Settings:
    base_backoff: float = 10.0  # first crash/pull back-off, seconds (Kubernetes: 10 s)
    max_backoff: float = 300.0  # back-off cap (Kubernetes: 5 min)
    reset_after: float = 600.0  # a container that ran this long before exiting resets its back-off
    relist: float = 1.0  # how often a pod with live containers is looked at again
    keep_attempts: int = 2  # exited attempts kept per container (the latest and the one before)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why the last attempt to start a container failed (kept by the shell between syncs)."""

    reason: str  # ErrImagePull | ErrImageNeverPull | CreateContainerConfigError | CreateContainerError
    message: str
    at: datetime
    backoff: float  # seconds after ``at`` before trying again


@dataclass(frozen=True, slots=True)
class PodMemory:
    """What the kubelet remembers of one pod between syncs."""

    crash_backoff: Mapping[str, float] = field(default_factory=dict)  # container -> back-off of the next restart
    failures: Mapping[str, Failure] = field(default_factory=dict)  # container -> last failed start
    fresh: frozenset[str] = frozenset()  # containers whose start failed in this very sync
    # container -> (the limits a resize asked for, why the runtime refused them): not tried again
    resize_errors: Mapping[str, tuple[tuple[int | None, int | None], str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProbeView:
    """The probe results of one running container, as the probe manager has them."""

    ready: bool | None = None  # None: no readiness probe
    started: bool | None = None  # None: no startup probe
    liveness_failed: bool = False


@dataclass(frozen=True, slots=True)
class Start:
    name: str
    attempt: int
    init: bool


@dataclass(frozen=True, slots=True)
class Kill:
    container_id: str
    name: str
    reason: str  # event reason: Killing
    message: str


@dataclass(frozen=True, slots=True)
class Resize:
    """Change a running container's limits in place (None: that limit stays as it is)."""

    container_id: str
    name: str
    cpu_limit_millis: int | None
    memory_limit_bytes: int | None

    @property
    def wanted(self) -> tuple[int | None, int | None]:
        return self.cpu_limit_millis, self.memory_limit_bytes


@dataclass(frozen=True, slots=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Plan:
    start: tuple[Start, ...]
    kill: tuple[Kill, ...]
    remove: tuple[str, ...]  # exited containers nothing needs any more
    status: PodStatus
    memory: PodMemory
    requeue_after: float | None
    events: tuple[Event, ...] = ()
    resize: tuple[Resize, ...] = ()

    @property
    def acts(self) -> bool:
        return bool(self.start or self.kill or self.resize)


def duration(seconds: float) -> str:
    """A Go-style duration, as kubelet messages print them: 10s, 2m40s, 500ms."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    frac = seconds - whole
    minutes, secs = divmod(whole, 60)
    tail = f"{secs}s" if frac < 1e-9 else f"{secs + frac:g}s"
    return f"{minutes}m{tail}" if minutes else tail


def container_id(runtime: str, info: ContainerInfo) -> str:
    return f"{runtime}://{info.id}"


def _time(t: datetime | None) -> str | None:
    return format_time(t) if t is not None else None


def _terminated(info: ContainerInfo, runtime: str) -> ContainerStateTerminated:
    code = info.exit_code if info.exit_code is not None else 0
    reason = info.reason or ("Completed" if code == 0 else "Error")
    if info.oom_killed:
        reason = "OOMKilled"
    return ContainerStateTerminated(
        exitCode=code,
        reason=reason,
        message=info.message or "",
        startedAt=_time(info.started_at),
        finishedAt=_time(info.finished_at),
        containerID=container_id(runtime, info),
    )


def _should_restart(policy: str, info: ContainerInfo, init: bool, sidecar: bool = False) -> bool:
    failed = (info.exit_code or 0) != 0
    if sidecar:
        return True
    if init:
        return failed and policy != "Never"
    return policy == "Always" or (policy == "OnFailure" and failed)


@dataclass
class _Acc:
    """The plan under construction (private, mutable while planning one pod)."""

    start: list[Start] = field(default_factory=list)
    kill: list[Kill] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    backoff: dict[str, float] = field(default_factory=dict)
    waits: list[float] = field(default_factory=list)
    resize: list[Resize] = field(default_factory=list)
    resize_errors: dict[str, str] = field(default_factory=dict)  # container -> why its resize failed


def _attempts(observed: Sequence[ContainerInfo], name: str) -> list[ContainerInfo]:
    return sorted((c for c in observed if c.name == name), key=lambda c: c.attempt, reverse=True)


def _failure_wait(
    c: Container, fail: Failure | None, memory: PodMemory, now: datetime
) -> tuple[ContainerStateWaiting, float] | None:
    """The waiting state while a failed start backs off, with the seconds left; None if due."""
    if fail is None:
        return None
    left = (fail.at + timedelta(seconds=fail.backoff) - now).total_seconds()
    if c.name in memory.fresh or left > 0:
        reason, message = fail.reason, fail.message
        if fail.reason in IMAGE_PULL_ERRORS and c.name not in memory.fresh:
            reason, message = "ImagePullBackOff", f'Back-off pulling image "{c.image}"'
        return ContainerStateWaiting(reason=reason, message=message), max(left, 0.0)
    return None


def _one(
    pod: Pod,
    c: Container,
    init: bool,
    observed: Sequence[ContainerInfo],
    now: datetime,
    memory: PodMemory,
    settings: Settings,
    runtime: str,
    probes: Mapping[str, ProbeView],
    may_start: bool,
    acc: _Acc,
) -> tuple[ContainerStatus, str]:
    """Status of one container and its verdict: running | done | failed | waiting | restarting."""
    attempts = _attempts(observed, c.name)
    for old in attempts[settings.keep_attempts :]:
        if old.state == "exited":
            acc.remove.append(old.id)
    latest = attempts[0] if attempts else None
    previous = next((a for a in attempts[1:] if a.state == "exited"), None)
    last_state = ContainerState(terminated=_terminated(previous, runtime)) if previous else ContainerState()
    base = ContainerStatus(
        name=c.name,
        image=c.image,
        restartCount=latest.attempt if latest else 0,
        lastState=last_state,
        started=False,
    )
    fail = memory.failures.get(c.name)
    policy = pod.spec.restartPolicy
    sidecar = init and is_sidecar(c)
    restartable = not init or sidecar  # probed, ready, restarted like an app container

    if latest is not None and latest.state == "running":
        view = probes.get(c.name, ProbeView())
        ident = dict(containerID=container_id(runtime, latest), imageID=latest.image_id or "")
        started = view.started is not False
        ready = started and view.ready is not False
        if view.liveness_failed and restartable:
            acc.kill.append(
                Kill(latest.id, c.name, "Killing", f"Container {c.name} failed liveness probe, will be restarted")
            )
        status = msgspec.structs.replace(
            base,
            state=ContainerState(running=ContainerStateRunning(startedAt=_time(latest.started_at))),
            ready=ready and restartable,
            started=started,
            **ident,
            **_resized(c, latest, restartable and not view.liveness_failed, memory, acc),
        )
        return status, "running"

    if latest is not None and latest.state == "exited":
        term = _terminated(latest, runtime)
        ident = dict(containerID=term.containerID, imageID=latest.image_id or "")
        if not may_start or not _should_restart(policy, latest, init, sidecar):  # a failed pod restarts nothing
            status = msgspec.structs.replace(base, state=ContainerState(terminated=term), **ident)
            return status, ("done" if term.exitCode == 0 else "failed")
        # it comes back: after its back-off
        last_run = (
            (latest.finished_at - latest.started_at).total_seconds()
            if latest.finished_at and latest.started_at
            else 0.0
        )
        delay = memory.crash_backoff.get(c.name)
        if last_run >= settings.reset_after:
            delay = None
        finished = latest.finished_at or now
        left = (finished + timedelta(seconds=delay) - now).total_seconds() if delay else 0.0
        restarting = msgspec.structs.replace(base, lastState=ContainerState(terminated=term), **ident)
        waiting_fail = _failure_wait(c, fail, memory, now)
        if waiting_fail is not None:
            state, fail_left = waiting_fail
            acc.waits.append(fail_left)
            return msgspec.structs.replace(restarting, state=ContainerState(waiting=state)), "restarting"
        if left > 0:
            acc.waits.append(left)
            msg = (
                f"back-off {duration(delay or 0)} restarting failed container={c.name} "
                f"pod={pod.metadata.name}_{pod.metadata.namespace or 'default'}({pod.metadata.uid})"
            )
            _note_backoff(pod, c.name, init, "CrashLoopBackOff", acc, f"Back-off restarting failed container {c.name} in pod {pod.metadata.name}")
            waiting = ContainerStateWaiting(reason="CrashLoopBackOff", message=msg)
            return msgspec.structs.replace(restarting, state=ContainerState(waiting=waiting)), "restarting"
        if may_start:
            acc.start.append(Start(c.name, latest.attempt + 1, init))
            acc.backoff[c.name] = settings.base_backoff if delay is None else min(delay * 2, settings.max_backoff)
        waiting = ContainerStateWaiting(reason="ContainerCreating" if restartable else "PodInitializing")
        return msgspec.structs.replace(restarting, state=ContainerState(waiting=waiting)), "restarting"

    # never started (or created but not started)
    waiting_fail = _failure_wait(c, fail, memory, now)
    if waiting_fail is not None:
        state, fail_left = waiting_fail
        acc.waits.append(fail_left)
        if state.reason == "ImagePullBackOff":
            _note_backoff(pod, c.name, init, "ImagePullBackOff", acc, f'Back-off pulling image "{c.image}"')
        return msgspec.structs.replace(base, state=ContainerState(waiting=state)), "waiting"
    if may_start:
        acc.start.append(Start(c.name, latest.attempt if latest else 0, init))
    reason = "ContainerCreating" if may_start or init else "PodInitializing"
    return msgspec.structs.replace(base, state=ContainerState(waiting=ContainerStateWaiting(reason=reason))), "waiting"


def limits_of(limits: Mapping[str, str]) -> tuple[int | None, int | None]:
    """The CPU (millicores) and memory (bytes) of a ``limits`` map (None where it sets none)."""
    return (cpu_millis(limits["cpu"]) if "cpu" in limits else None,
            to_bytes(limits["memory"]) if "memory" in limits else None)


def wanted_limits(c: Container) -> tuple[int | None, int | None]:
    """The CPU and memory limits the container's spec asks for (what the runtime applies)."""
    return limits_of(c.resources.limits)


def _resized(c: Container, latest: ContainerInfo, resizable: bool, memory: PodMemory, acc: _Acc) -> dict[str, object]:
    """In-place resize of a running container, as Kubernetes' kubelet does it: when its spec's
    limits differ from the ones the runtime applies, change them in the container (a Resize),
    or restart it (a Kill) where a changed resource's ``resizePolicy`` is RestartContainer or a
    limit is removed. The status fields it reports: ``allocatedResources`` (the requests the
    node gave it) and ``resources`` (the requests, and the limits applied now)."""
    if not latest.limits_known:
        return {}
    want = wanted_limits(c)
    have = (latest.cpu_limit_millis, latest.memory_limit_bytes)
    changed = [r for r, w, h in (("cpu", want[0], have[0]), ("memory", want[1], have[1])) if w != h]
    if changed and resizable:
        policy: dict[str, str] = {p.resourceName: p.restartPolicy for p in c.resizePolicy}
        restart = [r for r in changed if policy.get(r, "NotRequired") == "RestartContainer"]
        removed = [r for r, w in (("cpu", want[0]), ("memory", want[1])) if r in changed and w is None]
        failed = memory.resize_errors.get(c.name)
        if restart or removed:
            why = "its resize policy restarts it" if restart else "a limit cannot be removed in place"
            acc.kill.append(Kill(latest.id, c.name, "Killing",
                                 f"Container {c.name} resize of {', '.join(restart or removed)} requires a restart: {why}"))
        else:
            r = Resize(latest.id, c.name, want[0] if "cpu" in changed else None, want[1] if "memory" in changed else None)
            if failed is not None and failed[0] == r.wanted:
                acc.resize_errors[c.name] = failed[1]
            else:
                acc.resize.append(r)
    limits = dict(c.resources.limits)
    for name, w, h in (("cpu", want[0], have[0]), ("memory", want[1], have[1])):
        if w == h:
            continue
        if h is None:
            limits.pop(name, None)
        else:
            limits[name] = format_quantity(Fraction(h, 1000)) if name == "cpu" else format_quantity(h, binary=True)
    applied = ResourceRequirements(limits=limits, requests=dict(c.resources.requests))
    return {"allocatedResources": dict(c.resources.requests), "resources": applied}


def _note_backoff(pod: Pod, name: str, init: bool, reason: str, acc: _Acc, message: str) -> None:
    """A BackOff event when a container enters a back-off wait (not on every sync of it)."""
    statuses = pod.status.initContainerStatuses if init else pod.status.containerStatuses
    before = next((s for s in statuses if s.name == name), None)
    was = before.state.waiting.reason if before and before.state.waiting else None
    if was != reason:
        acc.events.append(Event("Warning", "BackOff", message))


def _condition(pod: Pod, type_: str, ok: bool, now: datetime, reason: str = "", message: str = "") -> PodCondition:
    status: ConditionStatus = "True" if ok else "False"
    before = next((c for c in pod.status.conditions if c.type == type_), None)
    since = before.lastTransitionTime if before is not None and before.status == status else format_time(now)
    return PodCondition(type=type_, status=status, lastTransitionTime=since, reason=reason, message=message)


def plan(
    pod: Pod,
    observed: Sequence[ContainerInfo],
    now: datetime,
    memory: PodMemory = PodMemory(),
    *,
    settings: Settings = Settings(),
    runtime: str = "docker",
    pod_ip: str = "",
    host_ip: str = "127.0.0.1",
    probes: Mapping[str, ProbeView] | None = None,
) -> Plan:
    """The plan for a live (not terminating) pod bound to this node; see the module docstring."""
    probes = probes or {}
    acc = _Acc()
    spec = pod.spec
    terminal = pod.status.phase in ("Succeeded", "Failed")
    left = deadline_left(pod, now)
    past_deadline = left is not None and left <= 0 and not terminal
    known = {c.name for c in spec.initContainers} | {c.name for c in spec.containers}
    for info in observed:
        if info.name not in known:
            acc.kill.append(Kill(info.id, info.name, "Killing", f"Stopping container {info.name}: not in the pod spec"))

    # init containers, one after another
    init_statuses: list[ContainerStatus] = []
    initialized = True
    init_failed = False
    may_start = not terminal and not past_deadline
    for i, c in enumerate(spec.initContainers):
        if not initialized:
            waiting = ContainerStateWaiting(reason="PodInitializing")
            prev = _attempts(observed, c.name)
            init_statuses.append(
                ContainerStatus(
                    name=c.name,
                    image=c.image,
                    state=ContainerState(waiting=waiting),
                    restartCount=prev[0].attempt if prev else 0,
                    started=False,
                )
            )
            continue
        status, verdict = _one(pod, c, True, observed, now, memory, settings, runtime, probes, may_start, acc)
        init_statuses.append(status)
        if is_sidecar(c):
            after = [*spec.initContainers[i + 1 :], *spec.containers]
            passed = any(_attempts(observed, later.name) for later in after)  # previously initialized
            if not (verdict == "running" and status.started) and not passed:
                initialized = False
            continue
        if verdict != "done":
            initialized = False
            init_failed = init_failed or verdict == "failed"

    # app containers
    statuses: list[ContainerStatus] = []
    verdicts: list[str] = []
    for c in spec.containers:
        if not initialized:
            prev = _attempts(observed, c.name)
            statuses.append(
                ContainerStatus(
                    name=c.name,
                    image=c.image,
                    state=ContainerState(waiting=ContainerStateWaiting(reason="PodInitializing")),
                    restartCount=prev[0].attempt if prev else 0,
                    started=False,
                )
            )
            verdicts.append("waiting")
            continue
        status, verdict = _one(pod, c, False, observed, now, memory, settings, runtime, probes, may_start, acc)
        statuses.append(status)
        verdicts.append(verdict)

    phase = _phase(pod, initialized, init_failed, verdicts)
    reason, message = "", ""
    if past_deadline:
        phase, reason, message = "Failed", DEADLINE_REASON, DEADLINE_MESSAGE
        if pod.status.reason != DEADLINE_REASON:
            acc.events.append(Event("Warning", DEADLINE_REASON, DEADLINE_MESSAGE))
    if terminal:
        phase = pod.status.phase  # a terminal phase never changes, nor why it was reached
        reason, message = pod.status.reason, pod.status.message
    if phase in ("Succeeded", "Failed"):
        acc.start.clear()
        for info in observed:  # the sidecars of a pod whose app containers ended, ...
            if info.state == "running" and all(k.container_id != info.id for k in acc.kill):
                acc.kill.append(Kill(info.id, info.name, "Killing", f"Stopping container {info.name}: the pod is {phase.lower()}"))

    sidecars = {c.name for c in spec.initContainers if is_sidecar(c)}
    sidecar_statuses = [s for s in init_statuses if s.name in sidecars]
    containers_ready = initialized and all(s.ready for s in [*sidecar_statuses, *statuses]) and bool(statuses)
    not_ready = [s.name for s in [*sidecar_statuses, *statuses] if not s.ready]
    unready_msg = f"containers with unready status: [{' '.join(not_ready)}]" if not_ready else ""
    pending_init = [
        s.name for s in init_statuses
        if not (s.started if s.name in sidecars else s.state.terminated and s.state.terminated.exitCode == 0)
    ]
    conditions = [
        _condition(pod, "PodScheduled", True, now),
        _condition(
            pod,
            "Initialized",
            initialized,
            now,
            "" if initialized else "ContainersNotInitialized",
            "" if initialized else f"containers with incomplete status: [{' '.join(pending_init)}]",
        ),
        _condition(pod, "ContainersReady", containers_ready and phase == "Running", now,
                   "" if containers_ready else "ContainersNotReady", unready_msg),
        _condition(pod, "Ready", containers_ready and phase == "Running", now,
                   "" if containers_ready else "ContainersNotReady", unready_msg),
    ]
    if phase in ("Succeeded", "Failed"):
        conditions[2] = _condition(pod, "ContainersReady", False, now, "PodCompleted", "")
        conditions[3] = _condition(pod, "Ready", False, now, "PodCompleted", "")
    if acc.resize_errors:  # as Kubernetes' kubelet reports a resize the runtime refused
        message = "; ".join(f"{n}: {m}" for n, m in sorted(acc.resize_errors.items()))
        conditions.append(_condition(pod, "PodResizeInProgress", True, now, "Error", message))

    pod_status = PodStatus(
        phase=phase,
        conditions=conditions,
        reason=reason,
        message=message,
        hostIP=host_ip,
        hostIPs=[HostIP(ip=host_ip)] if host_ip else [],
        podIP=pod_ip,
        podIPs=[PodIP(ip=pod_ip)] if pod_ip else [],
        startTime=pod.status.startTime or format_time(now),
        initContainerStatuses=init_statuses,
        containerStatuses=statuses,
        qosClass=pod.status.qosClass or qos_class(pod),
        nominatedNodeName=pod.status.nominatedNodeName,
    )

    backoff = dict(memory.crash_backoff)
    backoff.update(acc.backoff)
    new_memory = PodMemory(crash_backoff=backoff, failures=dict(memory.failures), fresh=frozenset(),
                           resize_errors={n: memory.resize_errors[n] for n in acc.resize_errors})
    live = any(i.state == "running" for i in observed)
    waits = [w for w in acc.waits if w > 0]
    if live and phase not in ("Succeeded", "Failed"):
        waits.append(settings.relist)
    if left is not None and left > 0 and phase not in ("Succeeded", "Failed"):
        waits.append(left)  # look again when the active deadline passes
    if any(name in memory.fresh for name in memory.failures):
        waits.append(min(1.0, settings.base_backoff))  # show the back-off reason soon after the error
    return Plan(
        start=tuple(acc.start),
        kill=tuple(acc.kill),
        remove=tuple(acc.remove),
        status=pod_status,
        memory=new_memory,
        requeue_after=min(waits) if waits else None,
        events=tuple(acc.events),
        resize=tuple(acc.resize),
    )


class _Named(Protocol):
    @property
    def name(self) -> str: ...


_N = TypeVar("_N", bound=_Named)


def stop_waves(pod: Pod, items: Sequence[_N]) -> list[list[_N]]:
    """The order Kubernetes stops a pod's containers in: the app containers (and anything not
    a sidecar) together first, then the sidecars one at a time, the last started first."""
    sidecars = [c.name for c in pod.spec.initContainers if is_sidecar(c)]
    first = [x for x in items if x.name not in sidecars]
    waves = [first] if first else []
    for name in reversed(sidecars):
        wave = [x for x in items if x.name == name]
        if wave:
            waves.append(wave)
    return waves


def _phase(pod: Pod, initialized: bool, init_failed: bool, verdicts: list[str]) -> PodPhase:
    """The kubelet's getPhase over the app containers' verdicts (sidecars never count)."""
    if init_failed and pod.spec.restartPolicy == "Never":
        return "Failed"
    if not initialized:
        return "Pending"
    if "waiting" in verdicts:
        return "Pending"
    if "running" in verdicts:
        return "Running"
    if "restarting" in verdicts:
        return "Running"
    if not verdicts:
        return "Pending"
    if all(v == "done" for v in verdicts):
        return "Succeeded"
    return "Failed"


def with_failure(memory: PodMemory, name: str, failure: Failure | None) -> PodMemory:
    """``memory`` with the failed start of ``name`` recorded (or cleared with None)."""
    failures = dict(memory.failures)
    fresh = set(memory.fresh)
    if failure is None:
        failures.pop(name, None)
        fresh.discard(name)
    else:
        failures[name] = failure
        fresh.add(name)
    return PodMemory(crash_backoff=memory.crash_backoff, failures=failures, fresh=frozenset(fresh),
                     resize_errors=memory.resize_errors)


def with_resize_error(memory: PodMemory, r: Resize, message: str) -> PodMemory:
    """``memory`` with the runtime's refusal of resize ``r`` recorded (not tried again until the
    container's limits are asked to change once more)."""
    return dataclasses.replace(memory, resize_errors={**memory.resize_errors, r.name: (r.wanted, message)})


def next_failure_backoff(previous: Failure | None, reason: str, settings: Settings) -> float:
    """Pull back-off: 10 s doubling to 5 min for the same kind of failure, like crash back-off."""
    if previous is None or previous.reason != reason:
        return settings.base_backoff
    return min(previous.backoff * 2, settings.max_backoff)


def status_differs(old: PodStatus, new: PodStatus) -> bool:
    # By value: equal statuses decoded along different paths may encode differently.
    return old != new
