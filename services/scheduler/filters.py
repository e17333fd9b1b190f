"""kube-scheduler's filters over every row of a ``NodeTable``: which nodes a pod fits, and why not.

In kube-scheduler's order and with its messages: node Ready, NodeUnschedulable, NodeName,
TaintToleration (NoSchedule/NoExecute), NodeAffinity (nodeSelector and required node affinity),
NodePorts, NodeResourcesFit. Filters that depend only on nodes are cached per pod shape until a
node changes; the whole result (``fits``) is cached per pod shape and refreshed on the rows
changed since, so a pod costs a walk over a cached mask instead of the filters over every row.

Pure: reads the table, writes only its derived caches.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from numpy.typing import NDArray

from services.scheduler.table import ABSENT, NodeTable
from services.scheduler.values import PodRequest, Requirement, Taint, Term

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
REASON_SPREAD = "node(s) didn't match pod topology spread constraints"
REASON_SPREAD_LABEL = "node(s) didn't match pod topology spread constraints (missing required label)"

_HARD_EFFECTS = ("NoSchedule", "NoExecute")
_SCALAR_REFRESH = 32  # changed rows re-checked one by one in Python below this many (numpy call overhead)
_FIT_CACHE_SHAPES = 256  # pod shapes kept; past this the cache starts over


def term_mask(table: NodeTable, term: Term, n: int) -> NDArray[np.bool_]:
    if not term.match_expressions and not term.match_fields:
        return np.zeros(n, dtype=bool)
    mask = np.ones(n, dtype=bool)
    for r in term.match_expressions:
        mask &= _requirement_mask(table, r, n)
    for r in term.match_fields:
        mask &= _field_mask(table, r, n)
    return mask


def _requirement_mask(table: NodeTable, r: Requirement, n: int) -> NDArray[np.bool_]:
    col = table.labels.get(r.key)
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


def _field_mask(table: NodeTable, r: Requirement, n: int) -> NDArray[np.bool_]:
    if r.key != "metadata.name" or r.operator not in ("In", "NotIn"):
        return np.zeros(n, dtype=bool)
    inside = np.zeros(n, dtype=bool)
    for v in r.values:
        i = table.index.get(v)
        if i is not None:
            inside[i] = True
    return inside if r.operator == "In" else ~inside


def node_affinity(table: NodeTable, pod: PodRequest, n: int) -> NDArray[np.bool_]:
    """Per node row: does it match the pod's nodeSelector and required node affinity."""
    affinity = np.ones(n, dtype=bool)
    for key, value in pod.node_selector:
        col = table.labels.get(key)
        c = col.values.get(value) if col is not None else None
        affinity &= (col.codes[:n] == c) if col is not None and c is not None else False
    if pod.required is not None:
        any_term = np.zeros(n, dtype=bool)
        for term in pod.required:
            any_term |= term_mask(table, term, n)
        affinity &= any_term
    return affinity


def untainted(table: NodeTable, pod: PodRequest) -> NDArray[np.bool_]:
    """Per node row: no NoSchedule/NoExecute taint the pod does not tolerate."""
    _, first_taint = _static(table, pod)
    ok: NDArray[np.bool_] = first_taint == -1
    return ok


def tolerated_columns(table: NodeTable, pod: PodRequest) -> NDArray[np.bool_]:
    return np.array([pod.tolerates(t) for t in table.taint_list], dtype=bool)


def _static(table: NodeTable, pod: PodRequest) -> tuple[NDArray[np.int8], NDArray[np.int64]]:
    """Filters that depend only on nodes, not on other pods: (first failing filter code per
    node, 0 = passes; first untolerated hard taint column per node). Cached per pod shape."""
    sig = (pod.node_name, pod.node_selector, pod.required, pod.tolerations)
    hit = table.static_cache.get(sig)
    if hit is not None:
        return hit
    n = table.n
    code = np.zeros(n, dtype=np.int8)
    code[~table.alive[:n]] = -1

    def fail(mask: NDArray[np.bool_], c: int) -> None:
        code[(code == 0) & mask] = c

    if not pod.tolerates(Taint(key=NOT_READY_TAINT, effect="NoSchedule")):
        fail(~table.ready[:n], 1)
    if not pod.tolerates(Taint(key=UNSCHEDULABLE_TAINT, effect="NoSchedule")):
        fail(table.unschedulable[:n], 2)
    if pod.node_name:
        wanted = np.ones(n, dtype=bool)
        i = table.index.get(pod.node_name)
        if i is not None:
            wanted[i] = False
        fail(wanted, 3)
    first_taint = np.full(n, -1, dtype=np.int64)
    if table.taint_list:
        tolerated = tolerated_columns(table, pod)
        hard = np.array([t.effect in _HARD_EFFECTS for t in table.taint_list], dtype=bool)
        cols = np.flatnonzero(hard & ~tolerated)
        if cols.size:
            pos = table.taint_pos[:n][:, cols]
            best = pos.argmin(axis=1)
            has = pos[np.arange(n), best] != ABSENT
            first_taint[has] = cols[best[has]]
            fail(has, 4)
    fail(~node_affinity(table, pod, n), 5)
    out = (code, first_taint)
    table.static_cache[sig] = out
    return out


def passes_node_filters(table: NodeTable, pod: PodRequest) -> NDArray[np.bool_]:
    """Per row: the filters that only removing the node's pods cannot change pass (Ready,
    NodeUnschedulable, NodeName, TaintToleration, NodeAffinity). Do not modify."""
    code, _ = _static(table, pod)
    ok: NDArray[np.bool_] = code == 0
    return ok


def row_reasons(table: NodeTable, pod: PodRequest, i: int) -> list[str]:
    """Why row ``i`` rejects the pod, as kube-scheduler's first failing filter says it (every
    short resource of NodeResourcesFit); [] when the pod passes. Topology spread is ``spread``'s."""
    code, first_taint = _static(table, pod)
    c = int(code[i])
    if c == 4:
        t = table.taint_list[int(first_taint[i])]
        return [f"node(s) had untolerated taint {{{t.key}: {t.value}}}"]
    if c:
        return [{1: REASON_NOT_READY, 2: REASON_UNSCHEDULABLE, 3: REASON_NODE_NAME, 5: REASON_AFFINITY}.get(c, "node(s) not found")]
    ports = _port_conflicts(table, pod, i, i + 1)
    if ports is not None and ports[0]:
        return [REASON_PORTS]
    out = []
    if table.req_pods[i] >= table.alloc_pods[i]:
        out.append(REASON_TOO_MANY_PODS)
    if pod.cpu > 0 and table.alloc_cpu[i] - table.req_cpu[i] < pod.cpu:
        out.append(REASON_CPU)
    if pod.memory > 0 and table.alloc_mem[i] - table.req_mem[i] < pod.memory:
        out.append(REASON_MEMORY)
    return out


def _port_conflicts(table: NodeTable, pod: PodRequest, lo: int, hi: int) -> NDArray[np.bool_] | None:
    conflict = None
    for hp in pod.host_ports:
        by_ip = table.ports.get((hp.protocol, hp.port))
        if not by_ip:
            continue
        for ip, counts in by_ip.items():
            if hp.host_ip == "0.0.0.0" or ip == "0.0.0.0" or ip == hp.host_ip:
                c = counts[lo:hi] > 0
                conflict = c if conflict is None else (conflict | c)
    return conflict


def feasible(table: NodeTable, pod: PodRequest) -> NDArray[np.bool_]:
    """Per node row: does the pod pass every filter."""
    return _feasible_range(table, pod, 0, table.n)


def _feasible_range(table: NodeTable, pod: PodRequest, lo: int, hi: int) -> NDArray[np.bool_]:
    code, _ = _static(table, pod)
    ok: NDArray[np.bool_] = code[lo:hi] == 0
    ports = _port_conflicts(table, pod, lo, hi)
    if ports is not None:
        ok &= ~ports
    ok &= table.req_pods[lo:hi] < table.alloc_pods[lo:hi]
    if pod.cpu > 0:
        ok &= table.alloc_cpu[lo:hi] - table.req_cpu[lo:hi] >= pod.cpu
    if pod.memory > 0:
        ok &= table.alloc_mem[lo:hi] - table.req_mem[lo:hi] >= pod.memory
    return ok


def fits(table: NodeTable, pod: PodRequest) -> NDArray[np.bool_]:
    """``feasible`` of every row, cached per pod shape and refreshed on the rows changed since
    (binding a pod changes one row; a changed node drops every cached shape). Do not modify."""
    sig = (pod.node_name, pod.node_selector, pod.required, pod.tolerations, pod.host_ports, pod.cpu, pod.memory)
    entry = table.fit_cache.get(sig)
    log = table.changed
    if entry is None or entry[0].size != table.n or entry[2] is not log:
        if len(table.fit_cache) >= _FIT_CACHE_SHAPES:
            table.fit_cache.clear()
        ok = feasible(table, pod)
        table.fit_cache[sig] = (ok, len(log), log)
        return ok
    ok, pos, _ = entry
    if pos < len(log):
        if len(log) - pos <= _SCALAR_REFRESH:
            code, _ = _static(table, pod)
            for i in set(log[pos:]):
                ok[i] = _fits_row(table, pod, code, i)
        else:
            rows = np.unique(np.array(log[pos:], dtype=np.int64))
            ok[rows] = _feasible_rows(table, pod, rows)
        table.fit_cache[sig] = (ok, len(log), log)
    return ok


def _fits_row(table: NodeTable, pod: PodRequest, code: NDArray[np.int8], i: int) -> bool:
    """``feasible`` of one row, in plain Python (numpy calls cost more than they save here)."""
    if code[i] != 0 or table.req_pods[i] >= table.alloc_pods[i]:
        return False
    if pod.cpu > 0 and table.alloc_cpu[i] - table.req_cpu[i] < pod.cpu:
        return False
    if pod.memory > 0 and table.alloc_mem[i] - table.req_mem[i] < pod.memory:
        return False
    ports = _port_conflicts(table, pod, i, i + 1)
    return ports is None or not ports[0]


def _feasible_rows(table: NodeTable, pod: PodRequest, rows: NDArray[np.int64]) -> NDArray[np.bool_]:
    """``feasible`` of the given rows."""
    code, _ = _static(table, pod)
    ok: NDArray[np.bool_] = code[rows] == 0
    ports = _port_conflicts(table, pod, 0, table.n)
    if ports is not None:
        ok &= ~ports[rows]
    ok &= table.req_pods[rows] < table.alloc_pods[rows]
    if pod.cpu > 0:
        ok &= table.alloc_cpu[rows] - table.req_cpu[rows] >= pod.cpu
    if pod.memory > 0:
        ok &= table.alloc_mem[rows] - table.req_mem[rows] >= pod.memory
    return ok


def find_feasible(
    table: NodeTable, pod: PodRequest, want: int, start: int = 0, also: NDArray[np.bool_] | None = None
) -> tuple[NDArray[np.intp], int]:
    """kube-scheduler's findNodesThatPassFilters: walk rows from ``start`` (wrapping) until
    ``want`` feasible nodes are found. Returns (their rows in walk order, rows walked).
    ``also``: a further per-row filter (topology spread), ANDed with the cached ones."""
    n = table.n
    if want >= len(table) or n == 0:
        every = feasible(table, pod)
        return np.flatnonzero(every if also is None else every & also), n
    ok = fits(table, pod) if also is None else fits(table, pod) & also
    start %= n
    rows = np.flatnonzero(ok[start:n])
    if rows.size >= want:
        rows = rows[:want] + start
        return rows, int(rows[-1]) - start + 1
    wrapped = np.flatnonzero(ok[:start])
    if rows.size + wrapped.size >= want:
        wrapped = wrapped[: want - rows.size]
        return np.concatenate((rows + start, wrapped)), n - start + int(wrapped[-1]) + 1
    return np.concatenate((rows + start, wrapped)), n


def reasons(table: NodeTable, pod: PodRequest, spread: tuple[NDArray[np.bool_], NDArray[np.bool_]] | None = None
            ) -> Counter[str]:
    """Why each node rejects the pod, counted per message as kube-scheduler reports it.
    ``spread``: per row (has every topology key, within every maxSkew), after the filters above."""
    n = table.n
    code, first_taint = _static(table, pod)
    out: Counter[str] = Counter()
    fixed = {1: REASON_NOT_READY, 2: REASON_UNSCHEDULABLE, 3: REASON_NODE_NAME, 5: REASON_AFFINITY}
    for c, reason in fixed.items():
        k = int((code == c).sum())
        if k:
            out[reason] = k
    for col, k in zip(*np.unique(first_taint[code == 4], return_counts=True), strict=True):
        t = table.taint_list[int(col)]
        out[f"node(s) had untolerated taint {{{t.key}: {t.value}}}"] += int(k)
    rest = code == 0
    ports = _port_conflicts(table, pod, 0, n)
    if ports is not None:
        k = int((rest & ports).sum())
        if k:
            out[REASON_PORTS] = k
        rest &= ~ports
    checks = [
        (REASON_TOO_MANY_PODS, table.req_pods[:n] >= table.alloc_pods[:n]),
        (REASON_CPU, (table.alloc_cpu[:n] - table.req_cpu[:n] < pod.cpu) if pod.cpu > 0 else None),
        (REASON_MEMORY, (table.alloc_mem[:n] - table.req_mem[:n] < pod.memory) if pod.memory > 0 else None),
    ]
    for reason, short in checks:
        if short is not None:
            k = int((rest & short).sum())
            if k:
                out[reason] = k
    if spread is not None:
        for _, short in checks:
            if short is not None:
                rest &= ~short
        labelled, within = spread
        for reason, bad in ((REASON_SPREAD_LABEL, ~labelled), (REASON_SPREAD, ~within)):
            k = int((rest & bad).sum())
            if k:
                out[reason] = k
            rest &= ~bad
    return out
