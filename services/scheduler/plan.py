"""Where a pod should run: kube-scheduler's filters and scores, evaluated over all nodes at once.

The scheduler keeps every node as one row of a ``NodeTable`` (numpy arrays: allocatable and
requested resources, flags, taints, labels, host ports, per-owner pod counts). Deciding for
one pod is a handful of array operations instead of a Python loop per node, and binding a pod
(``assume``) or changing a node only touches that node's row.

Filters, in kube-scheduler's order and with its messages: node Ready, NodeUnschedulable,
NodeName, TaintToleration (NoSchedule/NoExecute), NodeAffinity (nodeSelector and required
node affinity), NodePorts, NodeResourcesFit. Scores (0-100 each, weighted like the default
profile): NodeResourcesLeastAllocated (1), NodeResourcesBalancedAllocation (1), spreading of
one owner's pods (2), preferred node affinity (2), TaintToleration for PreferNoSchedule (3).
Ties are broken with the injected random generator.

Like kube-scheduler, a pod is scored on only part of a large cluster: nodes are walked from
where the previous pod stopped (wrapping around) until ``num_feasible_nodes_to_find`` feasible
ones are found (all of them below 100 nodes; otherwise ``percentageOfNodesToScore``, adaptive by
default: 50% minus 1% per 125 nodes, at least 5% and at least 100 nodes), and the best of those
wins. Spreading over successive pods comes from the moving start.

Pure: no I/O, no clock (``now`` is an argument), no randomness but the injected generator.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

import msgspec
import numpy as np

from schemas import tolerations

MAX_NODE_SCORE = 100
WEIGHTS = {"least": 1, "balanced": 1, "spread": 2, "affinity": 2, "taint": 3}
# kube-scheduler scores pods without requests as if they asked for this much (non-zero defaults).
DEFAULT_CPU_MILLIS = 100
DEFAULT_MEMORY_BYTES = 200 * 1024 * 1024

UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"

REASON_NOT_READY = "node(s) were not ready"
REASON_UNSCHEDULABLE = "node(s) were unschedulable"
REASON_NODE_NAME = "node(s) didn't match the requested node name"
REASON_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
REASON_PORTS = "node(s) didn't have free ports for the requested pod ports"
REASON_TOO_MANY_PODS = "Too many pods"
REASON_CPU = "Insufficient cpu"
REASON_MEMORY = "Insufficient memory"

Effect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
_HARD_EFFECTS = ("NoSchedule", "NoExecute")
_ABSENT = np.int16(32767)  # taint position of a taint a node does not carry
MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5
_SCALAR_REFRESH = 32  # changed rows re-scored one by one in Python below this many (numpy call overhead)


def num_feasible_nodes_to_find(nodes: int, percentage: int = 0) -> int:
    """kube-scheduler's numFeasibleNodesToFind: how many feasible nodes to find, then score.

    ``percentage`` is percentageOfNodesToScore; 0 means adaptive (50 - nodes/125, at least 5)."""
    if nodes < MIN_FEASIBLE_NODES_TO_FIND:
        return nodes
    if percentage <= 0:
        percentage = max(50 - nodes // 125, MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    if percentage >= 100:
        return nodes
    return max(nodes * percentage // 100, MIN_FEASIBLE_NODES_TO_FIND)


class _Data(msgspec.Struct, kw_only=True, frozen=True):
    """Base of the scheduler's own hashable value types."""


class Taint(_Data):
    key: str
    value: str = ""
    effect: Effect = "NoSchedule"


class Toleration(_Data):
    key: str = ""
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str = ""
    effect: str = ""  # "" tolerates every effect

    def tolerates(self, taint: Taint) -> bool:
        """Kubernetes' ToleratesTaint (schemas.tolerations)."""
        return tolerations.tolerates(self, taint)


class Requirement(_Data):
    """One matchExpressions/matchFields entry of a node selector term."""

    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: tuple[str, ...] = ()


class Term(_Data):
    """A nodeSelectorTerm: all expressions and fields must match; an empty term matches nothing."""

    match_expressions: tuple[Requirement, ...] = ()
    match_fields: tuple[Requirement, ...] = ()


class PreferredTerm(_Data):
    weight: int
    term: Term


class HostPort(_Data):
    port: int
    protocol: str = "TCP"
    host_ip: str = "0.0.0.0"


class PodRequest(_Data):
    """What the scheduler needs to know about one pod (built from a Pod by ``podinfo``)."""

    key: str                                   # "<namespace>.<name>"
    cpu: int = 0                               # millicores requested
    memory: int = 0                            # bytes requested
    node_name: str = ""                        # spec.nodeName asked for (NodeName filter)
    node_selector: tuple[tuple[str, str], ...] = ()
    required: tuple[Term, ...] | None = None   # None: no required node affinity
    preferred: tuple[PreferredTerm, ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    host_ports: tuple[HostPort, ...] = ()
    owner_uid: str = ""                        # controller owner, for spreading

    @property
    def score_cpu(self) -> int:
        return self.cpu or DEFAULT_CPU_MILLIS

    @property
    def score_memory(self) -> int:
        return self.memory or DEFAULT_MEMORY_BYTES

    def tolerates(self, taint: Taint) -> bool:
        return tolerations.tolerated(self.tolerations, taint)


class NodeInfo(_Data):
    """What the scheduler needs to know about one node."""

    name: str
    cpu: int                                   # allocatable millicores
    memory: int                                # allocatable bytes
    pods: int = 110                            # allocatable pod count
    labels: tuple[tuple[str, str], ...] = ()
    taints: tuple[Taint, ...] = ()
    ready: bool = True
    unschedulable: bool = False


class Decision(_Data):
    node_name: str | None
    reasons: Counter = msgspec.field(default_factory=Counter)  # filter message -> nodes (on failure)
    nodes: int = 0                                            # nodes considered

    @property
    def message(self) -> str:
        """kube-scheduler's FitError message: "0/3 nodes are available: 1 ..., 2 Insufficient cpu."."""
        if self.node_name is not None:
            return ""
        if self.nodes == 0:
            return "no nodes available to schedule pods"
        parts = sorted(f"{count} {reason}" for reason, count in self.reasons.items())
        return f"0/{self.nodes} nodes are available: {', '.join(parts)}."


class _Bound(msgspec.Struct):
    node: str
    cpu: int
    memory: int
    score_cpu: int
    score_memory: int
    owner_uid: str
    host_ports: tuple[HostPort, ...]


class _LabelColumn:
    """One label key across all nodes: value codes (-1 absent)."""

    __slots__ = ("codes", "values", "names")

    def __init__(self, capacity: int) -> None:
        self.codes = np.full(capacity, -1, dtype=np.int32)
        self.values: dict[str, int] = {}
        self.names: list[str] = []

    def code(self, value: str) -> int:
        c = self.values.get(value)
        if c is None:
            c = self.values[value] = len(self.names)
            self.names.append(value)
        return c

    def numeric(self) -> np.ndarray:
        """Per value code its integer value (NaN when not an integer), for Gt/Lt."""
        out = np.full(len(self.names) + 1, np.nan)
        for i, v in enumerate(self.names):
            try:
                out[i] = int(v)
            except ValueError:
                pass
        return out


def _grow(a: np.ndarray, capacity: int, fill: object) -> np.ndarray:
    shape = (capacity, *a.shape[1:])
    out = np.full(shape, fill, dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


class NodeTable:
    """Every node as one row of arrays, plus the pods bound or assumed to each node."""

    def __init__(
        self, rng: np.random.Generator | None = None, capacity: int = 64, *, percentage_of_nodes_to_score: int = 0
    ) -> None:
        self.rng = rng if rng is not None else np.random.default_rng()
        self.percentage_of_nodes_to_score = percentage_of_nodes_to_score  # 0: adaptive, as kube-scheduler
        self.next_start = 0                         # row the next pod's walk over nodes starts at
        self._cap = capacity
        self.n = 0                                  # rows in use (high-water mark)
        self.names: list[str | None] = []
        self.index: dict[str, int] = {}
        self._free: list[int] = []
        self.nodes: dict[str, NodeInfo] = {}
        z = lambda: np.zeros(capacity, dtype=np.int64)  # noqa: E731
        self.alloc_cpu, self.alloc_mem, self.alloc_pods = z(), z(), z()
        self.req_cpu, self.req_mem, self.req_pods = z(), z(), z()
        self.score_cpu, self.score_mem = z(), z()
        self.alive = np.zeros(capacity, dtype=bool)
        self.ready = np.zeros(capacity, dtype=bool)
        self.unschedulable = np.zeros(capacity, dtype=bool)
        self._taints: dict[Taint, int] = {}
        self._taint_list: list[Taint] = []
        self.taint_pos = np.full((capacity, 4), _ABSENT, dtype=np.int16)
        self._labels: dict[str, _LabelColumn] = {}
        self._ports: dict[tuple[str, int], dict[str, np.ndarray]] = {}
        self._owners: dict[str, np.ndarray] = {}
        self.pods: dict[str, _Bound] = {}
        self._pods_on: dict[str, set[str]] = {}
        self._static_cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        # Resource scores per pod shape, refreshed only on the rows changed since (the log).
        self._resource_cache: dict[tuple[int, int], list] = {}
        self._changed: list[int] = []

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
        self.taint_pos = _grow(self.taint_pos, cap, _ABSENT)
        for col in self._labels.values():
            col.codes = _grow(col.codes, cap, -1)
        for by_ip in self._ports.values():
            for ip in by_ip:
                by_ip[ip] = _grow(by_ip[ip], cap, 0)
        for uid in self._owners:
            self._owners[uid] = _grow(self._owners[uid], cap, 0)
        self._cap = cap

    def _taint_column(self, taint: Taint) -> int:
        col = self._taints.get(taint)
        if col is None:
            col = self._taints[taint] = len(self._taint_list)
            self._taint_list.append(taint)
            if col >= self.taint_pos.shape[1]:
                wider = np.full((self._cap, self.taint_pos.shape[1] * 2), _ABSENT, dtype=np.int16)
                wider[:, : self.taint_pos.shape[1]] = self.taint_pos
                self.taint_pos = wider
        return col

    def set_node(self, node: NodeInfo) -> None:
        """Add a node or change one; its bound pods stay accounted."""
        self._static_cache.clear()
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
        self.taint_pos[i, :] = _ABSENT
        for pos, taint in enumerate(node.taints):
            col = self._taint_column(taint)
            if self.taint_pos[i, col] == _ABSENT:
                self.taint_pos[i, col] = pos
        for col in self._labels.values():
            col.codes[i] = -1
        for key, value in node.labels:
            col = self._labels.get(key)
            if col is None:
                col = self._labels[key] = _LabelColumn(self._cap)
            col.codes[i] = col.code(value)

    def remove_node(self, name: str) -> None:
        """Forget a node; pods bound to it stay recorded and count again if it comes back."""
        i = self.index.pop(name, None)
        if i is None:
            return
        self._static_cache.clear()
        self.nodes.pop(name, None)
        self.names[i] = None
        self.alive[i] = False
        for attr in ("alloc_cpu", "alloc_mem", "alloc_pods", "req_cpu", "req_mem", "req_pods", "score_cpu", "score_mem"):
            getattr(self, attr)[i] = 0
        self.ready[i] = self.unschedulable[i] = False
        self.taint_pos[i, :] = _ABSENT
        for col in self._labels.values():
            col.codes[i] = -1
        for by_ip in self._ports.values():
            for counts in by_ip.values():
                counts[i] = 0
        for counts in self._owners.values():
            counts[i] = 0
        self._touch(i)
        self._free.append(i)

    # ---- pods ----------------------------------------------------------------------------

    def _touch(self, i: int) -> None:
        self._changed.append(i)
        if len(self._changed) > 4 * self._cap + 1024:
            self._resource_cache.clear()
            self._changed = []

    def _account(self, i: int, b: _Bound, sign: int) -> None:
        self._touch(i)
        self.req_cpu[i] += sign * b.cpu
        self.req_mem[i] += sign * b.memory
        self.req_pods[i] += sign
        self.score_cpu[i] += sign * b.score_cpu
        self.score_mem[i] += sign * b.score_memory
        for hp in b.host_ports:
            by_ip = self._ports.setdefault((hp.protocol, hp.port), {})
            counts = by_ip.get(hp.host_ip)
            if counts is None:
                counts = by_ip[hp.host_ip] = np.zeros(self._cap, dtype=np.int32)
            counts[i] += sign
        if b.owner_uid:
            counts = self._owners.get(b.owner_uid)
            if counts is None:
                counts = self._owners[b.owner_uid] = np.zeros(self._cap, dtype=np.int32)
            counts[i] += sign

    def assume(self, pod: PodRequest, node_name: str) -> None:
        """Count ``pod`` on ``node_name`` (bound, or about to be). Idempotent per pod key."""
        old = self.pods.get(pod.key)
        if old is not None:
            if old.node == node_name:
                return
            self.forget(pod.key)
        b = _Bound(node_name, pod.cpu, pod.memory, pod.score_cpu, pod.score_memory, pod.owner_uid, pod.host_ports)
        self.pods[pod.key] = b
        self._pods_on.setdefault(node_name, set()).add(pod.key)
        i = self.index.get(node_name)
        if i is not None:
            self._account(i, b, +1)

    def forget(self, key: str) -> None:
        """Stop counting a pod (deleted, or its binding failed)."""
        b = self.pods.pop(key, None)
        if b is None:
            return
        on = self._pods_on.get(b.node)
        if on is not None:
            on.discard(key)
            if not on:
                del self._pods_on[b.node]
        i = self.index.get(b.node)
        if i is not None:
            self._account(i, b, -1)

    def node_of(self, key: str) -> str | None:
        b = self.pods.get(key)
        return b.node if b is not None else None

    # ---- filters -------------------------------------------------------------------------

    def _term_mask(self, term: Term, n: int) -> np.ndarray:
        if not term.match_expressions and not term.match_fields:
            return np.zeros(n, dtype=bool)
        mask = np.ones(n, dtype=bool)
        for r in term.match_expressions:
            mask &= self._requirement_mask(r, n)
        for r in term.match_fields:
            mask &= self._field_mask(r, n)
        return mask

    def _requirement_mask(self, r: Requirement, n: int) -> np.ndarray:
        col = self._labels.get(r.key)
        codes = col.codes[:n] if col is not None else np.full(n, -1, dtype=np.int32)
        present = codes >= 0
        if r.operator in ("In", "NotIn"):
            wanted = [col.values[v] for v in r.values if v in col.values] if col is not None else []
            inside = np.isin(codes, wanted) if wanted else np.zeros(n, dtype=bool)
            return inside if r.operator == "In" else ~inside
        if r.operator == "Exists":
            return present
        if r.operator == "DoesNotExist":
            return ~present
        try:
            bound = int(r.values[0]) if len(r.values) == 1 else None
        except ValueError:
            bound = None
        if bound is None or col is None:
            return np.zeros(n, dtype=bool)
        numbers = col.numeric()[np.where(present, codes, len(col.names))]
        with np.errstate(invalid="ignore"):
            return numbers > bound if r.operator == "Gt" else numbers < bound

    def _field_mask(self, r: Requirement, n: int) -> np.ndarray:
        if r.key != "metadata.name" or r.operator not in ("In", "NotIn"):
            return np.zeros(n, dtype=bool)
        inside = np.zeros(n, dtype=bool)
        for v in r.values:
            i = self.index.get(v)
            if i is not None:
                inside[i] = True
        return inside if r.operator == "In" else ~inside

    def _tolerated_columns(self, pod: PodRequest) -> np.ndarray:
        return np.array([pod.tolerates(t) for t in self._taint_list], dtype=bool)

    def _static(self, pod: PodRequest) -> tuple[np.ndarray, np.ndarray]:
        """Filters that depend only on nodes, not on other pods: (first failing filter code per
        node, 0 = passes; first untolerated hard taint column per node). Cached per pod shape."""
        sig = (pod.node_name, pod.node_selector, pod.required, pod.tolerations)
        hit = self._static_cache.get(sig)
        if hit is not None:
            return hit
        n = self.n
        code = np.zeros(n, dtype=np.int8)
        code[~self.alive[:n]] = -1

        def fail(mask: np.ndarray, c: int) -> None:
            code[(code == 0) & mask] = c

        if not pod.tolerates(Taint(key=NOT_READY_TAINT, effect="NoSchedule")):
            fail(~self.ready[:n], 1)
        if not pod.tolerates(Taint(key=UNSCHEDULABLE_TAINT, effect="NoSchedule")):
            fail(self.unschedulable[:n], 2)
        if pod.node_name:
            wanted = np.ones(n, dtype=bool)
            i = self.index.get(pod.node_name)
            if i is not None:
                wanted[i] = False
            fail(wanted, 3)
        first_taint = np.full(n, -1, dtype=np.int64)
        if self._taint_list:
            tolerated = self._tolerated_columns(pod)
            hard = np.array([t.effect in _HARD_EFFECTS for t in self._taint_list], dtype=bool)
            cols = np.flatnonzero(hard & ~tolerated)
            if cols.size:
                pos = self.taint_pos[:n][:, cols]
                best = pos.argmin(axis=1)
                has = pos[np.arange(n), best] != _ABSENT
                first_taint[has] = cols[best[has]]
                fail(has, 4)
        affinity = np.ones(n, dtype=bool)
        for key, value in pod.node_selector:
            col = self._labels.get(key)
            c = col.values.get(value) if col is not None else None
            affinity &= (col.codes[:n] == c) if c is not None else False
        if pod.required is not None:
            any_term = np.zeros(n, dtype=bool)
            for term in pod.required:
                any_term |= self._term_mask(term, n)
            affinity &= any_term
        fail(~affinity, 5)
        out = (code, first_taint)
        self._static_cache[sig] = out
        return out

    def _port_conflicts(self, pod: PodRequest, lo: int, hi: int) -> np.ndarray | None:
        conflict = None
        for hp in pod.host_ports:
            by_ip = self._ports.get((hp.protocol, hp.port))
            if not by_ip:
                continue
            for ip, counts in by_ip.items():
                if hp.host_ip == "0.0.0.0" or ip == "0.0.0.0" or ip == hp.host_ip:
                    c = counts[lo:hi] > 0
                    conflict = c if conflict is None else (conflict | c)
        return conflict

    def feasible(self, pod: PodRequest) -> np.ndarray:
        """Per node row: does the pod pass every filter."""
        return self._feasible_range(pod, 0, self.n)

    def _feasible_range(self, pod: PodRequest, lo: int, hi: int) -> np.ndarray:
        code, _ = self._static(pod)
        ok = code[lo:hi] == 0
        ports = self._port_conflicts(pod, lo, hi)
        if ports is not None:
            ok &= ~ports
        ok &= self.req_pods[lo:hi] < self.alloc_pods[lo:hi]
        if pod.cpu > 0:
            ok &= self.alloc_cpu[lo:hi] - self.req_cpu[lo:hi] >= pod.cpu
        if pod.memory > 0:
            ok &= self.alloc_mem[lo:hi] - self.req_mem[lo:hi] >= pod.memory
        return ok

    def find_feasible(self, pod: PodRequest, want: int) -> tuple[np.ndarray, int]:
        """kube-scheduler's findNodesThatPassFilters: walk rows from ``next_start`` (wrapping)
        until ``want`` feasible nodes are found. Returns (their rows in walk order, rows walked)."""
        n = self.n
        if want >= len(self) or n == 0:
            return np.flatnonzero(self.feasible(pod)), n
        start = self.next_start % n
        chunk = max(want + want // 4, 256)
        parts: list[np.ndarray] = []
        have = walked = 0
        for seg_lo, seg_hi in ((start, n), (0, start)):
            lo = seg_lo
            while lo < seg_hi:
                hi = min(lo + chunk, seg_hi)
                rows = np.flatnonzero(self._feasible_range(pod, lo, hi))
                if have + rows.size >= want:
                    rows = rows[: want - have] + lo
                    parts.append(rows)
                    return np.concatenate(parts) if len(parts) > 1 else rows, walked + int(rows[-1]) - lo + 1
                if rows.size:
                    parts.append(rows + lo)
                    have += rows.size
                walked += hi - lo
                lo = hi
        return (np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)), walked

    def reasons(self, pod: PodRequest) -> Counter:
        """Why each node rejects the pod, counted per message as kube-scheduler reports it."""
        n = self.n
        code, first_taint = self._static(pod)
        out: Counter = Counter()
        fixed = {1: REASON_NOT_READY, 2: REASON_UNSCHEDULABLE, 3: REASON_NODE_NAME, 5: REASON_AFFINITY}
        for c, reason in fixed.items():
            k = int((code == c).sum())
            if k:
                out[reason] = k
        for col, k in zip(*np.unique(first_taint[code == 4], return_counts=True), strict=True):
            t = self._taint_list[int(col)]
            out[f"node(s) had untolerated taint {{{t.key}: {t.value}}}"] += int(k)
        rest = code == 0
        ports = self._port_conflicts(pod, 0, n)
        if ports is not None:
            k = int((rest & ports).sum())
            if k:
                out[REASON_PORTS] = k
            rest &= ~ports
        checks = [
            (REASON_TOO_MANY_PODS, self.req_pods[:n] >= self.alloc_pods[:n]),
            (REASON_CPU, (self.alloc_cpu[:n] - self.req_cpu[:n] < pod.cpu) if pod.cpu > 0 else None),
            (REASON_MEMORY, (self.alloc_mem[:n] - self.req_mem[:n] < pod.memory) if pod.memory > 0 else None),
        ]
        for reason, short in checks:
            if short is not None:
                k = int((rest & short).sum())
                if k:
                    out[reason] = k
        return out

    # ---- scores --------------------------------------------------------------------------

    def _resource_scores(self, cpu: int, memory: int, rows: np.ndarray | slice) -> np.ndarray:
        """LeastAllocated + BalancedAllocation (weighted) of ``rows`` for a pod asking cpu/memory."""
        cap_cpu = self.alloc_cpu[rows]
        cap_mem = self.alloc_mem[rows]
        want_cpu = self.score_cpu[rows] + cpu
        want_mem = self.score_mem[rows] + memory
        total = WEIGHTS["least"] * ((_least(want_cpu, cap_cpu) + _least(want_mem, cap_mem)) // 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            f_cpu = np.where(cap_cpu > 0, np.minimum(want_cpu / np.maximum(cap_cpu, 1), 1.0), 1.0)
            f_mem = np.where(cap_mem > 0, np.minimum(want_mem / np.maximum(cap_mem, 1), 1.0), 1.0)
        total += WEIGHTS["balanced"] * ((1.0 - np.abs(f_cpu - f_mem) / 2.0) * MAX_NODE_SCORE).astype(np.int64)
        return total

    def _resource_row_scores(self, pod: PodRequest) -> np.ndarray:
        """``_resource_scores`` of every row, cached per pod shape and refreshed on changed rows."""
        shape = (pod.score_cpu, pod.score_memory)
        entry = self._resource_cache.get(shape)
        log = self._changed
        if entry is None or entry[0].size != self.n or entry[2] is not log:
            arr = self._resource_scores(*shape, slice(0, self.n))
            self._resource_cache[shape] = [arr, len(log), log]
            return arr
        arr, pos, _ = entry
        if pos < len(log):
            if len(log) - pos <= _SCALAR_REFRESH:
                for i in set(log[pos:]):
                    arr[i] = self._resource_score(*shape, i)
            else:
                rows = np.unique(np.array(log[pos:], dtype=np.int64))
                arr[rows] = self._resource_scores(*shape, rows)
            entry[1] = len(log)
        return arr

    def _resource_score(self, cpu: int, memory: int, i: int) -> int:
        """``_resource_scores`` of one row, in plain Python (the same integer and float steps)."""
        cap_cpu, cap_mem = int(self.alloc_cpu[i]), int(self.alloc_mem[i])
        want_cpu, want_mem = int(self.score_cpu[i]) + cpu, int(self.score_mem[i]) + memory
        least = WEIGHTS["least"] * ((_least_one(want_cpu, cap_cpu) + _least_one(want_mem, cap_mem)) // 2)
        f_cpu = min(want_cpu / max(cap_cpu, 1), 1.0) if cap_cpu > 0 else 1.0
        f_mem = min(want_mem / max(cap_mem, 1), 1.0) if cap_mem > 0 else 1.0
        return least + WEIGHTS["balanced"] * int((1.0 - abs(f_cpu - f_mem) / 2.0) * MAX_NODE_SCORE)

    def scores(self, pod: PodRequest, rows: np.ndarray) -> np.ndarray:
        """Weighted total score of each of ``rows`` (feasible node rows), as integers."""
        total = self._resource_row_scores(pod)[rows]
        const = 0  # scores equal on every row are added once at the end
        counts = self._owners.get(pod.owner_uid) if pod.owner_uid else None
        c = counts[rows] if counts is not None else None
        top = int(c.max()) if c is not None and c.size else 0
        if top > 0:
            # (top - c) * 100 // top: exactly what kube-scheduler's float division truncates to
            np.subtract(top, c, out=c)
            c *= MAX_NODE_SCORE
            c //= top
            c *= WEIGHTS["spread"]
            total += c
        else:
            const += WEIGHTS["spread"] * MAX_NODE_SCORE
        if pod.preferred:
            raw = np.zeros(rows.size, dtype=np.int64)
            n = self.n
            for p in pod.preferred:
                raw += p.weight * self._term_mask(p.term, n)[rows]
            total += WEIGHTS["affinity"] * _normalize(raw, reverse=False)
        if self._taint_list:
            tolerated = self._tolerated_columns(pod)
            soft = np.array([t.effect == "PreferNoSchedule" for t in self._taint_list], dtype=bool)
            cols = np.flatnonzero(soft & ~tolerated)
            if cols.size:
                raw = (self.taint_pos[rows][:, cols] != _ABSENT).sum(axis=1).astype(np.int64)
                total += WEIGHTS["taint"] * _normalize(raw, reverse=True)
            else:
                const += WEIGHTS["taint"] * MAX_NODE_SCORE
        else:
            const += WEIGHTS["taint"] * MAX_NODE_SCORE
        if const:
            total += const
        return total


def _least(requested: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """NodeResourcesLeastAllocated for one resource: (capacity - requested) * 100 / capacity."""
    safe = np.maximum(capacity, 1)
    score = (capacity - requested) * MAX_NODE_SCORE // safe
    return np.where((capacity > 0) & (requested <= capacity), score, 0)


def _least_one(requested: int, capacity: int) -> int:
    """``_least`` of one value."""
    return (capacity - requested) * MAX_NODE_SCORE // capacity if capacity > 0 and requested <= capacity else 0


def _normalize(raw: np.ndarray, *, reverse: bool) -> np.ndarray:
    """kube-scheduler's DefaultNormalizeScore."""
    top = int(raw.max()) if raw.size else 0
    if top == 0:
        return np.full(raw.size, MAX_NODE_SCORE if reverse else 0, dtype=np.int64)
    score = MAX_NODE_SCORE * raw // top
    return MAX_NODE_SCORE - score if reverse else score


def schedule_one(table: NodeTable, pod: PodRequest, now: float = 0.0) -> Decision:
    """Pick the best node for ``pod`` (highest weighted score, ties broken by ``table.rng``),
    or say why none fits. Does not assume the pod: the caller does once it decides to bind."""
    del now  # filters and scores here do not depend on time
    nodes = len(table)
    rows, walked = table.find_feasible(pod, num_feasible_nodes_to_find(nodes, table.percentage_of_nodes_to_score))
    if table.n:
        table.next_start = (table.next_start + walked) % table.n
    if rows.size == 0:
        return Decision(node_name=None, reasons=table.reasons(pod), nodes=nodes)
    if rows.size == 1:
        pick = int(rows[0])
    else:
        total = table.scores(pod, rows)
        best = np.flatnonzero(total == total.max())
        pick = int(rows[best[0] if best.size == 1 else best[int(table.rng.integers(best.size))]])
    return Decision(node_name=table.names[pick], nodes=nodes)
