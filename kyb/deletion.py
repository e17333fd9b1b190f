"""How a delete goes, Kubernetes style, decided from the object as read (pure; the store
writes the outcome at the revision read):

- an object with finalizers (its own, or ones the delete adds: ``foregroundDeletion``,
  ``orphan``) is only marked with ``deletionTimestamp`` and goes with its last finalizer;
- a pod bound to a node and not finished is marked too, with its grace period
  (``deletionGracePeriodSeconds``: the request's, else the pod's
  ``terminationGracePeriodSeconds``, else 30), and its kubelet removes it once its containers
  are gone; grace 0 removes it at once, and a forced delete of a pod that only finalizers hold
  shortens its grace to 0;
- anything else is removed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from schemas.meta import Object

DEFAULT_POD_GRACE_SECONDS = 30


@dataclass(frozen=True, slots=True)
class Outcome:
    """``marked`` to write (None: remove the object); ``unchanged`` when it is marked already."""

    marked: Object | None
    unchanged: bool = False


def is_graceful_pod(kind: str, obj: Object, grace: int | None) -> bool:
    """A pod bound to a node is removed by its kubelet once its containers are gone."""
    if kind != "Pod" or grace == 0:
        return False
    spec = getattr(obj, "spec", None)
    if not getattr(spec, "nodeName", None):
        return False
    phase = getattr(getattr(obj, "status", None), "phase", None)
    return phase not in ("Succeeded", "Failed") or bool(obj.metadata.deletionTimestamp)


def held_for_graceful_removal(kind: str, obj: Object) -> bool:
    """A terminating pod on a node stays until its kubelet deletes it with grace 0."""
    return kind == "Pod" and bool(getattr(getattr(obj, "spec", None), "nodeName", None)) and (
        obj.metadata.deletionGracePeriodSeconds or 0
    ) > 0


def decide(kind: str, current: Object, grace_period_seconds: int | None, add_finalizers: Iterable[str],
           now: str) -> Outcome:
    """What deleting ``current`` does (see the module docstring); ``now`` stamps a new mark."""
    meta = current.metadata
    finalizers = list(meta.finalizers)
    for f in add_finalizers:
        if f not in finalizers:
            finalizers.append(f)
    graceful = is_graceful_pod(kind, current, grace_period_seconds)
    if not finalizers and not graceful:
        return Outcome(marked=None)
    shorten = grace_period_seconds == 0 and (meta.deletionGracePeriodSeconds or 0) > 0
    if meta.deletionTimestamp and finalizers == list(meta.finalizers) and not shorten:
        return Outcome(marked=current, unchanged=True)
    grace = grace_period_seconds
    if graceful and grace is None:
        grace = getattr(getattr(current, "spec", None), "terminationGracePeriodSeconds", None)
        grace = DEFAULT_POD_GRACE_SECONDS if grace is None else grace
    if shorten:
        # A forced delete of a pod that only finalizers hold: it goes with the last one.
        graceful, grace = True, 0
    marked = msgspec.structs.replace(
        current,
        metadata=msgspec.structs.replace(
            meta,
            finalizers=finalizers,
            deletionTimestamp=meta.deletionTimestamp or now,
            deletionGracePeriodSeconds=grace if graceful else meta.deletionGracePeriodSeconds,
        ),
    )
    return Outcome(marked=marked)
