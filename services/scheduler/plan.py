"""Where a pod should run: kube-scheduler's decision for one pod, over a ``NodeTable``.

The pieces have a module each: the value types (``values``), the node table (``table``: every
node as one row of numpy arrays), the filters (``filters``) and the scores (``scores``). This
module walks the table for feasible nodes, scores them and picks the best.

Like kube-scheduler, a pod is scored on only part of a large cluster: nodes are walked from
``table.next_start`` (wrapping around) until ``num_feasible_nodes_to_find`` feasible ones are
found (all of them below 100 nodes; otherwise ``percentageOfNodesToScore``, adaptive by default:
50% minus 1% per 125 nodes, at least 5% and at least 100 nodes), and the best of those wins.
Topology spread (``spread``) is one more filter and score, evaluated only for pods that have
constraints. The decision says where the next pod's walk starts; spreading over successive pods
comes from the caller moving the start there. Ties are broken with the random generator passed in.

Pure: no I/O, no clock (``now`` is an argument), no randomness but the generator passed in;
``schedule_one`` changes nothing in the table but its derived caches.
"""

from __future__ import annotations

import numpy as np

from services.scheduler import filters, scores, spread
from services.scheduler.filters import (
    NOT_READY_TAINT,
    REASON_AFFINITY,
    REASON_CPU,
    REASON_MEMORY,
    REASON_NODE_NAME,
    REASON_NOT_READY,
    REASON_PORTS,
    REASON_SPREAD,
    REASON_SPREAD_LABEL,
    REASON_TOO_MANY_PODS,
    REASON_UNSCHEDULABLE,
    UNSCHEDULABLE_TAINT,
)
from services.scheduler.scores import MAX_NODE_SCORE, WEIGHTS
from services.scheduler.table import NodeTable
from services.scheduler.values import (
    DEFAULT_CPU_MILLIS,
    DEFAULT_MEMORY_BYTES,
    Decision,
    HostPort,
    NodeInfo,
    PodRequest,
    PreferredTerm,
    Requirement,
    SpreadConstraint,
    Taint,
    Term,
    Toleration,
)

__all__ = [
    "DEFAULT_CPU_MILLIS", "DEFAULT_MEMORY_BYTES", "MAX_NODE_SCORE", "NOT_READY_TAINT", "REASON_AFFINITY", "REASON_CPU",
    "REASON_MEMORY", "REASON_NODE_NAME", "REASON_NOT_READY", "REASON_PORTS", "REASON_SPREAD",
    "REASON_SPREAD_LABEL", "REASON_TOO_MANY_PODS", "REASON_UNSCHEDULABLE", "UNSCHEDULABLE_TAINT", "WEIGHTS",
    "Decision", "HostPort", "NodeInfo", "NodeTable", "PodRequest", "PreferredTerm", "Requirement",
    "SpreadConstraint", "Taint", "Term", "Toleration", "fits_on", "num_feasible_nodes_to_find", "reasons_on",
    "schedule_one",
]

MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5


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


def schedule_one(table: NodeTable, pod: PodRequest, rng: np.random.Generator, now: float = 0.0) -> Decision:
    """Pick the best node for ``pod`` (highest weighted score, ties broken by ``rng``), or say
    why none fits. The walk starts at ``table.next_start``; the decision's ``next_start`` is
    where the next pod's walk should. Neither assumes the pod nor moves the start: the caller
    does both once it decides to bind."""
    del now  # filters and scores here do not depend on time
    nodes = len(table)
    start = table.next_start
    masks = spread.filter_masks(table, pod) if pod.spread else None
    rows, walked = filters.find_feasible(
        table, pod, num_feasible_nodes_to_find(nodes, table.percentage_of_nodes_to_score), start,
        None if masks is None else masks[0] & masks[1],
    )
    next_start = (start + walked) % table.n if table.n else start
    if rows.size == 0:
        return Decision(node_name=None, reasons=filters.reasons(table, pod, masks), nodes=nodes, next_start=next_start)
    if rows.size == 1:
        pick = int(rows[0])
    else:
        total = scores.scores(table, pod, rows)
        best = np.flatnonzero(total == total.max())
        pick = int(rows[best[0] if best.size == 1 else best[int(rng.integers(best.size))]])
    return Decision(node_name=table.names[pick], nodes=nodes, next_start=next_start)


def reasons_on(table: NodeTable, pod: PodRequest, row: int) -> list[str]:
    """Why the pod does not fit on ``row`` now, every filter included ([] when it fits)."""
    out = filters.row_reasons(table, pod, row)
    if out or not pod.spread:
        return out
    masks = spread.filter_masks(table, pod)
    if masks is None:
        return []
    labelled, within = masks
    if not labelled[row]:
        return [REASON_SPREAD_LABEL]
    return [] if within[row] else [REASON_SPREAD]


def fits_on(table: NodeTable, pod: PodRequest, node: str) -> bool:
    """Whether the pod passes every filter on ``node`` (kube-scheduler tries a pod's nominated
    node alone first, and binds there when it fits)."""
    row = table.index.get(node)
    return row is not None and not reasons_on(table, pod, row)
