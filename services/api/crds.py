"""What the api does for CustomResourceDefinitions, as Kubernetes' apiextensions-apiserver and
its naming, establishing and finalizer controllers do:

- a new or changed CRD gets its status at once: ``acceptedNames`` and ``NamesAccepted`` (False
  when a name is another kind's), ``Established``, ``storedVersions``; its kind is then served
  (bucket made, registered in this process; other processes follow through their informers);
- a new CRD carries the ``customresourcecleanup.apiextensions.k8s.io`` finalizer; deleting it
  marks it ``Terminating``, refuses new objects of its kind, deletes every one of them (each
  through its own finalizers) and then lets the CRD go;
- a custom resource whose version has no ``status`` subresource keeps the status it is given.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from msgspec.structs import replace

from kyb import errors
from kyb.customkinds import CRD_KIND, CustomKinds
from kyb.store import Store
from schemas import registry
from schemas.apiextensions import (
    CLEANUP_FINALIZER,
    CustomResourceDefinition,
    CustomResourceDefinitionStatus,
    custom_kind,
    with_condition,
)
from schemas.helpers import format_time
from schemas.meta import Object
from schemas.registry import KindInfo

log = structlog.get_logger("api.crds")


def keeps_status(info: KindInfo, api_version: str) -> bool:
    """Whether writes of the main resource carry the status (no status subresource)."""
    if info.custom is None:
        return False
    try:
        return not info.custom.version(api_version).status
    except KeyError:
        return False


def has_status(info: KindInfo, api_version: str) -> bool:
    """Whether the kind serves a status subresource at this version."""
    if info.custom is None:
        return "status" in info.type.__struct_fields__
    try:
        return info.custom.version(api_version).status
    except KeyError:
        return False


def crd_status(crd: CustomResourceDefinition, old: CustomResourceDefinition | None, now: str) -> CustomResourceDefinitionStatus:
    """The status the naming and establishing controllers give ``crd``."""
    status = old.status if old is not None else crd.status
    info = custom_kind(crd)
    problem = registry.clash(info)
    if problem is None:
        status = replace(status, acceptedNames=crd.spec.names)
        status = with_condition(status, "NamesAccepted", "True", "NoConflicts", "no conflicts found", now)
        status = with_condition(status, "Established", "True", "InitialNamesAccepted",
                                "the initial names have been accepted", now)
    else:
        status = with_condition(status, "NamesAccepted", "False", "NameConflict", problem, now)
        if not any(c.type == "Established" for c in status.conditions):
            status = with_condition(status, "Established", "False", "NotAccepted", "not all names are accepted", now)
    storage = next((v.name for v in crd.spec.versions if v.storage), None)
    stored = list(status.storedVersions)
    if storage is not None and storage not in stored:
        stored.append(storage)
    return replace(status, storedVersions=stored)


class Crds:
    """See the module docstring."""

    def __init__(self, store: Store, kinds: CustomKinds) -> None:
        self.store = store
        self.kinds = kinds
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closing = False

    def _now(self) -> str:
        return format_time(self.store.clock())

    def prepared(self, crd: Object, current: Object | None = None) -> Object:
        """A CRD about to be written: finalizer (when new) and status."""
        assert isinstance(crd, CustomResourceDefinition)
        old = current if isinstance(current, CustomResourceDefinition) else None
        meta = crd.metadata
        if old is None and CLEANUP_FINALIZER not in meta.finalizers and not meta.deletionTimestamp:
            meta = replace(meta, finalizers=[*meta.finalizers, CLEANUP_FINALIZER])
        if old is not None and old.metadata.deletionTimestamp:
            return replace(crd, metadata=meta)
        if old is not None and old.status.storedVersions:
            crd = replace(crd, status=replace(crd.status, storedVersions=old.status.storedVersions))
        return replace(crd, metadata=meta, status=crd_status(crd, old, self._now()))

    async def serve(self, crd: Object) -> None:
        """Serve the kind of a CRD just written (its bucket first, so every reader finds it)."""
        assert isinstance(crd, CustomResourceDefinition)
        if crd.metadata.deletionTimestamp:
            return
        try:
            info = custom_kind(crd)
        except (ValueError, KeyError, IndexError):
            return
        if registry.clash(info) is None:
            await self.store.ensure_buckets([info])
        self.kinds.apply(crd)

    def check_open(self, info: KindInfo) -> None:
        """Refuse a new object of a kind whose CRD is being deleted."""
        crd = self.kinds.crd_of(info)
        if crd is not None and crd.metadata.deletionTimestamp:
            raise errors.Forbidden(f"create not allowed while custom resource definition is terminating: "
                                   f"{info.plural}.{info.group}")

    # -- deletion ------------------------------------------------------------------------

    def finish(self, name: str) -> None:
        task = self._tasks.get(name)
        if task is None or task.done():
            self._tasks[name] = asyncio.create_task(self._cleanup(name), name=f"crd-cleanup-{name}")

    async def resume(self) -> None:
        """Finish the deletions an api stopped in the middle of."""
        for crd in await self.store.list(CRD_KIND):
            if crd.metadata.deletionTimestamp and CLEANUP_FINALIZER in crd.metadata.finalizers:
                self.finish(crd.metadata.name)

    async def _cleanup(self, name: str) -> None:
        try:
            crd = await self.store.get(CRD_KIND, None, name)
        except errors.NotFound:
            return
        assert isinstance(crd, CustomResourceDefinition)
        try:
            info = custom_kind(crd)
        except (ValueError, KeyError, IndexError):
            info = None
        await self.store.mutate(CRD_KIND, None, name, lambda c: self._terminating(c, "InstanceDeletionInProgress",
                                                                                 "CustomResource deletion is in progress"))
        delay = 0.1
        while info is not None and info.api_versions and not self._closing:
            remaining = 0
            for obj in await self.store.list(info):
                remaining += 1
                if obj.metadata.deletionTimestamp:
                    continue
                with contextlib.suppress(errors.NotFound, errors.Conflict):
                    await self.store.delete(info, obj.metadata.namespace, obj.metadata.name)
            if remaining == 0:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        if self._closing:
            return

        def release(c: Object) -> Object:
            fins = [f for f in c.metadata.finalizers if f != CLEANUP_FINALIZER]
            return replace(c, metadata=replace(c.metadata, finalizers=fins))

        with contextlib.suppress(errors.NotFound):
            await self.store.mutate(CRD_KIND, None, name, release)
        log.info("customresourcedefinition deleted with its objects", crd=name)

    def _terminating(self, crd: Object, reason: str, message: str) -> Object | None:
        assert isinstance(crd, CustomResourceDefinition)
        status = with_condition(crd.status, "Terminating", "True", reason, message, self._now())
        if status == crd.status:
            return None
        return replace(crd, status=status)

    async def close(self) -> None:
        self._closing = True
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

