"""The resource quota controller (kube-controller-manager's): keeps every ResourceQuota's
``status.hard`` (a copy of ``spec.hard``) and ``status.used`` (:func:`schemas.quota.usage`: the
namespace's non-terminal pods counted and their requests and limits summed, from a pod
informer; other object counts listed from the store). Quota changes and pod changes in the
namespace enqueue the quota; quotas that count other objects are looked at every 10 s.

New pods are charged to the quotas by the store's create (``kyb.store.Store.charge_quotas``),
with compare-and-set on the quota, before this controller has seen the pod; so a recomputation
that would lower ``used`` waits until the quota has been still for ``SETTLE_SECONDS`` (the pod
charged a moment ago reaches the pod informer meanwhile) or, in a namespace charged without
pause, until it has waited ``MAX_DEFER_SECONDS``; and a write is dropped when the quota changed
since it was read. Runs as the leader's work of lease ``kyb-resourcequota``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from msgspec.structs import replace
from opentelemetry.context import Context

from kyb import errors
from kyb.controller import Controller
from kyb.informer import Informer, start_all, stop_all
from kyb.leading import run_as_leader
from kyb.store import Store
from schemas.helpers import object_key
from schemas.meta import Object
from schemas.pod import Pod
from schemas.quantity import parse_quantity
from schemas.quota import ResourceQuota, ResourceQuotaStatus, counted_kind, usage
from schemas.registry import UnknownKind, resolve

SETTLE_SECONDS = 2.0
# A namespace whose quotas are charged more often than SETTLE_SECONDS never settles: its usage is
# lowered anyway once a lowering has waited this long (the window Kubernetes' controller has too).
MAX_DEFER_SECONDS = 10.0
COUNT_RESYNC_SECONDS = 10.0


class QuotaController:
    """Reconciles every ResourceQuota's status; see the module docstring."""

    def __init__(self, nc: Any, store: Store, *, workers: int = 2) -> None:
        self.store = store
        self.quotas = Informer(nc, "ResourceQuota")
        self.pods = Informer(nc, "Pod")
        self.changed: dict[str, float] = {}  # quota key -> monotonic time its last change was seen
        self.deferred: dict[str, float] = {}  # quota key -> when a lowering of its usage was first put off
        self.controller = Controller("resourcequota", self.reconcile, workers=workers, keys=self.quotas.keys,
                                     resync_seconds=60)
        self.quotas.add_handler(self._on_quota)
        self.pods.add_handler(self.controller.handler(
            lambda p: [object_key(q) for q in self.quotas.list(p.metadata.namespace or "default")]))

    def _on_quota(self, event: str, new: Any, old: Any, headers: Any) -> None:
        for obj in (new, old):
            if obj is not None:
                self.changed[object_key(obj)] = time.monotonic()
                self.controller.enqueue_from_headers(object_key(obj), headers)

    async def start(self) -> None:
        await start_all([self.quotas, self.pods])

    async def stop(self) -> None:
        await stop_all([self.quotas, self.pods])

    async def _counts(self, quota: ResourceQuota) -> dict[str, int]:
        namespace = quota.metadata.namespace or "default"
        out: dict[str, int] = {}
        for key in quota.spec.hard:
            kind = counted_kind(key)
            if kind is None or kind in out or kind == "pods":  # pods are counted from the informer
                continue
            try:
                info = resolve(kind)
            except UnknownKind:
                continue
            if info.namespaced:
                out[kind] = len(await self.store.list(info, namespace))
        return out

    async def reconcile(self, key: str, _ctx: Context | None = None) -> float | None:
        quota = self.quotas.get(key)
        if not isinstance(quota, ResourceQuota) or quota.metadata.deletionTimestamp:
            self.changed.pop(key, None)
            self.deferred.pop(key, None)
            return None
        namespace = quota.metadata.namespace or "default"
        pods = [p for p in self.pods.list(namespace) if isinstance(p, Pod)]
        counts = await self._counts(quota)
        status = ResourceQuotaStatus(hard=dict(quota.spec.hard), used=usage(quota.spec.hard, pods, counts))
        again = COUNT_RESYNC_SECONDS if counts else None
        if status == quota.status:
            return again
        lowers = any(k in quota.status.used and parse_quantity(v) < parse_quantity(quota.status.used[k])
                     for k, v in status.used.items())
        now = time.monotonic()
        settled_for = now - self.changed.get(key, 0.0)
        if lowers and settled_for < SETTLE_SECONDS:
            since = self.deferred.setdefault(key, now)
            if now - since < MAX_DEFER_SECONDS:
                return SETTLE_SECONDS - settled_for  # a pod charged a moment ago may not be in the informer yet
        self.deferred.pop(key, None)

        def change(current: Object) -> Object | None:
            if not isinstance(current, ResourceQuota) or current.metadata.uid != quota.metadata.uid:
                return None
            if current.metadata.resourceVersion != quota.metadata.resourceVersion:
                return None  # charged or changed since: its watch event brings it back
            return replace(current, status=status)

        with contextlib.suppress(errors.NotFound):
            await self.store.mutate("ResourceQuota", namespace, quota.metadata.name, change)
        return again


async def run(ctx: Any, stop: asyncio.Event) -> None:
    """Entry point for ``kyb serve resourcequota``."""
    await run_as_leader(ctx, "kyb-resourcequota", QuotaController(ctx.nc, ctx.store), stop)
