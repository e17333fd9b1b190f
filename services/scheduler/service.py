"""The scheduler's async shell: informers in, decisions from ``plan``, bindings out through the store.

Each loop iteration takes a batch of pending pods, decides each against the in-memory
``NodeTable`` (assuming it on the chosen node so the next pod sees it), then writes:

1. while another replica is alive (its presence Lease, see ``presence``), a node reservation per
   chosen node on ``kyb.scheduling.<node>`` (stream ``KYB_SCHEDULING``), compare-and-set on the
   last message of that subject. Every replica follows this stream and counts the pods others
   reserved, so two replicas never fill the same room on a node. A lone replica skips this; a
   new replica waits a grace and the others' acknowledgement before its first binding;
2. the binding: a CAS update of each pod (spec.nodeName + PodScheduled=True) at the revision
   read, many in flight at once. A pod bound by someone else meanwhile loses with Conflict:
   it is re-read and counted where it went.

Pods that fit nowhere get PodScheduled=False/Unschedulable with kube-scheduler's message, an
Event FailedScheduling, and are retried when nodes or pods change, after a per-pod back-off
(1 s doubling to 10 s). Informer handlers only note keys; the loop reads the latest state.

Such a pod may preempt (``preemption`` decides, kube-scheduler's DefaultPreemption): its victims
get a DisruptionTarget condition, a graceful delete and an Event Preempted; lower-priority pods
nominated to that node lose their nomination; the pod's ``status.nominatedNodeName`` names the
node. A nominated pod is counted on its node for pods of lower or equal priority decided
meanwhile, and tries that node first when it is decided again.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
from nats.js import api

from kyb import buckets, bus, errors, telemetry
from kyb.informer import Informer
from kyb.store import Store, split_key
from schemas.pod import Pod, PodCondition
from services.scheduler import preemption
from services.scheduler.plan import Decision, HostPort, NodeTable, PodRequest, fits_on, schedule_one
from services.scheduler.podinfo import (
    DEFAULT_SCHEDULER,
    PREEMPTION_REASON,
    SELECTED_NODE,
    budget,
    node_info,
    occupies_node,
    pod_request,
    preemptor,
    victim,
    volume_constraints,
    wait_for_first_consumer_claims,
    wants_scheduling,
)
from services.scheduler.presence import PresenceLease
from services.scheduler.queue import PendingQueue

STREAM = "KYB_SCHEDULING"
SUBJECT = "kyb.scheduling"
RESERVATION_TTL = 10.0     # a reservation whose pod never shows up bound is dropped after this
BACKOFF_INITIAL, BACKOFF_MAX = 1.0, 10.0
NOMINATED = "#nominated"   # suffix of the table key counting a nominated pod on its node
# A pod that fits nowhere: (pod, FailedScheduling message, its nominatedNodeName to write:
# None keeps it, "" clears it).
Failure = tuple[Pod, str, str | None]


class Reservation(msgspec.Struct, array_like=True):
    key: str
    cpu: int
    memory: int
    owner: str = ""
    ports: list[tuple[int, str, str]] = []


class ReservationMsg(msgspec.Struct):
    by: str
    pods: list[Reservation]


_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(ReservationMsg)


_stamp: tuple[int, str] = (0, "")


def _now_rfc3339() -> str:
    """Now, to the second (formatted once per second: thousands of bindings share it)."""
    global _stamp
    second = int(time.time())
    if _stamp[0] != second:
        _stamp = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return _stamp[1]


def _with_condition(pod: Pod, cond: PodCondition) -> list[PodCondition]:
    return [c for c in pod.status.conditions if c.type != cond.type] + [cond]


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a process whose watch caches hold every pod and
    node: what exists once the caches are synced is moved out of the collector's sight
    (``gc.freeze``), and young collections run every 100,000 allocations instead of 700 (each
    binding allocates dozens of short-lived objects). Worth ~10-20% of scheduling throughput."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


class Scheduler:
    """One scheduler replica; ``run`` until ``stop`` is set."""

    def __init__(
        self,
        nc: Any,
        store: Store,
        *,
        identity: str,
        scheduler_name: str = DEFAULT_SCHEDULER,
        batch_size: int = 1024,
        reserve: bool | None = None,
        grace: float = 1.0,
        rng: np.random.Generator | None = None,
        clock: Callable[[], float] = time.monotonic,
        log: Any = None,
    ) -> None:
        self.nc, self.js, self.store = nc, nc.jetstream(timeout=10), store
        self.identity = identity
        self.scheduler_name = scheduler_name
        self.batch_size = batch_size
        self.reserve = reserve                         # None: only while another replica is alive
        self.grace = grace                             # wait after announcing, before the first binding
        self.presence = (
            PresenceLease(self.js, identity, drain=self._drain_unreserved, clock=clock, log=log) if reserve is not False else None
        )
        self._unreserved: set[asyncio.Task] = set()    # batches being written without reservations
        self.reservations_published = 0                # node reservations this replica published
        self.clock = clock
        self.log = log
        self.rng = rng if rng is not None else np.random.default_rng()  # breaks ties between equal nodes
        self.table = NodeTable()
        self.pods = Informer(nc, "Pod")
        self.nodes = Informer(nc, "Node")
        # Claims, volumes and classes: a pod's claims may pin it to nodes or keep it pending.
        self.claims = Informer(nc, "PersistentVolumeClaim")
        self.volumes = Informer(nc, "PersistentVolume")
        self.classes = Informer(nc, "StorageClass")
        self.budgets = Informer(nc, "PodDisruptionBudget")  # read by preemption
        # pending pods nominated to a node: key -> (priority, node, request); counted on that
        # node (``_placed``) while a pod of at most that priority is decided
        self._nominated: dict[str, tuple[int, str, PodRequest]] = {}
        self._placed: set[str] = set()
        self.preemptions: list[tuple[str, str, list[str]]] = []  # (pod, node, victims) this replica decided
        self._dirty_pods: set[str] = set()
        self._dirty_nodes: set[str] = set()
        self._queue = PendingQueue()                   # pending pods, higher priority first
        self._in_flight: set[str] = set()
        self._unschedulable: dict[str, float] = {}     # key -> not retried before (clock)
        self._attempts: dict[str, int] = {}
        self._reservations: dict[str, dict[str, float]] = {}  # pod -> {others' reservation: when}
        self._seen_seq: dict[str, int] = {}            # node -> last reservation applied
        self._foreign_seq: dict[str, int] = {}         # node -> last reservation by another replica applied
        self._wake = asyncio.Event()
        self._node_locks: dict[str, asyncio.Lock] = {}
        self._writes: set[asyncio.Task] = set()        # batches being written
        self.max_in_flight = 8192                      # pods being written at once
        self.linger = 0.005                            # pause after a short batch (seconds)
        self._sub: Any = None
        self.bound = 0                                 # pods this replica bound
        self.bound_log: list[tuple[str, str]] = []
        self._trace_headers: dict[str, dict[str, str]] = {}  # pod key -> trace context of its last write

    # -- wiring ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.pods.add_handler(self._on_pod)
        self.nodes.add_handler(lambda _e, new, old, _h: self._note(self._dirty_nodes, new or old))
        announced = self.clock()
        if self.presence is not None:
            await self.presence.start()
        if self.reserve is not False:
            await self._ensure_stream()
            self._sub = await self.js.subscribe(
                f"{SUBJECT}.>", cb=self._on_reservation, ordered_consumer=True, deliver_policy=api.DeliverPolicy.ALL
            )
        for inf in (self.claims, self.volumes, self.classes):
            inf.add_handler(lambda _e, _n, _o, _h: self._storage_changed())
            await inf.start()
        await self.budgets.start()
        await self.nodes.start()
        await self.pods.start()
        for inf in (self.claims, self.volumes, self.classes, self.budgets, self.nodes, self.pods):
            await inf.wait_synced(30)
        if self.presence is not None:
            # Running replicas see us within the watch latency and switch to reserving; each says
            # so in its record once its unreserved bindings are stored. We bind only after that,
            # and after a further half grace for those bindings to reach our pod cache.
            left = announced + self.grace - self.clock()
            if left > 0:
                await asyncio.sleep(left)
            peers = self.presence.peers.live(self.clock())
            if peers:
                began = self.clock()
                acked = await self.presence.wait_acknowledged(2.0 * self.presence.lease_seconds)
                await asyncio.sleep(self.grace / 2)
                if self.log is not None:
                    self.log.info("other schedulers running", peers=sorted(peers), acknowledged=acked, waited=round(self.clock() - began, 3))

    def _on_pod(self, _event: str, new: Any, old: Any, headers: Any) -> None:
        self._note(self._dirty_pods, new or old)
        obj = new or old
        key = f"{obj.metadata.namespace}.{obj.metadata.name}"
        if new is not None and telemetry.carries_context(headers):
            # The trace of the write that made the pod pending: its binding continues it.
            self._trace_headers[key] = {k: v for k, v in headers.items() if k.lower() in ("traceparent", "tracestate")}
        elif new is None or new.spec.nodeName:
            self._trace_headers.pop(key, None)

    def reserving(self) -> bool:
        """Whether the next batch reserves its nodes before binding."""
        if self.presence is None or self.reserve is not None:
            return bool(self.reserve)
        return self.presence.reserving

    async def _drain_unreserved(self) -> None:
        """Until every batch decided without reservations is written."""
        pending = set(self._unreserved)
        if pending:
            await asyncio.wait(pending)

    async def stop(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        if self.presence is not None:
            await self.presence.stop()
        for inf in (self.pods, self.nodes, self.claims, self.volumes, self.classes, self.budgets):
            await inf.stop()

    def _storage_changed(self) -> None:
        """A claim or volume changed: pods waiting for one try again now."""
        now = self.clock()
        for key in self._unschedulable:
            self._unschedulable[key] = min(self._unschedulable[key], now)
        self._wake.set()

    def _storage_view(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        claims = {f"{c.metadata.namespace}/{c.metadata.name}": c for c in self.claims.list()}
        return claims, {v.metadata.name: v for v in self.volumes.list()}, {c.metadata.name: c for c in self.classes.list()}

    async def _ensure_stream(self) -> None:
        cfg = api.StreamConfig(
            name=STREAM,
            subjects=[f"{SUBJECT}.>"],
            max_age=600.0,
            storage=api.StorageType.FILE,
            discard=api.DiscardPolicy.OLD,
            num_replicas=getattr(self.store, "replicas", 1),  # as durable as the buckets it guards
        )
        await buckets.ensure_stream(self.js, cfg, update=False)  # an existing one is kept as it is

    def _note(self, dirty: set[str], obj: Any) -> None:
        meta = obj.metadata
        dirty.add(f"{meta.namespace or '_'}.{meta.name}" if obj.kind == "Pod" else f"_.{meta.name}")
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        stopper = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                waker = asyncio.create_task(self._wake.wait())
                await asyncio.wait([waker, stopper], timeout=self._next_timeout(), return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
                self._wake.clear()
                if await self.step() and self.linger > 0:
                    await asyncio.sleep(self.linger)  # let more pending pods arrive: bigger batches
        finally:
            stopper.cancel()

    def _next_timeout(self) -> float:
        if self._queue:
            return 0.0
        due = [*self._unschedulable.values(), *(t + RESERVATION_TTL for r in self._reservations.values() for t in r.values())]
        return max(0.0, min(due) - self.clock()) if due else 1.0

    # -- one iteration --------------------------------------------------------------------

    async def step(self) -> bool:
        """Apply what changed, then schedule one batch; True when the batch was short but not empty."""
        now = self.clock()
        self._sync(now)
        self._sweep(now)
        for key, until in list(self._unschedulable.items()):
            if until <= now:
                del self._unschedulable[key]
                self._enqueue(key)
        batch: list[tuple[Pod, PodRequest]] = []
        blocked: list[tuple[Pod, str]] = []
        storage = None
        while self._queue and len(batch) < self.batch_size:
            key = self._queue.pop()
            pod = self.pods.get(key)
            if pod is None or not wants_scheduling(pod, self.scheduler_name) or key in self._in_flight:
                continue
            if key in self._reservations:
                continue  # reserved by another replica; its binding is on the way
            terms = None
            if any(v.persistentVolumeClaim is not None for v in pod.spec.volumes):
                storage = storage or self._storage_view()
                terms, why = volume_constraints(pod, *storage)
                if why:
                    blocked.append((pod, why))
                    continue
            batch.append((pod, pod_request(pod, key, terms)))
        if batch or blocked:
            while len(self._in_flight) + len(batch) > self.max_in_flight and self._writes:
                await asyncio.wait(self._writes, return_when=asyncio.FIRST_COMPLETED)
            self._schedule(batch, now, blocked)
        return 0 < len(batch) < self.batch_size

    def _enqueue(self, key: str) -> None:
        if key not in self._queue and key not in self._in_flight:
            pod = self.pods.get(key)
            self._queue.add(key, (pod.spec.priority or 0) if pod is not None else 0)

    def _retry_unschedulable(self) -> None:
        """The cluster changed: pods that fit nowhere try again once their back-off allows."""
        now = self.clock()
        for key, until in list(self._unschedulable.items()):
            if until <= now:
                del self._unschedulable[key]
                self._enqueue(key)

    def _sync(self, now: float) -> None:
        changed = bool(self._dirty_nodes)
        for key in self._dirty_nodes:
            node = self.nodes.get(key)
            if node is None:
                self.table.remove_node(split_key(key)[1])
            else:
                self.table.set_node(node_info(node))
        self._dirty_nodes.clear()
        for key in self._dirty_pods:
            pod = self.pods.get(key)
            self._note_nomination(key, pod)
            if pod is None or not occupies_node(pod):
                if self.table.node_of(key) is not None and key not in self._in_flight:
                    self.table.forget(key)
                    changed = True
                if pod is None:
                    self._drop_reservations(key)
                    self._unschedulable.pop(key, None)
                    self._attempts.pop(key, None)
                elif not wants_scheduling(pod, self.scheduler_name):
                    self._drop_reservations(key)
                elif key not in self._unschedulable and key not in self._reservations:
                    self._enqueue(key)
                continue
            self._drop_reservations(key)
            self._unschedulable.pop(key, None)
            self._attempts.pop(key, None)
            if self.table.node_of(key) != pod.spec.nodeName:
                self.table.assume(pod_request(pod, key), pod.spec.nodeName)
        self._dirty_pods.clear()
        if changed:
            self._retry_unschedulable()

    # -- nominated pods ---------------------------------------------------------------------

    def _note_nomination(self, key: str, pod: Pod | None) -> None:
        """Keep ``_nominated`` as the stored pod says: pending with a nominatedNodeName."""
        want = None
        if pod is not None and pod.status.nominatedNodeName and wants_scheduling(pod, self.scheduler_name):
            old = self._nominated.get(key)
            node = pod.status.nominatedNodeName
            if old is not None and old[1] == node:
                return
            want = (pod.spec.priority or 0, node, msgspec.structs.replace(pod_request(pod, key), key=key + NOMINATED))
        self._set_nomination(key, want)

    def _set_nomination(self, key: str, value: tuple[int, str, PodRequest] | None) -> None:
        if key in self._placed:
            self._placed.discard(key)
            self.table.forget(key + NOMINATED)
        if value is None:
            self._nominated.pop(key, None)
        else:
            self._nominated[key] = value

    def _count_nominated(self, key: str, priority: int) -> None:
        """Before deciding pod ``key``: count on their nodes exactly the other nominated pods of
        at least its priority (kube-scheduler's filters "with nominated pods")."""
        for other, (prio, node, req) in self._nominated.items():
            want = other != key and other not in self._in_flight and prio >= priority
            if want and other not in self._placed:
                self.table.assume(req, node)
                self._placed.add(other)
            elif not want and other in self._placed:
                self.table.forget(req.key)
                self._placed.discard(other)

    def _drop_reservations(self, key: str) -> None:
        for rkey in self._reservations.pop(key, ()):
            self.table.forget(rkey)

    def _sweep(self, now: float) -> None:
        """Reservations whose pod never showed up bound (the other replica lost the race or died)."""
        for key, held in list(self._reservations.items()):
            for rkey, at in list(held.items()):
                if now - at >= RESERVATION_TTL:
                    del held[rkey]
                    self.table.forget(rkey)
            if not held:
                del self._reservations[key]
                pod = self.pods.get(key)
                if pod is not None and wants_scheduling(pod, self.scheduler_name):
                    self._enqueue(key)

    # -- reservations (shared with other replicas) ----------------------------------------

    def _on_reservation_msg(self, node: str, seq: int, body: ReservationMsg) -> None:
        self._seen_seq[node] = max(self._seen_seq.get(node, 0), seq)
        if body.by == self.identity:
            return
        self._foreign_seq[node] = max(self._foreign_seq.get(node, 0), seq)
        now = self.clock()
        for r in body.pods:
            pod = self.pods.get(r.key)
            if pod is not None and (occupies_node(pod) or not wants_scheduling(pod, self.scheduler_name)):
                continue  # already counted where it is bound, or gone
            # Counted under its own key: a pod two replicas both reserved counts twice until it
            # shows up bound (never too little, so never an overcommit).
            rkey = f"{r.key}#{body.by}"
            req = PodRequest(
                key=rkey, cpu=r.cpu, memory=r.memory, owner_uid=r.owner,
                host_ports=tuple(HostPort(port=p, protocol=proto, host_ip=ip) for p, proto, ip in r.ports),
            )
            self.table.assume(req, node)
            self._reservations.setdefault(r.key, {})[rkey] = now
        self._wake.set()

    async def _on_reservation(self, msg: Any) -> None:
        node = msg.subject[len(SUBJECT) + 1 :]
        try:
            body = _dec.decode(msg.data)
        except msgspec.DecodeError:
            return
        self._on_reservation_msg(node, msg.metadata.sequence.stream, body)

    async def _reserve(self, node: str, reqs: list[PodRequest], foreign_seen: int) -> bool:
        body = ReservationMsg(
            by=self.identity,
            pods=[
                Reservation(r.key, r.cpu, r.memory, r.owner_uid, [(h.port, h.protocol, h.host_ip) for h in r.host_ports])
                for r in reqs
            ],
        )
        lock = self._node_locks.get(node)
        if lock is None:
            lock = self._node_locks[node] = asyncio.Lock()
        async with lock:  # one reservation per node in flight: the next names this one's sequence
            if self._foreign_seq.get(node, 0) != foreign_seen:
                return False  # another replica reserved here after we decided: decide again
            return await self._reserve_locked(node, body)

    async def _reserve_locked(self, node: str, body: ReservationMsg) -> bool:
        expected = self._seen_seq.get(node, 0)
        try:
            seq = await bus.publish_after(self.js, f"{SUBJECT}.{node}", _enc.encode(body), expected)
        except errors.Conflict:
            # Someone reserved on this node since: our view of it is stale until the
            # stream brings that reservation. If the subject has expired, start over at 0.
            with contextlib.suppress(errors.NotFound):
                await bus.last_message(self.js, STREAM, f"{SUBJECT}.{node}")
                return False
            self._seen_seq[node] = 0
            return False
        except errors.KybError as e:
            raise errors.Temporary(f"reserving on {node}: {e}") from e
        if self._seen_seq.get(node, 0) == expected:
            self._seen_seq[node] = seq
        self.reservations_published += 1
        return True

    # -- binding --------------------------------------------------------------------------

    def _schedule(self, batch: list[tuple[Pod, PodRequest]], now: float, blocked: list[tuple[Pod, str]] | None = None) -> None:
        """Decide the batch now (assuming each pod), write it in the background."""
        chosen: dict[str, list[tuple[Pod, PodRequest]]] = {}
        failed: list[Failure] = [(pod, message, None) for pod, message in blocked or []]
        preempting: list[tuple[Pod, str, preemption.Candidate]] = []
        view: tuple[dict[str, list[preemption.Victim]], list[preemption.Budget]] | None = None
        for pod, req in batch:
            priority = pod.spec.priority or 0
            if self._nominated:
                self._count_nominated(req.key, priority)
            nominated = pod.status.nominatedNodeName
            if nominated and fits_on(self.table, req, nominated):
                d = Decision(node_name=nominated, nodes=len(self.table), next_start=self.table.next_start)
            else:
                d = schedule_one(self.table, req, self.rng, now)
            self.table.next_start = d.next_start
            if d.node_name is None:
                view = view or self._preemption_view()
                out = preemption.preempt(self.table, preemptor(pod, req), *view, offset=int(self.rng.integers(1 << 30)))
                if out.candidate is None:
                    message = f"{d.message} preemption: {out.message}."
                    failed.append((pod, message, "" if out.clear_nomination and nominated else None))
                    continue
                node = out.candidate.node
                preempting.append((pod, d.message, out.candidate))
                self.preemptions.append((req.key, node, [v.key for v in out.candidate.victims]))
                # From now on the pod is counted on that node for pods of lower or equal priority.
                self._set_nomination(req.key, (priority, node, msgspec.structs.replace(req, key=req.key + NOMINATED)))
                self._attempts.pop(req.key, None)  # back to the shortest back-off: room is on its way
                continue
            self.table.assume(req, d.node_name)
            self._in_flight.add(req.key)
            chosen.setdefault(d.node_name, []).append((pod, req))
        # What the decisions saw of other replicas' reservations on each node.
        seen = {node: self._foreign_seq.get(node, 0) for node in chosen}
        reserve = self.reserving()
        task = asyncio.create_task(self._write(chosen, failed, seen, reserve, preempting))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        if not reserve and chosen:
            self._unreserved.add(task)
            task.add_done_callback(self._unreserved.discard)

    def _preemption_view(self) -> tuple[dict[str, list[preemption.Victim]], list[preemption.Budget]]:
        """Bound pods by node as preemption sees them (only those counted there in the table), and the budgets."""
        now = time.time()
        by_node: dict[str, list[preemption.Victim]] = {}
        for pod in self.pods.list():
            if not occupies_node(pod):
                continue
            key = f"{pod.metadata.namespace}.{pod.metadata.name}"
            if self.table.node_of(key) == pod.spec.nodeName:
                by_node.setdefault(pod.spec.nodeName, []).append(victim(pod, key, now))
        return by_node, [budget(b) for b in self.budgets.list()]

    async def _write(
        self,
        chosen: dict[str, list[tuple[Pod, PodRequest]]],
        failed: list[Failure],
        seen: dict[str, int],
        reserve: bool,
        preempting: list[tuple[Pod, str, preemption.Candidate]] | None = None,
    ) -> None:
        if reserve and chosen:
            nodes = list(chosen)
            results = await asyncio.gather(
                *(self._reserve(n, [r for _, r in chosen[n]], seen[n]) for n in nodes), return_exceptions=True
            )
            for node, ok in zip(nodes, results, strict=True):
                if ok is True:
                    continue
                for _, req in chosen.pop(node):  # lost the race for this node: decide again
                    self._unassume(req.key, node)
                    self._enqueue(req.key)
                self._wake.set()
        binds = [(pod, req, node) for node, items in chosen.items() for pod, req in items]
        await asyncio.gather(*(self._bind(pod, req, node) for pod, req, node in binds))
        await asyncio.gather(*(self._preempt(pod, message, c) for pod, message, c in preempting or ()))
        await asyncio.gather(*(self._unschedulable_status(pod, message, nominated) for pod, message, nominated in failed))
        if failed or preempting:
            self._wake.set()

    def _unassume(self, key: str, node: str) -> None:
        """Our decision did not stick. If the informer has meanwhile shown the pod bound
        elsewhere, the table already counts it there: leave that."""
        self._in_flight.discard(key)
        if self.table.node_of(key) == node:
            self.table.forget(key)

    async def _bind(self, pod: Pod, req: PodRequest, node: str) -> None:
        headers = self._trace_headers.pop(req.key, None)
        if headers is None:
            await self._bind_untraced(pod, req, node)
            return
        # Inside the trace that created the pod: the binding write carries it on to the kubelet.
        with telemetry.span_from_headers(f"schedule {req.key}", headers, tracer_name="kyb.scheduler",
                                         attributes={"kyb.node": node}):
            await self._bind_untraced(pod, req, node)

    async def _bind_untraced(self, pod: Pod, req: PodRequest, node: str) -> None:
        key = req.key
        cond = PodCondition(type="PodScheduled", status="True", lastTransitionTime=_now_rfc3339())
        # A bound pod's nomination is over (ClearingNominatedNodeNameAfterBinding, on by default).
        new = msgspec.structs.replace(
            pod,
            spec=msgspec.structs.replace(pod.spec, nodeName=node),
            status=msgspec.structs.replace(pod.status, conditions=_with_condition(pod, cond), nominatedNodeName=""),
        )
        try:
            await self.store.update(new, current=pod)
            self._in_flight.discard(key)
            self._attempts.pop(key, None)
            self.bound += 1
            self.bound_log.append((key, node))
            if any(v.persistentVolumeClaim is not None for v in pod.spec.volumes):
                await self._select_node_for_claims(pod, node)
            with contextlib.suppress(Exception):
                await self.store.record_event(
                    pod,
                    "Scheduled",
                    f"Successfully assigned {pod.metadata.namespace}/{pod.metadata.name} to {node}",
                    source=self.scheduler_name,
                    nc=self.nc,
                )
            return
        except errors.Conflict:
            self._unassume(key, node)
            try:
                current = await self.store.get("Pod", pod.metadata.namespace, pod.metadata.name)
            except errors.NotFound:
                return
            if occupies_node(current):
                self.table.assume(pod_request(current, key), current.spec.nodeName)
            elif wants_scheduling(current, self.scheduler_name):
                self._enqueue(key)
        except errors.NotFound:
            self._unassume(key, node)
        except errors.KybError as e:
            self._unassume(key, node)
            self._back_off(key)
            if self.log is not None:
                self.log.warning("binding failed", pod=key, node=node, error=str(e))

    async def _select_node_for_claims(self, pod: Pod, node: str) -> None:
        """Tell the volume binder where to provision the pod's WaitForFirstConsumer claims."""
        claims = {f"{c.metadata.namespace}/{c.metadata.name}": c for c in self.claims.list()}
        classes = {c.metadata.name: c for c in self.classes.list()}
        for ns, name in wait_for_first_consumer_claims(pod, claims, classes):

            def annotate(claim: Any) -> Any:
                if claim.spec.volumeName or SELECTED_NODE in claim.metadata.annotations:
                    return None
                annotations = {**claim.metadata.annotations, SELECTED_NODE: node}
                return msgspec.structs.replace(claim, metadata=msgspec.structs.replace(claim.metadata, annotations=annotations))

            with contextlib.suppress(errors.KybError):
                await self.store.mutate("PersistentVolumeClaim", ns, name, annotate)

    async def _preempt(self, pod: Pod, message: str, candidate: preemption.Candidate) -> None:
        """Nominate ``pod`` to ``candidate``'s node (with PodScheduled=False and ``message``, at the
        revision decided on: if the pod changed meanwhile, another replica may have acted on it, and
        nothing is evicted), then evict the victims and take the node from lower-priority nominees."""
        node = candidate.node
        key = f"{pod.metadata.namespace}.{pod.metadata.name}"
        self._back_off(key)
        cond = PodCondition(
            type="PodScheduled", status="False", reason="Unschedulable", message=message, lastTransitionTime=_now_rfc3339()
        )
        status = msgspec.structs.replace(pod.status, conditions=_with_condition(pod, cond), nominatedNodeName=node)
        try:
            await self.store.update(msgspec.structs.replace(pod, status=status), current=pod)
        except errors.KybError as e:
            self._set_nomination(key, None)  # decided on a stale pod: it is decided again
            if self.log is not None:
                self.log.info("preemption dropped", pod=key, node=node, error=str(e))
            return
        await asyncio.gather(*(self._evict(pod, v, node) for v in candidate.victims if not v.terminating))
        with contextlib.suppress(Exception):
            await self.store.record_event(pod, "FailedScheduling", message, type="Warning", source=self.scheduler_name)
        priority = pod.spec.priority or 0
        lower = [k for k, (prio, at, _) in self._nominated.items() if at == node and prio < priority and k != key]
        for k in lower:
            self._set_nomination(k, None)
            ns, name = split_key(k)

            def clear(cur: Any, node: str = node) -> Any:
                if cur.status.nominatedNodeName != node:
                    return None
                return msgspec.structs.replace(cur, status=msgspec.structs.replace(cur.status, nominatedNodeName=""))

            with contextlib.suppress(errors.KybError):
                await self.store.mutate("Pod", ns, name, clear)
            self._enqueue(k)
        if self.log is not None:
            self.log.info("preempting", pod=key, node=node, victims=[v.key for v in candidate.victims])

    async def _evict(self, pod: Pod, v: preemption.Victim, node: str) -> None:
        """kube-scheduler's PreemptPod: a DisruptionTarget condition, a graceful delete (the victim's
        own grace period), an Event Preempted."""
        cond = PodCondition(
            type="DisruptionTarget", status="True", reason=PREEMPTION_REASON,
            message=f"{self.scheduler_name}: preempting to accommodate a higher priority pod",
            lastTransitionTime=_now_rfc3339(),
        )

        def mark(cur: Any) -> Any:
            if (cur.metadata.uid or "") != v.uid or cur.metadata.deletionTimestamp is not None:
                return None
            return msgspec.structs.replace(cur, status=msgspec.structs.replace(cur.status, conditions=_with_condition(cur, cond)))

        try:
            marked = await self.store.mutate("Pod", v.namespace, v.name, mark)
            if (marked.metadata.uid or "") != v.uid or marked.metadata.deletionTimestamp is not None:
                return  # another pod of that name now, or already going
            await self.store.delete("Pod", v.namespace, v.name)
        except errors.NotFound:
            return
        except errors.KybError as e:
            if self.log is not None:
                self.log.warning("preemption failed", pod=v.key, error=str(e))
            return
        with contextlib.suppress(Exception):
            await self.store.record_event(
                marked, "Preempted", f"Preempted by pod {pod.metadata.uid} on node {node}", source=self.scheduler_name, nc=self.nc
            )

    def _back_off(self, key: str) -> float:
        attempts = self._attempts.get(key, 0)
        self._attempts[key] = attempts + 1
        delay = min(BACKOFF_INITIAL * 2**attempts, BACKOFF_MAX)
        self._unschedulable[key] = self.clock() + delay
        return delay

    async def _unschedulable_status(self, pod: Pod, message: str, nominated: str | None = None) -> None:
        """PodScheduled=False/Unschedulable with ``message``, and ``nominated`` as the pod's
        nominatedNodeName unless None (kube-scheduler writes both in one status update)."""
        key = f"{pod.metadata.namespace}.{pod.metadata.name}"
        self._back_off(key)
        nominated = pod.status.nominatedNodeName if nominated is None else nominated
        old = next((c for c in pod.status.conditions if c.type == "PodScheduled"), None)
        if old is not None and old.status == "False" and old.message == message and pod.status.nominatedNodeName == nominated:
            return  # already says so
        cond = PodCondition(
            type="PodScheduled", status="False", reason="Unschedulable", message=message, lastTransitionTime=_now_rfc3339()
        )
        status = msgspec.structs.replace(pod.status, conditions=_with_condition(pod, cond), nominatedNodeName=nominated)
        new = msgspec.structs.replace(pod, status=status)
        with contextlib.suppress(errors.Conflict, errors.NotFound):
            await self.store.update(new, current=pod)
        await self.store.record_event(pod, "FailedScheduling", message, type="Warning", source=self.scheduler_name)
        if self.log is not None:
            self.log.info("pod unschedulable", pod=key, message=message)


async def run(ctx: Any, stop: asyncio.Event) -> None:
    """Entry point for ``kyb serve scheduler``."""
    opts = ctx.options
    sched = Scheduler(
        ctx.nc,
        ctx.store,
        # Unique per replica, even for two in one process (kyb up, tests): reservations and
        # presence Leases tell replicas apart by it.
        identity=f"{ctx.identity}-{secrets.token_hex(3)}",
        scheduler_name=str(opts.get("scheduler_name", DEFAULT_SCHEDULER)),
        batch_size=int(opts.get("scheduler_batch", 1024)),
        reserve={"auto": None, "always": True, "never": False}[str(opts.get("scheduler_reserve", "auto"))],
        log=ctx.log,
    )
    await sched.start()
    tune_gc()
    try:
        await sched.run(stop)
    finally:
        await sched.stop()

