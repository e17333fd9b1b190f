"""kube-scheduler's scores over the feasible rows of a ``NodeTable``, weighted like its default profile.

NodeResourcesLeastAllocated (1), NodeResourcesBalancedAllocation (1), spreading of one owner's
pods (2; for pods without topologySpreadConstraints), PodTopologySpread for ScheduleAnyway
constraints (2, ``spread``), preferred node affinity (2), TaintToleration for PreferNoSchedule
(3); 0-100 each.
Resource scores are cached per pod shape and refreshed on the rows changed since.

Pure: reads the table, writes only its derived caches.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from services.scheduler import spread
from services.scheduler.filters import term_mask, tolerated_columns
from services.scheduler.table import ABSENT, NodeTable
from services.scheduler.values import PodRequest

MAX_NODE_SCORE = 100
WEIGHTS = {"least": 1, "balanced": 1, "spread": 2, "topology": 2, "affinity": 2, "taint": 3}
_SCALAR_REFRESH = 32  # changed rows re-scored one by one in Python below this many (numpy call overhead)


def resource_scores(table: NodeTable, cpu: int, memory: int, rows: NDArray[np.int64] | slice) -> NDArray[np.int64]:
    """LeastAllocated + BalancedAllocation (weighted) of ``rows`` for a pod asking cpu/memory."""
    cap_cpu = table.alloc_cpu[rows]
    cap_mem = table.alloc_mem[rows]
    want_cpu = table.score_cpu[rows] + cpu
    want_mem = table.score_mem[rows] + memory
    total: NDArray[np.int64] = WEIGHTS["least"] * ((_least(want_cpu, cap_cpu) + _least(want_mem, cap_mem)) // 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        f_cpu = np.where(cap_cpu > 0, np.minimum(want_cpu / np.maximum(cap_cpu, 1), 1.0), 1.0)
        f_mem = np.where(cap_mem > 0, np.minimum(want_mem / np.maximum(cap_mem, 1), 1.0), 1.0)
    total += WEIGHTS["balanced"] * ((1.0 - np.abs(f_cpu - f_mem) / 2.0) * MAX_NODE_SCORE).astype(np.int64)
    return total


def resource_row_scores(table: NodeTable, pod: PodRequest) -> NDArray[np.int64]:
    """``resource_scores`` of every row, cached per pod shape and refreshed on changed rows."""
    shape = (pod.score_cpu, pod.score_memory)
    entry = table.resource_cache.get(shape)
    log = table.changed
    if entry is None or entry[0].size != table.n or entry[2] is not log:
        arr = resource_scores(table, *shape, slice(0, table.n))
        table.resource_cache[shape] = (arr, len(log), log)
        return arr
    arr, pos, _ = entry
    if pos < len(log):
        if len(log) - pos <= _SCALAR_REFRESH:
            for i in set(log[pos:]):
                arr[i] = _resource_score(table, *shape, i)
        else:
            rows = np.unique(np.array(log[pos:], dtype=np.int64))
            arr[rows] = resource_scores(table, *shape, rows)
        table.resource_cache[shape] = (arr, len(log), log)
    return arr


def _resource_score(table: NodeTable, cpu: int, memory: int, i: int) -> int:
    """``resource_scores`` of one row, in plain Python (the same integer and float steps)."""
    cap_cpu, cap_mem = int(table.alloc_cpu[i]), int(table.alloc_mem[i])
    want_cpu, want_mem = int(table.score_cpu[i]) + cpu, int(table.score_mem[i]) + memory
    least = WEIGHTS["least"] * ((_least_one(want_cpu, cap_cpu) + _least_one(want_mem, cap_mem)) // 2)
    f_cpu = min(want_cpu / max(cap_cpu, 1), 1.0) if cap_cpu > 0 else 1.0
    f_mem = min(want_mem / max(cap_mem, 1), 1.0) if cap_mem > 0 else 1.0
    return least + WEIGHTS["balanced"] * int((1.0 - abs(f_cpu - f_mem) / 2.0) * MAX_NODE_SCORE)


def scores(table: NodeTable, pod: PodRequest, rows: NDArray[np.intp]) -> NDArray[np.int64]:
    """Weighted total score of each of ``rows`` (feasible node rows), as integers."""
    total = resource_row_scores(table, pod)[rows]
    const = 0  # scores equal on every row are added once at the end
    # a pod's own topologySpreadConstraints replace the default spreading of its owner's pods
    counts = table.owners.get(pod.owner_uid) if pod.owner_uid and not pod.spread else None
    c = counts[rows] if counts is not None else None
    top = int(c.max()) if c is not None and c.size else 0
    if c is not None and top > 0:
        # (top - c) * 100 // top: exactly what kube-scheduler's float division truncates to
        np.subtract(top, c, out=c)
        c *= MAX_NODE_SCORE
        c //= top
        c *= WEIGHTS["spread"]
        total += c
    else:
        const += WEIGHTS["spread"] * MAX_NODE_SCORE
    if pod.spread:
        topology = spread.scores(table, pod, rows)
        if topology is not None:
            total += WEIGHTS["topology"] * topology
    if pod.preferred:
        raw = np.zeros(rows.size, dtype=np.int64)
        n = table.n
        for p in pod.preferred:
            raw += p.weight * term_mask(table, p.term, n)[rows]
        total += WEIGHTS["affinity"] * _normalize(raw, reverse=False)
    if table.taint_list:
        tolerated = tolerated_columns(table, pod)
        soft = np.array([t.effect == "PreferNoSchedule" for t in table.taint_list], dtype=bool)
        cols = np.flatnonzero(soft & ~tolerated)
        if cols.size:
            raw = (table.taint_pos[rows][:, cols] != ABSENT).sum(axis=1).astype(np.int64)
            total += WEIGHTS["taint"] * _normalize(raw, reverse=True)
        else:
            const += WEIGHTS["taint"] * MAX_NODE_SCORE
    else:
        const += WEIGHTS["taint"] * MAX_NODE_SCORE
    if const:
        total += const
    return total


def _least(requested: NDArray[np.int64], capacity: NDArray[np.int64]) -> NDArray[np.int64]:
    """NodeResourcesLeastAllocated for one resource: (capacity - requested) * 100 / capacity."""
    safe = np.maximum(capacity, 1)
    score = (capacity - requested) * MAX_NODE_SCORE // safe
    return np.where((capacity > 0) & (requested <= capacity), score, 0)


def _least_one(requested: int, capacity: int) -> int:
    """``_least`` of one value."""
    return (capacity - requested) * MAX_NODE_SCORE // capacity if capacity > 0 and requested <= capacity else 0


def _normalize(raw: NDArray[np.int64], *, reverse: bool) -> NDArray[np.int64]:
    """kube-scheduler's DefaultNormalizeScore."""
    top = int(raw.max()) if raw.size else 0
    if top == 0:
        return np.full(raw.size, MAX_NODE_SCORE if reverse else 0, dtype=np.int64)
    score = MAX_NODE_SCORE * raw // top
    return MAX_NODE_SCORE - score if reverse else score
