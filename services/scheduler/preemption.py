"""kube-scheduler's DefaultPreemption (its PostFilter plugin): where a pending pod that fits on no
node could run if pods of lower priority made room, and which pods those are.

- *Eligible*: a pod with ``preemptionPolicy: Never`` never preempts; nor does one whose nominated
  node still holds a lower-priority pod terminating because it was preempted (the victims of its
  last preemption have not gone yet), unless that node now fails a filter no removal can fix.
- *Potential nodes*: those the pod failed only for reasons removing pods can change (ports,
  resources, pod count, topology skew); a node that is not Ready, cordoned, tainted, of the wrong
  name or affinity, or without a spread constraint's topology key is not helped by preemption.
- *Victims on a node* (``select_victims``): take every pod of lower priority off the node; if the
  pod still does not fit, the node is no candidate. Otherwise put them back one at a time, most
  important first (higher priority, then the one running longest), those whose eviction would
  break a PodDisruptionBudget before the others, keeping each one the pod still fits beside;
  the ones that could not be put back are the victims.
- *Candidates*: potential nodes are tried from a random offset (the caller's) until at least
  one candidate breaks no budget and max(10% of potential nodes, 100) candidates are found.
- *The node* (``pick``): fewest budget violations, then the lowest highest victim priority, the
  smallest sum of priorities, the fewest victims, the latest start among the highest-priority
  victims; then the first found.

Fits are judged by the scheduler's own filters (``filters``, ``spread``) on the ``NodeTable``, with
whatever the caller has counted there: nominated pods of at least the pod's priority included,
as kube-scheduler runs its filters "with nominated pods". Pods are taken off the table and put
back exactly (``NodeTable.forget``/``restore``): the table ends as it began but for derived caches.
Pure: no I/O, no clock, no randomness (the offset is an argument).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import msgspec

from schemas.selector import Selector
from services.scheduler import filters, spread
from services.scheduler.plan import reasons_on
from services.scheduler.table import NodeTable
from services.scheduler.values import PodRequest

NO_VICTIMS = "No preemption victims found for incoming pod"
NOT_HELPFUL = "Preemption is not helpful for scheduling"
NOT_ELIGIBLE_NEVER = "not eligible due to preemptionPolicy=Never."
NOT_ELIGIBLE_TERMINATING = "not eligible due to a terminating pod on the nominated node."
MIN_CANDIDATE_NODES_PERCENTAGE = 10
MIN_CANDIDATE_NODES_ABSOLUTE = 100


class _Data(msgspec.Struct, kw_only=True, frozen=True):
    """Base of preemption's hashable value types."""


class Victim(_Data, frozen=True):
    """A pod counted on a node, as preemption sees it."""

    key: str                                   # its key in the NodeTable ("<namespace>.<name>")
    name: str
    namespace: str
    uid: str = ""
    priority: int = 0
    start: float = 0.0                         # status.startTime (seconds); the caller's now when unset
    labels: tuple[tuple[str, str], ...] = ()
    terminating: bool = False                  # deletionTimestamp set
    preempted: bool = False                    # terminating, with DisruptionTarget/PreemptionByScheduler


class Budget(_Data, frozen=True):
    """A PodDisruptionBudget as preemption reads it."""

    namespace: str
    selector: Selector                         # a nil or empty selector matches nothing here
    allowed: int                               # status.disruptionsAllowed
    disrupted: frozenset[str] = frozenset()    # status.disruptedPods: already let go by the api


class Preemptor(_Data, frozen=True):
    """The pending pod that fits nowhere."""

    request: PodRequest
    priority: int = 0
    policy: Literal["PreemptLowerPriority", "Never"] = "PreemptLowerPriority"
    nominated_node: str = ""                   # status.nominatedNodeName


class Candidate(_Data, frozen=True):
    node: str
    victims: tuple[Victim, ...]                # most important first
    pdb_violations: int = 0


class Outcome(_Data, frozen=True):
    """What preemption decided: a node and its victims, or why not (kube-scheduler's PostFilter
    message, without the "preemption: " prefix), and whether the pod's nomination is cleared."""

    candidate: Candidate | None = None
    message: str = ""
    clear_nomination: bool = False


def _importance(v: Victim) -> tuple[int, float]:
    """Sort key, most important first: higher priority, then the longest running."""
    return (-v.priority, v.start)


def split_by_budgets(victims: Sequence[Victim], budgets: Iterable[Budget]) -> tuple[list[Victim], list[Victim]]:
    """(pods whose eviction, in this order, breaks a budget; the others), each in input order.
    Every matching budget not already counting the pod as disrupted loses one allowed disruption."""
    budgets = list(budgets)
    allowed = [b.allowed for b in budgets]
    violating: list[Victim] = []
    fine: list[Victim] = []
    for v in victims:
        broken = False
        if v.labels:
            labels = dict(v.labels)
            for i, b in enumerate(budgets):
                if b.namespace != v.namespace or not b.selector.matches(labels) or v.name in b.disrupted:
                    continue
                allowed[i] -= 1
                if allowed[i] < 0:
                    broken = True
        (violating if broken else fine).append(v)
    return violating, fine


def select_victims(
    table: NodeTable, preemptor: Preemptor, node: str, pods: Sequence[Victim], budgets: Iterable[Budget] = ()
) -> Candidate | list[str]:
    """The fewest pods on ``node`` to remove for the preemptor to fit, chosen as kube-scheduler's
    SelectVictimsOnNode does (see the module docstring), or why the node is no candidate."""
    row = table.index.get(node)
    if row is None:
        return [NOT_HELPFUL]
    potential = sorted(
        (v for v in pods if v.priority < preemptor.priority and table.node_of(v.key) == node), key=_importance
    )
    if not potential:
        return [NO_VICTIMS]
    pod = preemptor.request
    taken = {}
    for v in potential:
        b = table.forget(v.key)
        if b is not None:
            taken[v.key] = b
    try:
        why = reasons_on(table, pod, row)
        if why:
            return why
        violating, fine = split_by_budgets(potential, budgets)
        victims: list[Victim] = []
        broken = 0
        for group, breaks in ((violating, 1), (fine, 0)):
            for v in group:
                b = taken.get(v.key)
                if b is None:
                    continue
                table.restore(v.key, b)
                if reasons_on(table, pod, row):
                    table.forget(v.key)
                    victims.append(v)
                    broken += breaks
                else:
                    del taken[v.key]
        if not victims:
            return []  # the pod fits as the node is: nothing to preempt here
        victims.sort(key=_importance)
        return Candidate(node=node, victims=tuple(victims), pdb_violations=broken)
    finally:
        for key, b in taken.items():
            table.restore(key, b)


def eligible(table: NodeTable, preemptor: Preemptor, pods_by_node: Mapping[str, Sequence[Victim]]) -> tuple[bool, str]:
    """kube-scheduler's PodEligibleToPreemptOthers: (may it preempt, why not)."""
    if preemptor.policy == "Never":
        return False, NOT_ELIGIBLE_NEVER
    node = preemptor.nominated_node
    if not node:
        return True, ""
    row = table.index.get(node)
    if row is None:
        return True, ""
    if not filters.passes_node_filters(table, preemptor.request)[row]:
        return True, ""  # the nominated node is out of reach now: look again
    if any(v.preempted and v.priority < preemptor.priority for v in pods_by_node.get(node, ())):
        return False, NOT_ELIGIBLE_TERMINATING
    return True, ""


def num_candidates(nodes: int) -> int:
    """kube-scheduler's calculateNumCandidates: 10% of the potential nodes, at least 100, at most all."""
    return min(max(nodes * MIN_CANDIDATE_NODES_PERCENTAGE // 100, MIN_CANDIDATE_NODES_ABSOLUTE), nodes)


def potential_nodes(table: NodeTable, pod: PodRequest) -> list[str]:
    """Nodes, in row order, where the pod failed only filters that removing pods may satisfy."""
    ok = filters.passes_node_filters(table, pod).copy()
    masks = spread.filter_masks(table, pod) if pod.spread else None
    if masks is not None:
        ok &= masks[0]
    names = table.names
    return [name for i in ok.nonzero()[0] if (name := names[int(i)]) is not None]


def find_candidates(
    table: NodeTable,
    preemptor: Preemptor,
    pods_by_node: Mapping[str, Sequence[Victim]],
    budgets: Sequence[Budget],
    offset: int,
) -> tuple[list[Candidate], Counter[str]]:
    """kube-scheduler's DryRunPreemption, one node after another from ``offset`` (wrapping) over
    the potential nodes: (candidates, those breaking no budget first; why each node tried and
    every node not tried is none, when no candidate was found)."""
    potential = potential_nodes(table, preemptor.request)
    reasons: Counter[str] = Counter()
    if not potential:
        reasons[NOT_HELPFUL] = len(table)
        return [], reasons
    if not any(v.priority < preemptor.priority for node in potential for v in pods_by_node.get(node, ())):
        reasons[NO_VICTIMS] = len(potential)  # what trying each node would find, without the walk
        if len(table) > len(potential):
            reasons[NOT_HELPFUL] = len(table) - len(potential)
        return [], reasons
    want = num_candidates(len(potential))
    clean: list[Candidate] = []
    broken: list[Candidate] = []
    for step in range(len(potential)):
        node = potential[(offset + step) % len(potential)]
        got = select_victims(table, preemptor, node, pods_by_node.get(node, ()), budgets)
        if isinstance(got, Candidate):
            (broken if got.pdb_violations else clean).append(got)
            if clean and len(clean) + len(broken) >= want:
                break
        else:
            reasons.update(got or [NO_VICTIMS])
    if len(table) > len(potential):
        reasons[NOT_HELPFUL] += len(table) - len(potential)
    return clean + broken, reasons


def pick(candidates: Sequence[Candidate]) -> Candidate:
    """kube-scheduler's pickOneNodeForPreemption over non-empty ``candidates`` (see the module docstring)."""

    def score(c: Candidate) -> tuple[int, int, int, int, float]:
        top = c.victims[0].priority
        earliest = min(v.start for v in c.victims if v.priority == top)
        # priorities shifted to be >= 0, as kube-scheduler sums them
        total = sum(v.priority + 2**31 for v in c.victims)
        return (-c.pdb_violations, -top, -total, -len(c.victims), earliest)

    best = candidates[0]
    best_score = score(best)
    for c in candidates[1:]:
        s = score(c)
        if s > best_score:
            best, best_score = c, s
    return best


def preempt(
    table: NodeTable,
    preemptor: Preemptor,
    pods_by_node: Mapping[str, Sequence[Victim]],
    budgets: Sequence[Budget] = (),
    offset: int = 0,
) -> Outcome:
    """kube-scheduler's Evaluator.Preempt for a pod that fits on no node: the node to nominate and
    the victims to evict there, or the PostFilter message saying why not."""
    ok, why = eligible(table, preemptor, pods_by_node)
    if not ok:
        return Outcome(message=why)
    candidates, reasons = find_candidates(table, preemptor, pods_by_node, budgets, offset)
    if not candidates:
        parts = sorted(f"{count} {reason}" for reason, count in reasons.items())
        return Outcome(message=f"0/{len(table)} nodes are available: {', '.join(parts)}.", clear_nomination=True)
    return Outcome(candidate=pick(candidates))
