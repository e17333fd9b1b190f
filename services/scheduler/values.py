"""The scheduler's value types: what it knows of a pod and of a node, and what it decides.

Small, frozen and hashable (filters are cached per pod shape). ``podinfo`` builds them from API
objects; ``table``, ``filters``, ``scores`` and ``plan`` work on them. Pure.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

import msgspec

from schemas import tolerations
from schemas.selector import Selector

# kube-scheduler scores pods without requests as if they asked for this much (non-zero defaults).
DEFAULT_CPU_MILLIS = 100
DEFAULT_MEMORY_BYTES = 200 * 1024 * 1024

Effect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class _Data(msgspec.Struct, kw_only=True, frozen=True):
    """Base of the scheduler's own hashable value types."""


class Taint(_Data, frozen=True):
    key: str
    value: str = ""
    effect: Effect = "NoSchedule"


class Toleration(_Data, frozen=True):
    key: str = ""
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str = ""
    effect: str = ""  # "" tolerates every effect

    def tolerates(self, taint: Taint) -> bool:
        """Kubernetes' ToleratesTaint (schemas.tolerations)."""
        return tolerations.tolerates(self, taint)


class Requirement(_Data, frozen=True):
    """One matchExpressions/matchFields entry of a node selector term."""

    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: tuple[str, ...] = ()


class Term(_Data, frozen=True):
    """A nodeSelectorTerm: all expressions and fields must match; an empty term matches nothing."""

    match_expressions: tuple[Requirement, ...] = ()
    match_fields: tuple[Requirement, ...] = ()


class PreferredTerm(_Data, frozen=True):
    weight: int
    term: Term


class HostPort(_Data, frozen=True):
    port: int
    protocol: str = "TCP"
    host_ip: str = "0.0.0.0"


class SpreadConstraint(_Data, frozen=True):
    """One topologySpreadConstraint, with matchLabelKeys already folded into ``selector``."""

    max_skew: int
    topology_key: str
    hard: bool                                 # DoNotSchedule (a filter); else ScheduleAnyway (a score)
    selector: Selector                         # which pods of the namespace count
    min_domains: int = 1
    honor_affinity: bool = True                # nodeAffinityPolicy Honor
    honor_taints: bool = False                 # nodeTaintsPolicy Honor


class PodRequest(_Data, frozen=True):
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
    namespace: str = ""
    labels: tuple[tuple[str, str], ...] = ()   # counted by other pods' spread constraints
    spread: tuple[SpreadConstraint, ...] = ()  # topologySpreadConstraints

    @property
    def score_cpu(self) -> int:
        return self.cpu or DEFAULT_CPU_MILLIS

    @property
    def score_memory(self) -> int:
        return self.memory or DEFAULT_MEMORY_BYTES

    def tolerates(self, taint: Taint) -> bool:
        return tolerations.tolerated(self.tolerations, taint)


class NodeInfo(_Data, frozen=True):
    """What the scheduler needs to know about one node."""

    name: str
    cpu: int                                   # allocatable millicores
    memory: int                                # allocatable bytes
    pods: int = 110                            # allocatable pod count
    labels: tuple[tuple[str, str], ...] = ()
    taints: tuple[Taint, ...] = ()
    ready: bool = True
    unschedulable: bool = False


class Decision(_Data, frozen=True):
    node_name: str | None
    reasons: Counter[str] = msgspec.field(default_factory=Counter)  # filter message -> nodes (on failure)
    nodes: int = 0                                            # nodes considered
    next_start: int = 0                                       # row the next pod's walk starts at

    @property
    def message(self) -> str:
        """kube-scheduler's FitError message: "0/3 nodes are available: 1 ..., 2 Insufficient cpu."."""
        if self.node_name is not None:
            return ""
        if self.nodes == 0:
            return "no nodes available to schedule pods"
        parts = sorted(f"{count} {reason}" for reason, count in self.reasons.items())
        return f"0/{self.nodes} nodes are available: {', '.join(parts)}."
