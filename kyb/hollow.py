"""Hollow nodes: Nodes with no machine behind them, and one kubelet without containers that
runs their pods (each turns Running at once, Ready as told, and ends when told). Like KWOK, for
trying a control plane at scale without machines: ``kyb hollow-nodes --count 1000`` registers
the nodes and keeps their leases and pods going; the benchmarks and tests use the same pieces.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

import msgspec
from msgspec.structs import replace

from kyb import errors
from kyb.informer import Informer
from kyb.store import Store, now_rfc3339
from kyb.workqueue import WorkQueue
from schemas.coordination import NODE_LEASE_NAMESPACE, node_lease
from schemas.core import Node
from schemas.pod import ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodCondition


def hollow_node(name: str, labels: dict[str, str] | None = None, taints: list[dict] | None = None,
                resources: dict[str, str] | None = None) -> Node:
    """A Ready node (room for 110 pods, 8 CPUs, 16 GiB unless told) with no kubelet behind it
    (see ``HollowKubelet``)."""
    resources = resources or {"cpu": "8", "memory": "16Gi", "pods": "110"}
    return msgspec.convert(
        {
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "spec": {"taints": taints or []},
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            },
        },
        Node,
    )


Phase = Literal["Succeeded", "Failed"]
# A Running pod -> how it ends now: a phase (exit code 0 or 1) or a container exit code
# (0: Succeeded, else Failed); None: it runs on.
Finish = Callable[[Pod], Phase | int | None]
Ready = Callable[[Pod], bool]  # whether a running pod passes its readiness probe


class HollowKubelet:
    """A kubelet without containers: each pod it owns turns Running at once, Ready as ``ready``
    says, and ends (Succeeded/Failed, containers terminated with exit code 0/1) when ``finish``
    says so; a terminating pod is removed at once (grace 0, as a kubelet does once its
    containers are gone).

    It owns the pods bound to ``node`` and, with a ``node``, binds the unbound ones to it (no
    scheduler needed); with ``nodes`` it owns the pods the scheduler bound to any of them; with
    neither it stands for the kubelet of every node and owns every bound pod. ``hold()`` keeps pods that are not Ready from becoming Ready until ``release()``
    (readiness already reported is kept). ``seen`` holds the name of every pod the watch ever
    showed; ``when(predicate)`` gives an event set once it shows a pod the predicate holds for.

    Level-triggered like a controller: the pod watch only enqueues keys and the workers re-read
    the watch cache, so ``resync()`` after anything ``ready``/``finish`` depend on has changed
    brings every pod up to date. ``nc`` is the connection to watch pods on."""

    def __init__(
        self,
        store: Store,
        nc: Any,
        *,
        node: str | None = None,
        nodes: Iterable[str] | None = None,
        ready: Ready | None = None,
        finish: Finish | None = None,
        workers: int = 1,
    ) -> None:
        self.store = store
        self.node = node
        self.nodes = frozenset(nodes) if nodes is not None else None  # owns only pods bound to these
        self.ready: Ready = ready or (lambda pod: True)
        self.finish: Finish = finish or (lambda pod: None)
        self.workers = workers
        self.held = False
        self.seen: set[str] = set()
        self.pods = Informer(nc, "Pod")
        self.pods.add_handler(self._on_pod)
        self.queue: WorkQueue[None] = WorkQueue()
        self._triggers: list[tuple[Callable[[Pod], bool], asyncio.Event]] = []
        self._task: asyncio.Task | None = None

    def start(self) -> HollowKubelet:
        self._task = asyncio.create_task(self._run(), name="hollow-kubelet")
        return self

    async def wait_synced(self, timeout: float = 10.0) -> None:
        """Wait until the pod watch has listed what exists; raise what stopped the kubelet."""

        async def synced() -> bool:
            if self._task is not None and self._task.done():
                self._task.result()
            return self.pods.synced

        deadline = time.monotonic() + timeout
        while not await synced():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the hollow kubelet's pod watch did not sync within {timeout}s")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.pods.stop()
        await self.queue.shutdown(timeout=1)

    def when(self, predicate: Callable[[Pod], bool]) -> asyncio.Event:
        """An event set as soon as the watch shows a pod for which ``predicate(pod)`` holds."""
        event = asyncio.Event()
        self._triggers.append((predicate, event))
        return event

    def hold(self) -> None:
        self.held = True

    def release(self) -> None:
        self.held = False
        self.resync()

    def resync(self) -> None:
        for key in self.pods.keys():
            self.queue.add(key)

    def _on_pod(self, event: str, new: Any, old: Any, headers: Any) -> None:
        pod = new if new is not None else old
        if new is not None:
            self.seen.add(new.metadata.name)
            for predicate, fired in self._triggers:
                if predicate(new):
                    fired.set()
        self.queue.add(f"{pod.metadata.namespace}.{pod.metadata.name}")

    async def _run(self) -> None:
        await self.pods.start()
        await self.queue.serve(self._sync, workers=self.workers)

    def _owns(self, pod: Pod) -> bool:
        if self.nodes is not None:
            return pod.spec.nodeName in self.nodes
        if not pod.spec.nodeName:
            return self.node is not None
        return self.node is None or pod.spec.nodeName == self.node

    async def _sync(self, key: str, _ctx: None) -> None:
        pod = self.pods.get(key)
        if pod is None or not self._owns(pod):
            return
        ns, name = pod.metadata.namespace, pod.metadata.name
        # A conflict or a pod gone means a newer version is on its way through the watch.
        with contextlib.suppress(errors.NotFound, errors.Conflict):
            if pod.metadata.deletionTimestamp is not None:
                await self.store.delete("Pod", ns, name, grace_period_seconds=0)
            elif pod.status.phase == "Running" and (end := self.finish(pod)) is not None:
                await self.store.mutate("Pod", ns, name, lambda p: _finished(p, end, now_rfc3339()))
            elif self._running(pod) is not None:
                await self.store.mutate("Pod", ns, name, self._running)

    def _running(self, pod: Pod) -> Pod | None:
        """``pod`` Running on its node with readiness as it should be now, or None if it is."""
        if pod.status.phase in ("Succeeded", "Failed") or pod.metadata.deletionTimestamp is not None:
            return None
        was_ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)
        ready = "True" if self.ready(pod) and (was_ready or not self.held) else "False"
        node = pod.spec.nodeName or self.node or ""
        now = now_rfc3339()
        want = {"Initialized": "True", "ContainersReady": ready, "Ready": ready}
        kept = [c for c in pod.status.conditions if c.type not in want]
        have = {c.type: c for c in pod.status.conditions if c.type in want and c.status == want[c.type]}
        conds = kept + [have.get(t) or PodCondition(type=t, status=s, lastTransitionTime=now) for t, s in want.items()]
        if pod.status.phase == "Running" and node == pod.spec.nodeName and conds == pod.status.conditions:
            return None
        status = replace(pod.status, phase="Running", conditions=conds, startTime=pod.status.startTime or now)
        return replace(pod, spec=replace(pod.spec, nodeName=node), status=status)


def _finished(pod: Pod, end: Phase | int, now: str) -> Pod | None:
    """``pod`` ended as ``end`` says (a phase, or an exit code): its containers terminated,
    no longer Ready."""
    if pod.status.phase != "Running":
        return None
    if isinstance(end, int):
        code, phase = end, ("Succeeded" if end == 0 else "Failed")
    else:
        code, phase = (0 if end == "Succeeded" else 1), end
    terminated = ContainerState(terminated=ContainerStateTerminated(exitCode=code, finishedAt=now))
    statuses = [ContainerStatus(name=c.name, state=terminated) for c in pod.spec.containers]
    conds = [replace(c, status="False") if c.type in ("Ready", "ContainersReady") else c for c in pod.status.conditions]
    return replace(pod, status=replace(pod.status, phase=phase, containerStatuses=statuses, conditions=conds))


# -- kyb hollow-nodes ---------------------------------------------------------------------------

HOLLOW_LABEL = "kybernetes.io/hollow"
# Like KWOK's: only pods that tolerate it land on hollow nodes, so real workloads stay on real nodes.
HOLLOW_TAINT = {"key": HOLLOW_LABEL, "value": "true", "effect": "NoSchedule"}


class HollowNodes:
    """``count`` hollow Nodes (``<prefix>0`` ...) registered Ready, their Leases renewed every
    ``lease_interval`` seconds (so the node lifecycle controller sees them alive), and one hollow
    kubelet running the pods the scheduler binds to them. ``run`` until ``stop``; the Nodes are
    deleted at the end unless ``keep``."""

    def __init__(self, store: Store, nc: Any, names: list[str], *, cpu: str = "8", memory: str = "16Gi",
                 pods: str = "110", taint: bool = True, lease_interval: float = 10.0, keep: bool = False) -> None:
        self.store, self.nc, self.names = store, nc, names
        self.resources = {"cpu": cpu, "memory": memory, "pods": pods}
        self.taint, self.lease_interval, self.keep = taint, lease_interval, keep
        self.registered = asyncio.Event()  # set once every Node and Lease exists

    def node(self, name: str) -> Node:
        return hollow_node(name, labels={HOLLOW_LABEL: "true", "type": "hollow"},
                           taints=[HOLLOW_TAINT] if self.taint else [], resources=self.resources)

    async def register(self) -> None:
        from schemas.core import Namespace
        from schemas.meta import ObjectMeta

        with contextlib.suppress(errors.AlreadyExists):
            await self.store.create(Namespace(metadata=ObjectMeta(name=NODE_LEASE_NAMESPACE)))
        for name in self.names:
            try:
                await self.store.create(self.node(name))
            except errors.AlreadyExists:
                fresh = self.node(name)
                await self.store.mutate("Node", None, name, lambda cur, fresh=fresh: replace(
                    cur, metadata=replace(cur.metadata, labels={**cur.metadata.labels, **fresh.metadata.labels}),
                    spec=fresh.spec, status=fresh.status))
        await self.renew()

    async def renew(self) -> None:
        from datetime import UTC, datetime

        async def one(name: str) -> None:
            now = datetime.now(UTC)
            try:
                await self.store.mutate("Lease", NODE_LEASE_NAMESPACE, name, lambda cur: node_lease(name, cur, now))
            except errors.NotFound:
                with contextlib.suppress(errors.AlreadyExists):
                    await self.store.create(node_lease(name, None, now))

        await asyncio.gather(*(one(n) for n in self.names))

    async def run(self, stop: asyncio.Event) -> None:
        await self.register()
        self.registered.set()
        kubelet = HollowKubelet(self.store, self.nc, nodes=self.names, workers=4).start()
        try:
            await kubelet.wait_synced(30)
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.lease_interval)
                if not stop.is_set():
                    await self.renew()
        finally:
            await kubelet.stop()
            if not self.keep:
                for name in self.names:
                    with contextlib.suppress(errors.NotFound):
                        await self.store.delete("Node", None, name)
                    with contextlib.suppress(errors.NotFound):
                        await self.store.delete("Lease", NODE_LEASE_NAMESPACE, name)
