"""Taints and tolerations: the one implementation of Kubernetes' ``ToleratesTaint`` that the
scheduler, the node lifecycle controller, the DaemonSet controller and ``kyb drain`` share.

A toleration matches a taint when its effect is empty or equal, its key is empty or equal,
and either its operator is ``Exists`` or (``Equal``, the default) its value is equal. An empty
key with ``Exists`` tolerates every taint. ``tolerationSeconds`` only bounds how long a
``NoExecute`` taint is tolerated; it does not change whether it matches.

The functions take anything with the fields (``key``, ``operator``, ``value``, ``effect``), so
the scheduler's own hashable value types work as well as ``schemas.pod.Toleration``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar


# Read-only members, so frozen structs and fields narrowed to a ``Literal`` satisfy them.
class TolerationLike(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def operator(self) -> str: ...
    @property
    def value(self) -> str: ...
    @property
    def effect(self) -> str: ...


class TaintLike(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def value(self) -> str: ...
    @property
    def effect(self) -> str: ...


_Toleration = TypeVar("_Toleration", bound=TolerationLike)


def tolerates(toleration: TolerationLike, taint: TaintLike) -> bool:
    """Kubernetes' ``Toleration.ToleratesTaint``."""
    if toleration.effect and toleration.effect != taint.effect:
        return False
    if toleration.key and toleration.key != taint.key:
        return False
    if toleration.operator == "Exists":
        return True
    if toleration.operator in ("", "Equal"):
        return toleration.value == taint.value
    return False


def tolerated(tolerations: Iterable[TolerationLike], taint: TaintLike) -> bool:
    """Some toleration of ``tolerations`` matches ``taint``."""
    return any(tolerates(t, taint) for t in tolerations)


def matching(tolerations: Iterable[_Toleration], taint: TaintLike) -> list[_Toleration]:
    """The tolerations that match ``taint`` (for tolerationSeconds of NoExecute taints)."""
    return [t for t in tolerations if tolerates(t, taint)]
