"""A workload's template history as ControllerRevisions (Kubernetes' ``controller/history``),
for the controllers that keep one (StatefulSet; DaemonSet keeps the same shape). Pure.

One apps/v1 ControllerRevision per distinct pod template, named ``<owner>-<hash>``, controlled
by the owner (gc removes them with it), labelled with the template's labels plus
``controller-revision-hash: <hash>``, annotated with the owner's annotations (the change-cause
``kyb rollout history`` shows), holding ``data: {spec: {template: ...}}`` (what ``kyb rollout
undo`` restores). The current revision has the highest ``revision``: a template that comes back
has its old revision renumbered to max+1 rather than copied. Old revisions past the owner's
``revisionHistoryLimit`` go, oldest first, except those still in use. The hash covers the
template and ``status.collisionCount``, so a name taken by a revision holding another template
is resolved by bumping the count.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from typing import Any

import msgspec
from msgspec.structs import replace

from schemas.apps import CONTROLLER_REVISION_HASH_LABEL, ControllerRevision
from schemas.helpers import owner_reference
from schemas.meta import Object, ObjectMeta
from schemas.pod import PodTemplateSpec

HASH_LABEL = CONTROLLER_REVISION_HASH_LABEL


class History(msgspec.Struct, frozen=True, kw_only=True):
    """What to do with an owner's ControllerRevisions before it places pods."""

    current: str  # the name of the revision holding the owner's template
    current_hash: str  # its controller-revision-hash
    create: ControllerRevision | None = None  # the current revision, when none exists yet
    renumber: ControllerRevision | None = None  # the current revision with its new, highest revision
    delete: list[str] = []  # duplicates of the current revision and old ones past the limit
    revisions: list[ControllerRevision] = []  # the history after these changes, oldest first


def template_hash(template: PodTemplateSpec, collision_count: int | None) -> str:
    """A stable short hash of the template and the collision count."""
    raw = msgspec.json.encode(template) + str(collision_count or 0).encode()
    return hashlib.sha256(raw).hexdigest()[:10]


def revision_name(owner: Object, hash_: str) -> str:
    return f"{owner.metadata.name}-{hash_}"


def revision_data(template: PodTemplateSpec) -> dict[str, Any]:
    """The patch a revision holds (Kubernetes' ``getPatch``): ``{"spec": {"template": ...}}``."""
    return {"spec": {"template": msgspec.to_builtins(template)}}


def revision_template(rev: ControllerRevision) -> PodTemplateSpec | None:
    """The pod template a revision restores, or None when its data holds none."""
    spec = rev.data.get("spec")
    raw = spec.get("template") if isinstance(spec, dict) else None
    if not isinstance(raw, dict):
        return None
    try:
        return msgspec.convert(raw, PodTemplateSpec)
    except msgspec.ValidationError:
        return None


def new_revision(owner: Object, template: PodTemplateSpec, hash_: str, number: int) -> ControllerRevision:
    meta = ObjectMeta(
        name=revision_name(owner, hash_),
        namespace=owner.metadata.namespace,
        labels={**template.metadata.labels, HASH_LABEL: hash_},
        annotations=dict(owner.metadata.annotations),
        ownerReferences=[owner_reference(owner)],
    )
    return ControllerRevision(metadata=meta, data=revision_data(template), revision=number)


def _by_revision(rev: ControllerRevision) -> tuple[int, str]:
    return (rev.revision, rev.metadata.name)


def history(
    owner: Object,
    template: PodTemplateSpec,
    collision_count: int | None,
    limit: int,
    revisions: list[ControllerRevision],
    in_use: Collection[str] = (),
) -> History:
    """Kubernetes' history construction and cleanup. ``revisions`` are the owner's own
    (controller owner = it); ``in_use`` names revisions live pods or the status still point at."""
    hash_ = template_hash(template, collision_count)
    current = [r for r in revisions if r.metadata.labels.get(HASH_LABEL) == hash_ or revision_template(r) == template]
    old = sorted((r for r in revisions if r not in current), key=_by_revision)
    number = max((r.revision for r in old), default=0) + 1
    delete: list[str] = []
    create = renumber = None
    if not current:
        create = keep = new_revision(owner, template, hash_, number)
    else:
        keep, *dupes = sorted(current, key=_by_revision, reverse=True)
        delete += [r.metadata.name for r in dupes]
        if keep.revision < number:
            keep = renumber = replace(keep, revision=number)
    to_kill = len(old) - max(0, limit)
    kept_old: list[ControllerRevision] = []
    for r in old:
        if to_kill > 0 and r.metadata.name not in in_use:
            delete.append(r.metadata.name)
            to_kill -= 1
        else:
            kept_old.append(r)
    return History(current=keep.metadata.name, current_hash=keep.metadata.labels.get(HASH_LABEL) or hash_,
                   create=create, renumber=renumber, delete=delete, revisions=[*kept_old, keep])
