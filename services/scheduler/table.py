"""The scheduler's node table: every node as one row of numpy arrays, and the pods counted on each.

Rows hold allocatable and requested resources, flags, taint positions, label value codes, host
ports and per-owner pod counts, so ``filters`` and ``scores`` evaluate all nodes with a handful of
array operations. Binding a pod (``assume``) or changing a node touches only that node's row and
notes the row in a change log, from which cached per-pod-shape results are refreshed.

Storage only: what fits is ``filters``, what is best is ``scores``, the decision is ``plan``. Pure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import msgspec
import numpy as np
from numpy.typing import NDArray

from schemas.selector import Selector
from services.scheduler.values import HostPort, NodeInfo, PodRequest, Taint, Term, Toleration

ABSENT = np.int16(32767)  # taint position of a taint a node does not carry
_MATCHING_SELECTORS = 64  # spread selectors whose counts are kept; past this they start over

_Scalar = TypeVar("_Scalar", bound=np.generic)

# Cache keys: the parts of a pod that the cached results depend on.
StaticShape = tuple[str, tuple[tuple[str, str], ...], tuple[Term, ...] | None, tuple[Toleration, ...]]
FitShape = tuple[
    str, tuple[tuple[str, str], ...], tuple[Term, ...] | None, tuple[Toleration, ...], tuple[HostPort, ...], int, int
]
# A cached per-row result, the length of the change log it is refreshed to, and that log.
Refreshed = tuple[NDArray[_Scalar], int, list[int]]


class _Bound(msgspec.Struct):
    node: str
    cpu: int
    memory: int
    score_cpu: int
    score_memory: int
    owner_uid: str
    host_ports: tuple[HostPort, ...]
    namespace: str
    labels: dict[str, str]


class _LabelColumn:
    """One label key across all nodes: value codes (-1 absent)."""

    __slots__ = ("codes", "values", "names")

    def __init__(self, capacity: int) -> None:
        self.codes: NDArray[np.int32] = np.full(capacity, -1, dtype=np.int32)
        self.values: dict[str, int] = {}
        self.names: list[str] = []

    def code(self, value: str) -> int:
        c = self.values.get(value)
        if c is None:
            c = self.values[value] = len(self.names)
            self.names.append(value)
        return c

    def numeric(self) -> NDArray[np.float64]:
        """Per value code its integer value (NaN when not an integer), for Gt/Lt."""
        out = np.full(len(self.names) + 1, np.nan)
        for i, v in enumerate(self.names):
            try:
                out[i] = int(v)
            except ValueError:
                pass
        return out


def _grow(a: NDArray[_Scalar], capacity: int, fill: object) -> NDArray[_Scalar]:
    shape = (capacity, *a.shape[1:])
    out = np.full(shape, fill, dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


class NodeTable:
    """Every node as one row of arrays, plus the pods bound or assumed to each node."""

    def __init__(self, capacity: int = 64, *, percentage_of_nodes_to_score: int = 0) -> None:
        self.percentage_of_nodes_to_score = percentage_of_nodes_to_score  # 0: adaptive, as kube-scheduler
        self.next_start = 0                         # row the next pod's walk over nodes starts at
        self._cap = capacity
        self.n = 0                                  # rows in use (high-water mark)
        self.names: list[str | None] = []
        self.index: dict[str, int] = {}
        self._free: list[int] = []
        self.nodes: dict[str, NodeInfo] = {}
        z: Callable[[], NDArray[np.int64]] = lambda: np.zeros(capacity, dtype=np.int64)  # noqa: E731
        self.alloc_cpu, self.alloc_mem, self.alloc_pods = z(), z(), z()
        self.req_cpu, self.req_mem, self.req_pods = z(), z(), z()
        self.score_cpu, self.score_mem = z(), z()
        self.alive: NDArray[np.bool_] = np.zeros(capacity, dtype=bool)
        self.ready: NDArray[np.bool_] = np.zeros(capacity, dtype=bool)
        self.unschedulable: NDArray[np.bool_] = np.zeros(capacity, dtype=bool)
        self._taints: dict[Taint, int] = {}
        self.taint_list: list[Taint] = []
        self.taint_pos: NDArray[np.int16] = np.full((capacity, 4), ABSENT, dtype=np.int16)
        self.labels: dict[str, _LabelColumn] = {}
        self.ports: dict[tuple[str, int], dict[str, NDArray[np.int32]]] = {}
        self.owners: dict[str, NDArray[np.int32]] = {}
        self.pods: dict[str, _Bound] = {}
        self._pods_on: dict[str, set[str]] = {}
        self.in_namespace: dict[str, set[str]] = {}  # pod keys by namespace (topology spread counts)
        # per (namespace, selector) of a topology spread constraint seen: matching pods per row,
        # kept up to date like ``owners`` from then on
        self.matching: dict[tuple[str, Selector], NDArray[np.int64]] = {}
        # Derived data, kept by ``filters`` and ``scores`` (never a decision's input on its own):
        # static filter results per pod shape (dropped when a node changes), and feasibility and
        # resource scores per pod shape, refreshed only on the rows changed since (the log).
        self.static_cache: dict[StaticShape, tuple[NDArray[np.int8], NDArray[np.int64]]] = {}
        self.fit_cache: dict[FitShape, Refreshed[np.bool_]] = {}
        self.resource_cache: dict[tuple[int, int], Refreshed[np.int64]] = {}
        self.changed: list[int] = []

    # ---- nodes ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.index)

    def _ensure_capacity(self, rows: int) -> None:
        if rows <= self._cap:
            return
        cap = max(rows, self._cap * 2)
        for attr in ("alloc_cpu", "alloc_mem", "alloc_pods", "req_cpu", "req_mem", "req_pods", "score_cpu", "score_mem"):
            setattr(self, attr, _grow(getattr(self, attr), cap, 0))
        for attr in ("alive", "ready", "unschedulable"):
            setattr(self, attr, _grow(getattr(self, attr), cap, False))
        self.taint_pos = _grow(self.taint_pos, cap, ABSENT)
        for col in self.labels.values():
            col.codes = _grow(col.codes, cap, -1)
        for by_ip in self.ports.values():
            for ip in by_ip:
                by_ip[ip] = _grow(by_ip[ip], cap, 0)
        for uid in self.owners:
            self.owners[uid] = _grow(self.owners[uid], cap, 0)
        for sel in self.matching:
            self.matching[sel] = _grow(self.matching[sel], cap, 0)
        self._cap = cap

    def _taint_column(self, taint: Taint) -> int:
        col = self._taints.get(taint)
        if col is None:
            col = self._taints[taint] = len(self.taint_list)
            self.taint_list.append(taint)
            if col >= self.taint_pos.shape[1]:
                wider = np.full((self._cap, self.taint_pos.shape[1] * 2), ABSENT, dtype=np.int16)
                wider[:, : self.taint_pos.shape[1]] = self.taint_pos
                self.taint_pos = wider
        return col

    def set_node(self, node: NodeInfo) -> None:
        """Add a node or change one; its bound pods stay accounted."""
        self._nodes_changed()
        i = self.index.get(node.name)
        if i is None:
            if self._free:
                i = self._free.pop()
            else:
                i = self.n
                self._ensure_capacity(i + 1)
                self.n += 1
                self.names.append(None)
            self.index[node.name] = i
            self.names[i] = node.name
            self.alive[i] = True
            for key in self._pods_on.get(node.name, ()):
                self._account(i, self.pods[key], +1)
        self.nodes[node.name] = node
        self._touch(i)
        self.alloc_cpu[i], self.alloc_mem[i], self.alloc_pods[i] = node.cpu, node.memory, node.pods
        self.ready[i] = node.ready
        self.unschedulable[i] = node.unschedulable
        self.taint_pos[i, :] = ABSENT
        for pos, taint in enumerate(node.taints):
            t = self._taint_column(taint)
            if self.taint_pos[i, t] == ABSENT:
                self.taint_pos[i, t] = pos
        for col in self.labels.values():
            col.codes[i] = -1
        for key, value in node.labels:
            label = self.labels.get(key)
            if label is None:
                label = self.labels[key] = _LabelColumn(self._cap)
            label.codes[i] = label.code(value)

    def remove_node(self, name: str) -> None:
        """Forget a node; pods bound to it stay recorded and count again if it comes back."""
        i = self.index.pop(name, None)
        if i is None:
            return
        self._nodes_changed()
        self.nodes.pop(name, None)
        self.names[i] = None
        self.alive[i] = False
        for attr in ("alloc_cpu", "alloc_mem", "alloc_pods", "req_cpu", "req_mem", "req_pods", "score_cpu", "score_mem"):
            getattr(self, attr)[i] = 0
        self.ready[i] = self.unschedulable[i] = False
        self.taint_pos[i, :] = ABSENT
        for col in self.labels.values():
            col.codes[i] = -1
        for by_ip in self.ports.values():
            for counts in by_ip.values():
                counts[i] = 0
        for counts in self.owners.values():
            counts[i] = 0
        for matching in self.matching.values():
            matching[i] = 0
        self._touch(i)
        self._free.append(i)

    def _nodes_changed(self) -> None:
        self.static_cache.clear()
        self.fit_cache.clear()

    # ---- pods ----------------------------------------------------------------------------

    def _touch(self, i: int) -> None:
        self.changed.append(i)
        if len(self.changed) > 4 * self._cap + 1024:
            self.resource_cache.clear()
            self.fit_cache.clear()
            self.changed = []

    def _account(self, i: int, b: _Bound, sign: int) -> None:
        self._touch(i)
        self.req_cpu[i] += sign * b.cpu
        self.req_mem[i] += sign * b.memory
        self.req_pods[i] += sign
        self.score_cpu[i] += sign * b.score_cpu
        self.score_mem[i] += sign * b.score_memory
        for hp in b.host_ports:
            by_ip = self.ports.setdefault((hp.protocol, hp.port), {})
            counts = by_ip.get(hp.host_ip)
            if counts is None:
                counts = by_ip[hp.host_ip] = np.zeros(self._cap, dtype=np.int32)
            counts[i] += sign
        if b.owner_uid:
            counts = self.owners.get(b.owner_uid)
            if counts is None:
                counts = self.owners[b.owner_uid] = np.zeros(self._cap, dtype=np.int32)
            counts[i] += sign
        if self.matching:
            for (ns, selector), matching in self.matching.items():
                if ns == b.namespace and selector.matches(b.labels):
                    matching[i] += sign

    def assume(self, pod: PodRequest, node_name: str) -> None:
        """Count ``pod`` on ``node_name`` (bound, or about to be). Idempotent per pod key."""
        old = self.pods.get(pod.key)
        if old is not None:
            if old.node == node_name:
                return
            self.forget(pod.key)
        b = _Bound(
            node_name, pod.cpu, pod.memory, pod.score_cpu, pod.score_memory, pod.owner_uid, pod.host_ports,
            pod.namespace, dict(pod.labels),
        )
        self.pods[pod.key] = b
        self._pods_on.setdefault(node_name, set()).add(pod.key)
        self.in_namespace.setdefault(pod.namespace, set()).add(pod.key)
        i = self.index.get(node_name)
        if i is not None:
            self._account(i, b, +1)

    def forget(self, key: str) -> _Bound | None:
        """Stop counting a pod (deleted, or its binding failed); what was counted, for ``restore``."""
        b = self.pods.pop(key, None)
        if b is None:
            return None
        on = self._pods_on.get(b.node)
        if on is not None:
            on.discard(key)
            if not on:
                del self._pods_on[b.node]
        same = self.in_namespace.get(b.namespace)
        if same is not None:
            same.discard(key)
            if not same:
                del self.in_namespace[b.namespace]
        i = self.index.get(b.node)
        if i is not None:
            self._account(i, b, -1)
        return b

    def restore(self, key: str, b: _Bound) -> None:
        """Count again, exactly as before, a pod that ``forget`` returned ``b`` for (preemption
        takes pods off a node to see whether another fits, then puts them back)."""
        if key in self.pods:
            self.forget(key)
        self.pods[key] = b
        self._pods_on.setdefault(b.node, set()).add(key)
        self.in_namespace.setdefault(b.namespace, set()).add(key)
        i = self.index.get(b.node)
        if i is not None:
            self._account(i, b, +1)

    def matching_per_row(self, namespace: str, selector: Selector) -> NDArray[np.int64]:
        """Per node row: how many pods of ``namespace`` counted there (bound or assumed) have
        labels that ``selector`` matches. Counted once, then kept up to date. Do not modify."""
        key = (namespace, selector)
        out = self.matching.get(key)
        if out is None:
            if len(self.matching) >= _MATCHING_SELECTORS:
                self.matching.clear()
            out = self.matching[key] = np.zeros(self._cap, dtype=np.int64)
            for pod in self.in_namespace.get(namespace, ()):
                b = self.pods[pod]
                i = self.index.get(b.node)
                if i is not None and selector.matches(b.labels):
                    out[i] += 1
        return out[: self.n]

    def node_of(self, key: str) -> str | None:
        b = self.pods.get(key)
        return b.node if b is not None else None

    # ---- filters -------------------------------------------------------------------------
