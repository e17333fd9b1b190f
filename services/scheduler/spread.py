"""kube-scheduler's PodTopologySpread over a ``NodeTable``: the filter (DoNotSchedule) and the score
(ScheduleAnyway) of a pod's ``topologySpreadConstraints``.

A *domain* is one value of a constraint's ``topologyKey`` among the node labels (a zone, a node).
Its count is the number of pods of the pod's namespace matching the constraint's selector on its
*eligible* nodes: nodes carrying every topology key of the pod's constraints of that kind, that
pass the pod's nodeSelector and required node affinity (``nodeAffinityPolicy`` Honor, the
default) and carry no taint the pod does not tolerate (only with ``nodeTaintsPolicy`` Honor).
Pods counted are those in the table, bound or assumed.

- Filter: a node passes when it has every topology key and, for each constraint, its domain's
  count + (1 if the pod matches the selector itself) - the smallest count over eligible domains
  is at most ``maxSkew``; with fewer eligible domains than ``minDomains`` that smallest count is 0.
- Score: per node, the sum over constraints of count * log(domains among the scored nodes + 2)
  + maxSkew - 1, rounded; normalised so the least crowded scores 100 (nodes without every key: 0).

Only pods with constraints pay for any of this. Matching pods per node are counted by the table
the first time a (namespace, selector) is asked for, and kept up to date from then on. Pure: reads the table, writes only its derived caches.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from services.scheduler.filters import node_affinity, untainted
from services.scheduler.table import NodeTable
from services.scheduler.values import PodRequest, SpreadConstraint

MAX_NODE_SCORE = 100


def _codes(table: NodeTable, key: str, n: int) -> tuple[NDArray[np.int32], int]:
    """Per row the domain code of ``key`` (-1: no such label), and how many codes there are."""
    col = table.labels.get(key)
    if col is None:
        return np.full(n, -1, dtype=np.int32), 0
    return col.codes[:n], len(col.names)


def _eligible(table: NodeTable, pod: PodRequest, c: SpreadConstraint, base: NDArray[np.bool_]) -> NDArray[np.bool_]:
    n = table.n
    out = base
    if c.honor_affinity:
        out = out & node_affinity(table, pod, n)
    if c.honor_taints:
        out = out & untainted(table, pod)
    return out


def _domain_counts(
    codes: NDArray[np.int32], domains: int, eligible: NDArray[np.bool_], per_row: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """(matching pods per domain code over eligible rows, which codes have an eligible row)."""
    picked = codes[eligible]
    counts = np.bincount(picked, weights=per_row[eligible], minlength=domains).astype(np.int64)
    present: NDArray[np.bool_] = np.bincount(picked, minlength=domains) > 0
    return counts, present


def filter_masks(table: NodeTable, pod: PodRequest) -> tuple[NDArray[np.bool_], NDArray[np.bool_]] | None:
    """Per row (carries every DoNotSchedule topology key, keeps every DoNotSchedule skew), or
    None when the pod has no DoNotSchedule constraint."""
    hard = [c for c in pod.spread if c.hard]
    if not hard:
        return None
    n = table.n
    labelled = table.alive[:n].copy()
    for c in hard:
        labelled &= _codes(table, c.topology_key, n)[0] >= 0
    within = np.ones(n, dtype=bool)
    labels = dict(pod.labels)
    for c in hard:
        codes, domains = _codes(table, c.topology_key, n)
        if domains == 0:  # no node has the key: every row is out already (``labelled``)
            continue
        counts, present = _domain_counts(codes, domains, _eligible(table, pod, c, labelled), table.matching_per_row(pod.namespace, c.selector))
        found = int(present.sum())
        low = int(counts[present].min()) if found and found >= c.min_domains else 0
        mine = counts[np.maximum(codes, 0)]
        within &= (codes < 0) | (mine + int(c.selector.matches(labels)) - low <= c.max_skew)
    return labelled, within


def scores(table: NodeTable, pod: PodRequest, rows: NDArray[np.intp]) -> NDArray[np.int64] | None:
    """ScheduleAnyway score (0..100) of each of ``rows``, or None without such constraints."""
    soft = [c for c in pod.spread if not c.hard]
    if not soft:
        return None
    n = table.n
    labelled = table.alive[:n].copy()
    for c in soft:
        labelled &= _codes(table, c.topology_key, n)[0] >= 0
    scored = labelled[rows]
    raw = np.zeros(rows.size, dtype=np.float64)
    for c in soft:
        codes, domains = _codes(table, c.topology_key, n)
        if domains == 0:  # no node has the key: no row is scored on it
            continue
        counts, _ = _domain_counts(codes, domains, _eligible(table, pod, c, labelled), table.matching_per_row(pod.namespace, c.selector))
        mine = codes[rows]
        size = np.unique(mine[scored]).size
        raw += counts[np.maximum(mine, 0)] * np.log(size + 2) + (c.max_skew - 1)
    score = np.round(raw).astype(np.int64)
    top = int(score[scored].max()) if scored.any() else 0
    if top == 0:
        return np.full(rows.size, MAX_NODE_SCORE, dtype=np.int64)
    low = int(score[scored].min())
    out: NDArray[np.int64] = np.where(scored, MAX_NODE_SCORE * (top + low - score) // top, 0)
    return out
