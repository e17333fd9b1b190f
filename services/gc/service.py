"""The garbage collector service: ownerReferences cascade and dangling dependents.

One informer per kind that can own or be owned keeps the ownership graph: a uid map
(uid -> kind and key) plus each informer's built-in ``owner`` index (owner uid -> dependents).
Events enqueue the object itself, its owners (an owner in foreground deletion waits on its
dependents) and, when an object goes, its dependents (they may now be dangling). The worker
asks :func:`services.gc.reconcile.plan` and applies the actions with compare-and-set writes.
Before collecting a dependent as dangling it reads the owner from the store, so a lagging
watch never deletes anything. Runs as the leader's work.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from opentelemetry.context import Context

from kyb import errors
from kyb.controller import Controller
from kyb.customkinds import CustomKinds
from kyb.informer import Informer, start_all, stop_all
from kyb.leading import run_as_leader
from kyb.serve import ServiceContext
from kyb.store import Store, kind_info
from schemas.meta import Object, OwnerReference
from schemas.registry import KindInfo, UnknownKind, by_kind
from services.gc.reconcile import FOREGROUND, Action, Node, plan, without_finalizer, without_owners

SOURCE = "garbage-collector"
KINDS = (
    "Pod",
    "ReplicaSet",
    "ReplicationController",
    "Deployment",
    "Job",
    "CronJob",
    "DaemonSet",
    "StatefulSet",
    "ControllerRevision",
    "Endpoints",
    "EndpointSlice",
    "PersistentVolumeClaim",
    "Service",
    "ConfigMap",
    "Secret",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "LimitRange",
    "ResourceQuota",
)


def gc_key(kind: str, namespace: str | None, name: str) -> str:
    return f"{kind}/{namespace or '_'}.{name}"


class Collector:
    """The graph of owners and dependents, and the reconcile applying :func:`plan`."""

    def __init__(self, nc: Any, store: Store, *, kinds: tuple[str, ...] = KINDS, workers: int = 4,
                 custom: bool = True) -> None:
        self.nc = nc
        self.store = store
        self.informers: dict[str, Informer] = {}
        # The kinds CRDs make are followed too, each once its informer has synced.
        self.custom = CustomKinds(store, nc, on_change=self._kind_changed) if custom else None
        self._following: set[asyncio.Task[None]] = set()
        for kind in kinds:
            with contextlib.suppress(UnknownKind, errors.BadRequest):
                by_kind(kind)
                self.informers[kind] = Informer(nc, kind)
        self.uids: dict[str, str] = {}  # uid -> gc key
        self.controller = Controller("gc", self.reconcile, workers=workers, keys=self.keys, resync_seconds=60)
        for inf in self.informers.values():
            inf.add_handler(self._on_event)

    async def start(self, timeout: float = 30) -> None:
        await start_all(self.informers.values(), timeout)
        if self.custom is not None:
            await self.custom.start(timeout)

    async def stop(self) -> None:
        if self.custom is not None:
            await self.custom.stop()
        for task in list(self._following):
            task.cancel()
        await asyncio.gather(*self._following, return_exceptions=True)
        await stop_all(self.informers.values())

    def _kind_changed(self, info: KindInfo, gone: bool) -> None:
        task = asyncio.ensure_future(self._follow(info, gone))
        self._following.add(task)
        task.add_done_callback(self._following.discard)

    async def _follow(self, info: KindInfo, gone: bool) -> None:
        """Watch a custom kind that came (or changed shape); stop watching one that went."""
        have = self.informers.get(info.kind)
        if have is not None and (gone or have.info.type is not info.type):
            del self.informers[info.kind]
            await have.stop()
            have = None
        if gone or have is not None:
            return
        informer = Informer(self.nc, info)
        informer.add_handler(self._on_event)
        await informer.start()
        try:
            await informer.wait_synced(30)
        except TimeoutError:
            await informer.stop()
            return
        if self.informers.setdefault(info.kind, informer) is not informer:
            await informer.stop()
            return
        for obj in informer.list():
            self.controller.enqueue(gc_key(obj.kind, obj.metadata.namespace, obj.metadata.name))

    def keys(self) -> list[str]:
        return [
            gc_key(o.kind, o.metadata.namespace, o.metadata.name)
            for inf in self.informers.values()
            for o in inf.list()
        ]

    # -- the graph --------------------------------------------------------------------------

    def _on_event(self, event: str, new: Object | None, old: Object | None, headers: dict[str, str]) -> None:
        obj = new or old
        if obj is None:
            return
        key = gc_key(obj.kind, obj.metadata.namespace, obj.metadata.name)
        uid = obj.metadata.uid or ""
        if event == "DELETED":
            if self.uids.get(uid) == key:
                del self.uids[uid]
            for dep in self.dependents(uid):
                self.controller.enqueue_from_headers(gc_key(dep.kind, dep.namespace, dep.name), headers)
        else:
            self.uids[uid] = key
            self.controller.enqueue_from_headers(key, headers)
        for ref in obj.metadata.ownerReferences:
            owner = self.uids.get(ref.uid)
            if owner is not None:
                self.controller.enqueue_from_headers(owner, headers)

    def dependents(self, uid: str) -> list[Node]:
        return [Node.of(o) for inf in self.informers.values() for o in inf.by_index("owner", uid)]

    def _cached(self, key: str) -> Object | None:
        kind, _, rest = key.partition("/")
        inf = self.informers.get(kind)
        return inf.get(rest) if inf is not None else None

    def _owner_in_cache(self, ref: OwnerReference) -> bool:
        if ref.kind not in self.informers:
            return True  # nobody here watches that kind: never judge it gone
        return ref.uid in self.uids

    # -- reconcile --------------------------------------------------------------------------

    async def reconcile(self, key: str, ctx: Context | None = None) -> float | None:
        obj = self._cached(key)
        if obj is None:
            return None
        node = Node.of(obj)
        actions = plan(
            node,
            self.dependents(node.uid),
            self._owner_in_cache,
            lambda n: bool(self.dependents(n.uid)),
        )
        for action in actions:
            if action.verb == "delete" and action.uid == node.uid:
                if await self._owners_present(obj):
                    return 1.0  # the watch lags the store: look again soon
            await self._apply(action)
        return None

    async def _owners_present(self, obj: Object) -> bool:
        """Whether any owner of ``obj`` is still in the store (read, not from the cache)."""
        for ref in obj.metadata.ownerReferences:
            try:
                info = kind_info(ref.kind)
            except errors.BadRequest:
                return True
            try:
                owner = await self.store.get(
                    info, obj.metadata.namespace if info.namespaced else None, ref.name
                )
            except errors.NotFound:
                continue
            if owner.metadata.uid == ref.uid:
                return True
        return False

    async def _apply(self, a: Action) -> None:
        try:
            if a.verb == "delete":
                current = await self.store.get(a.kind, a.namespace, a.name)
                if current.metadata.uid != a.uid:
                    return
                finalizers = (FOREGROUND,) if a.policy == "Foreground" else ()
                await self.store.delete(
                    a.kind,
                    a.namespace,
                    a.name,
                    resource_version=current.metadata.resourceVersion,
                    add_finalizers=finalizers,
                )
            elif a.verb == "strip-owners":
                await self.store.mutate(
                    a.kind, a.namespace, a.name, lambda o: without_owners(o, a.owner_uids, a.uid)
                )
            else:
                await self.store.mutate(
                    a.kind, a.namespace, a.name, lambda o: without_finalizer(o, a.finalizer, a.uid)
                )
        except errors.NotFound:
            return


async def run(ctx: ServiceContext, stop: asyncio.Event) -> None:
    opts = ctx.options
    collector = Collector(ctx.nc, ctx.store, workers=int(opts.get("gc_workers", 4)))
    await run_as_leader(ctx, "kyb-gc", collector, stop, kinds=sorted(collector.informers))
