"""Kubernetes' ControllerRefManager: which objects a controller claims, which orphans it
adopts and which it releases. One set of rules for the ReplicaSet, Deployment (and later
StatefulSet and Job) controllers. Pure: the async shell writes what ``claim`` decides, each
change re-checked on a fresh read (:func:`adopted`, :func:`released` inside ``store.mutate``),
after :func:`can_adopt` re-read the controller itself.

The rules (``ClaimObject``):
- an object whose controller is someone else is never touched;
- one the controller controls stays its own while its labels match the selector, and is
  released once they do not, unless the controller is being deleted;
- an orphan is adopted when its labels match, it lives in the controller's namespace, and
  neither it nor the controller is being deleted;
- callers narrow further with ``adoptable`` (the ReplicaSet controller adopts only active
  pods) and ``release_terminating`` (it leaves terminating pods' references alone).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from schemas.helpers import controller_of, with_controller, without_owner
from schemas.meta import Object, OwnerReference
from schemas.selector import Selector

T = TypeVar("T", bound=Object)


@dataclass(frozen=True, slots=True)
class Controller:
    """What claiming needs to know of the controlling object."""

    uid: str
    namespace: str
    selector: Selector
    deleting: bool
    reference: OwnerReference  # the controller reference adoption writes

    @classmethod
    def of(cls, obj: Object, selector: Selector, reference: OwnerReference) -> Controller:
        return cls(uid=obj.metadata.uid or "", namespace=obj.metadata.namespace or "default", selector=selector,
                   deleting=obj.metadata.deletionTimestamp is not None, reference=reference)


@dataclass(frozen=True, slots=True)
class Claims(Generic[T]):
    owned: list[T] = field(default_factory=list)    # controlled and selected, adopted ones included
    adopt: list[T] = field(default_factory=list)    # orphans to adopt, the reference already added
    release: list[T] = field(default_factory=list)  # controlled ones to release, the reference removed
    taken: list[str] = field(default_factory=list)  # names of objects others hold (or this one lets go)


def _in_namespace(obj: Object, c: Controller) -> bool:
    return (obj.metadata.namespace or "default") == c.namespace


def adopted(obj: T, c: Controller, adoptable: Callable[[T], bool] | None = None) -> T | None:
    """``obj`` with ``c`` as its controller, or None when it may not be adopted (any more)."""
    if c.deleting or obj.metadata.deletionTimestamp is not None or controller_of(obj) is not None:
        return None
    if not _in_namespace(obj, c) or not c.selector.matches(obj.metadata.labels):
        return None
    if adoptable is not None and not adoptable(obj):
        return None
    return with_controller(obj, c.reference)


def released(obj: T, c: Controller, *, release_terminating: bool = True) -> T | None:
    """``obj`` without its reference to ``c``, or None when there is nothing to release: ``c``
    does not control it, still selects it, or is being deleted."""
    ref = controller_of(obj)
    if ref is None or ref.uid != c.uid or c.deleting or c.selector.matches(obj.metadata.labels):
        return None
    if not release_terminating and obj.metadata.deletionTimestamp is not None:
        return None
    return without_owner(obj, c.uid)


def claim(c: Controller, objects: Iterable[T], *, adoptable: Callable[[T], bool] | None = None,
          release_terminating: bool = True) -> Claims[T]:
    """Sort ``objects`` (of the controller's namespace or any) by the rules of the module docstring."""
    out: Claims[T] = Claims()
    for obj in objects:
        if not _in_namespace(obj, c):
            continue
        ref = controller_of(obj)
        if ref is not None and ref.uid == c.uid:
            if c.selector.matches(obj.metadata.labels):
                out.owned.append(obj)
                continue
            if (free := released(obj, c, release_terminating=release_terminating)) is not None:
                out.release.append(free)
        elif ref is None and (mine := adopted(obj, c, adoptable)) is not None:
            out.adopt.append(mine)
            out.owned.append(mine)
            continue
        out.taken.append(obj.metadata.name)
    return out


def may_adopt(fresh: Object | None, c: Controller) -> str | None:
    """Kubernetes' canAdopt on a fresh read of the controller: None when adopting is still
    right, else why not (gone, replaced by another object of the name, being deleted)."""
    if fresh is None:
        return "is gone"
    if (fresh.metadata.uid or "") != c.uid:
        return "was replaced by another object of the same name"
    if fresh.metadata.deletionTimestamp is not None:
        return "is being deleted"
    return None
