"""What the garbage collector does about one object, as pure functions.

The collector sees every object of the kinds that own or are owned as a :class:`Node` of the
ownership graph (uid, ownerReferences, deletion state). For one node, :func:`plan` decides:

- the node is being deleted with the ``orphan`` finalizer: strip the references to it from
  every dependent, then drop the finalizer;
- it is being deleted with ``foregroundDeletion``: delete its dependents (those that block
  the owner's deletion in the foreground too, so the cascade is recursive) and drop the
  finalizer once no dependent with ``blockOwnerDeletion`` is left;
- its owners are gone (no object has their uid): when every owner is gone the node is
  collected (the background cascade), when only some are, the dangling references go.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec

from schemas.meta import Object, OwnerReference

ORPHAN = "orphan"
FOREGROUND = "foregroundDeletion"

Verb = Literal["delete", "strip-owners", "remove-finalizer"]
Policy = Literal["Background", "Foreground"]


@dataclass(frozen=True, slots=True)
class Node:
    kind: str
    namespace: str | None
    name: str
    uid: str
    owners: tuple[OwnerReference, ...]
    deleting: bool
    finalizers: tuple[str, ...]

    @classmethod
    def of(cls, obj: Object) -> Node:
        m = obj.metadata
        return cls(
            kind=obj.kind,
            namespace=m.namespace,
            name=m.name,
            uid=m.uid or "",
            owners=tuple(m.ownerReferences),
            deleting=m.deletionTimestamp is not None,
            finalizers=tuple(m.finalizers),
        )

    def ref_to(self, uid: str) -> OwnerReference | None:
        return next((r for r in self.owners if r.uid == uid), None)

    def blocks(self, owner_uid: str) -> bool:
        ref = self.ref_to(owner_uid)
        return ref is not None and bool(ref.blockOwnerDeletion)


class Action(msgspec.Struct, kw_only=True, frozen=True):
    verb: Verb
    kind: str
    namespace: str | None
    name: str
    uid: str  # the uid the action was decided for (a recreated object of the same name is left alone)
    owner_uids: tuple[str, ...] = ()  # strip-owners: the references to remove
    policy: Policy = "Background"  # delete
    finalizer: str = ""  # remove-finalizer


def _target(
    node: Node, verb: Verb, *, owner_uids: tuple[str, ...] = (), policy: Policy = "Background", finalizer: str = ""
) -> Action:
    return Action(
        verb=verb, kind=node.kind, namespace=node.namespace, name=node.name, uid=node.uid,
        owner_uids=owner_uids, policy=policy, finalizer=finalizer,
    )


def plan(
    node: Node,
    dependents: Sequence[Node],
    owner_exists: Callable[[OwnerReference], bool],
    has_dependents: Callable[[Node], bool] = lambda _n: False,
) -> list[Action]:
    """The actions for ``node``, in the order to apply them.

    ``dependents`` are the nodes referring to ``node``; ``owner_exists(ref)`` says whether an
    object with the reference's uid exists (an owner of a kind nobody watches counts as present);
    ``has_dependents(n)`` whether anything refers to ``n``.
    """
    actions: list[Action] = []
    if node.deleting and ORPHAN in node.finalizers:
        for d in dependents:
            if d.ref_to(node.uid) is not None:
                actions.append(_target(d, "strip-owners", owner_uids=(node.uid,)))
        actions.append(_target(node, "remove-finalizer", finalizer=ORPHAN))
        return actions
    if node.deleting and FOREGROUND in node.finalizers:
        blocking = [d for d in dependents if d.blocks(node.uid)]
        for d in dependents:
            if d.deleting:
                continue
            foreground = d.blocks(node.uid) and has_dependents(d)
            actions.append(_target(d, "delete", policy="Foreground" if foreground else "Background"))
        if not blocking:
            actions.append(_target(node, "remove-finalizer", finalizer=FOREGROUND))
        return actions
    if node.owners and not node.deleting:
        dangling = tuple(r.uid for r in node.owners if not owner_exists(r))
        if len(dangling) == len(node.owners):
            actions.append(_target(node, "delete"))
        elif dangling:
            actions.append(_target(node, "strip-owners", owner_uids=dangling))
    return actions


def without_owners(obj: Object, uids: Sequence[str], expected_uid: str) -> Object | None:
    """``obj`` without the references to ``uids``, or None when there is nothing to change."""
    if obj.metadata.uid != expected_uid:
        return None
    refs = [r for r in obj.metadata.ownerReferences if r.uid not in uids]
    if len(refs) == len(obj.metadata.ownerReferences):
        return None
    return msgspec.structs.replace(obj, metadata=msgspec.structs.replace(obj.metadata, ownerReferences=refs))


def without_finalizer(obj: Object, finalizer: str, expected_uid: str) -> Object | None:
    """``obj`` without ``finalizer``, or None when it does not carry it."""
    if obj.metadata.uid != expected_uid or finalizer not in obj.metadata.finalizers:
        return None
    rest = [f for f in obj.metadata.finalizers if f != finalizer]
    return msgspec.structs.replace(obj, metadata=msgspec.structs.replace(obj.metadata, finalizers=rest))
