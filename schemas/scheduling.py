"""scheduling.k8s.io/v1 PriorityClass, and Kubernetes' Priority admission of pods.

A PriorityClass maps a name to an integer priority; a pod that names one in
``spec.priorityClassName`` gets its ``value`` as ``spec.priority`` (and its
``preemptionPolicy``) when it is created; a pod that names none gets the value of the one class
marked ``globalDefault``, or 0. The scheduler takes pending pods in that order, higher first.
The two system classes exist in every cluster (the api makes them at start, as Kubernetes'
apiserver does); other names may not start with ``system-`` and values stay at or below
``HIGHEST_USER_DEFINABLE_PRIORITY``.
"""

from __future__ import annotations

from typing import Literal

from msgspec.structs import replace

from schemas.meta import Object, ObjectMeta
from schemas.pod import Pod

PreemptionPolicy = Literal["PreemptLowerPriority", "Never"]
DEFAULT_PREEMPTION_POLICY: PreemptionPolicy = "PreemptLowerPriority"

HIGHEST_USER_DEFINABLE_PRIORITY = 1_000_000_000
SYSTEM_PRIORITY_CLASS_PREFIX = "system-"
SYSTEM_CLUSTER_CRITICAL = "system-cluster-critical"
SYSTEM_NODE_CRITICAL = "system-node-critical"
SYSTEM_CRITICAL_PRIORITY = 2 * HIGHEST_USER_DEFINABLE_PRIORITY


class PriorityClass(Object, kw_only=True, frozen=True):
    """A name for a pod priority; cluster-scoped."""

    API_VERSION = "scheduling.k8s.io/v1"
    KIND = "PriorityClass"

    value: int  # the priority of pods naming this class; immutable
    globalDefault: bool = False  # at most one class: its value goes to pods that name no class
    preemptionPolicy: PreemptionPolicy = DEFAULT_PREEMPTION_POLICY  # immutable; preemption itself is not done
    description: str = ""


def _system_class(name: str, value: int, description: str) -> PriorityClass:
    return PriorityClass(metadata=ObjectMeta(name=name), value=value, description=description)


# Kubernetes' SystemPriorityClasses(), as its apiserver creates them at start.
SYSTEM_PRIORITY_CLASSES: tuple[PriorityClass, ...] = (
    _system_class(SYSTEM_NODE_CRITICAL, SYSTEM_CRITICAL_PRIORITY + 1000,
                  "Used for system critical pods that must not be moved from their current node."),
    _system_class(SYSTEM_CLUSTER_CRITICAL, SYSTEM_CRITICAL_PRIORITY,
                  "Used for system critical pods that must run in the cluster, but can be moved to another "
                  "node if necessary."),
)


def system_class_problem(pc: PriorityClass) -> str | None:
    """Why a class with the reserved prefix is not one of the system classes as they are
    (Kubernetes' IsKnownSystemPriorityClass), or None when it is one."""
    known = next((s for s in SYSTEM_PRIORITY_CLASSES if s.metadata.name == pc.metadata.name), None)
    if known is None:
        return f"{pc.metadata.name} is not a known system priority class"
    if known.value != pc.value:
        return f"value of {pc.metadata.name} PriorityClass must be {known.value}"
    if known.globalDefault != pc.globalDefault:
        return f"globalDefault of {pc.metadata.name} PriorityClass must be {str(known.globalDefault).lower()}"
    return None


def global_default(classes: list[PriorityClass]) -> PriorityClass | None:
    """The class marked globalDefault (the lowest value if, by a race, several are)."""
    marked = [c for c in classes if c.globalDefault and c.metadata.deletionTimestamp is None]
    return min(marked, key=lambda c: (c.value, c.metadata.name)) if marked else None


class PriorityRefused(ValueError):
    """A new pod Kubernetes' Priority admission refuses (403): ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def with_priority(pod: Pod, named: PriorityClass | None, default: PriorityClass | None) -> Pod:
    """Kubernetes' Priority admission of a new pod: ``named`` is the class its
    ``spec.priorityClassName`` names (None: it names one that does not exist), ``default`` the
    global default class (None: there is none). The pod gets that class's value as
    ``spec.priority`` and its preemption policy; one that names no class gets the default's name,
    value and policy, or priority 0. A pod that sets ``priority`` or ``preemptionPolicy`` other
    than what its class gives is refused, as one naming a missing class is."""
    spec = pod.spec
    if spec.priorityClassName:
        if named is None:
            raise PriorityRefused("spec.priorityClassName",
                                  f"no PriorityClass with name {spec.priorityClassName} was found")
        name, priority, policy = spec.priorityClassName, named.value, named.preemptionPolicy
    elif default is not None:
        name, priority, policy = default.metadata.name, default.value, default.preemptionPolicy
    else:
        name, priority, policy = "", 0, DEFAULT_PREEMPTION_POLICY
    if spec.priority is not None and spec.priority != priority:
        raise PriorityRefused("spec.priority", f"the integer value of priority ({spec.priority}) must not be provided "
                                               f"in pod spec; priority admission controller computed {priority} from "
                                               "the given PriorityClass name")
    if spec.preemptionPolicy is not None and spec.preemptionPolicy != policy:
        raise PriorityRefused("spec.preemptionPolicy",
                              f"the string value of PreemptionPolicy ({spec.preemptionPolicy}) must not be provided "
                              f"in pod spec; priority admission controller computed {policy} from the given "
                              "PriorityClass name")
    if (spec.priorityClassName, spec.priority, spec.preemptionPolicy) == (name, priority, policy):
        return pod
    return replace(pod, spec=replace(spec, priorityClassName=name, priority=priority, preemptionPolicy=policy))


def keep_priority(new: Pod, old: Pod) -> Pod:
    """An update of a pod keeps the priority admission gave it when the new spec leaves it unset
    (as Kubernetes' Priority admission does on update); changing it is refused by validation."""
    spec, was = new.spec, old.spec
    kept = replace(
        spec,
        priorityClassName=spec.priorityClassName or was.priorityClassName,
        priority=spec.priority if spec.priority is not None else was.priority,
        preemptionPolicy=spec.preemptionPolicy if spec.preemptionPolicy is not None else was.preemptionPolicy,
    )
    return new if kept == spec else replace(new, spec=kept)
