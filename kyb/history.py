"""Writing what kyb.revisions decided about a workload's ControllerRevisions (Kubernetes'
``controller/history`` client side), for every controller that keeps a history (DaemonSet,
StatefulSet): create the current revision, renumber a returning one, delete the old, and
resolve a hash collision by bumping the owner's ``status.collisionCount``."""

from __future__ import annotations

import contextlib
from typing import Any

from msgspec.structs import replace

from kyb import errors, revisions
from kyb.store import Store
from schemas.apps import ControllerRevision
from schemas.helpers import controller_of
from schemas.meta import Object


async def settle(store: Store, owner: Any, hist: revisions.History) -> bool:
    """Apply ``hist`` for ``owner`` (which has ``spec.template`` and ``status.collisionCount``);
    False after a hash collision: the name is held by a revision of another template or owner,
    and ``collisionCount`` was bumped, so the next sync hashes differently."""
    ns = owner.metadata.namespace
    if hist.create is not None:
        try:
            await store.create(hist.create)
        except errors.AlreadyExists:
            existing = await store.get("ControllerRevision", ns, hist.create.metadata.name)
            assert isinstance(existing, ControllerRevision)
            ours = (c := controller_of(existing)) is not None and c.uid == owner.metadata.uid
            if not (ours and revisions.revision_template(existing) == owner.spec.template):
                await bump_collision_count(store, owner)
                return False
            if existing.revision < hist.create.revision:  # the watch had not shown it yet
                await renumber(store, ns, existing.metadata.name, hist.create.revision)
    if hist.renumber is not None:
        await renumber(store, ns, hist.renumber.metadata.name, hist.renumber.revision)
    for name in hist.delete:
        with contextlib.suppress(errors.NotFound):
            await store.delete("ControllerRevision", ns, name)
    return True


async def renumber(store: Store, ns: str | None, name: str, revision: int) -> None:
    def change(current: Object) -> Object | None:
        if not isinstance(current, ControllerRevision) or current.revision >= revision:
            return None
        return replace(current, revision=revision)

    with contextlib.suppress(errors.NotFound):
        await store.mutate("ControllerRevision", ns, name, change)


async def bump_collision_count(store: Store, owner: Any) -> None:
    def change(current: Any) -> Any:
        if current.metadata.uid != owner.metadata.uid:
            return None
        status = current.status
        if (status.collisionCount or 0) != (owner.status.collisionCount or 0):
            return None  # already bumped since it was read
        return replace(current, status=replace(status, collisionCount=(status.collisionCount or 0) + 1))

    with contextlib.suppress(errors.NotFound):
        await store.mutate(owner.kind, owner.metadata.namespace, owner.metadata.name, change)
