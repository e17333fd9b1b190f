"""The endpoints service: keeps each Service's Endpoints and EndpointSlices in step with the
pods its selector matches (see :mod:`services.endpoints.reconcile` for the rules).

Informers on Services, Pods, Endpoints and EndpointSlices enqueue Service keys
(``<namespace>.<name>``): a pod change enqueues every Service of its namespace whose selector
matched the pod before or after the change, so a readiness flip reaches the Endpoints in one
reconcile. The worker re-reads the caches, asks ``reconcile`` for a plan and applies it with
compare-and-set writes (a Conflict re-queues the key). Runs as the leader's work.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from opentelemetry.context import Context

from kyb import errors
from kyb.controller import Controller
from kyb.informer import Informer, by_label, start_all, stop_all
from kyb.leading import run_as_leader
from kyb.serve import ServiceContext
from kyb.store import Store
from schemas.core import Endpoints, Service
from schemas.discovery import EndpointSlice
from schemas.meta import Object
from schemas.pod import Pod
from services.endpoints.reconcile import SERVICE_NAME_LABEL, reconcile, selects

SOURCE = "endpoint-controller"


class EndpointsController:
    """Informers in, plans applied through the store."""

    def __init__(self, nc: Any, store: Store, *, workers: int = 4) -> None:
        self.store = store
        self.services = Informer(nc, "Service")
        self.pods = Informer(nc, "Pod")
        self.endpoints = Informer(nc, "Endpoints")
        self.slices = Informer(nc, "EndpointSlice", indexers={"service": by_label(SERVICE_NAME_LABEL)})
        self.controller = Controller("endpoints", self.reconcile, workers=workers, keys=self.keys)
        self.services.add_handler(self._on_service)
        self.pods.add_handler(self._on_pod)
        self.endpoints.add_handler(self._on_endpoints)
        self.slices.add_handler(self._on_slice)

    @property
    def informers(self) -> tuple[Informer, ...]:
        return (self.services, self.pods, self.endpoints, self.slices)

    async def start(self, timeout: float = 30) -> None:
        await start_all(self.informers, timeout)

    async def stop(self) -> None:
        await stop_all(self.informers)

    def keys(self) -> list[str]:
        keys = set(self.services.keys()) | set(self.endpoints.keys())
        for s in self.slices.list():
            name = s.metadata.labels.get(SERVICE_NAME_LABEL)
            if name:
                keys.add(f"{s.metadata.namespace}.{name}")
        return sorted(keys)

    # -- handlers: enqueue keys only ------------------------------------------------------------

    def _on_service(self, event: str, new: Object | None, old: Object | None, headers: dict[str, str]) -> None:
        obj = new or old
        if obj is not None:
            self.controller.enqueue_from_headers(f"{obj.metadata.namespace}.{obj.metadata.name}", headers)

    def _on_pod(self, event: str, new: Object | None, old: Object | None, headers: dict[str, str]) -> None:
        obj = new or old
        if obj is None:
            return
        for svc in self.services.list(obj.metadata.namespace):
            assert isinstance(svc, Service)
            if any(p is not None and selects(svc, p) for p in (new, old)):  # type: ignore[arg-type]
                self.controller.enqueue_from_headers(f"{svc.metadata.namespace}.{svc.metadata.name}", headers)

    def _on_endpoints(self, event: str, new: Object | None, old: Object | None, headers: dict[str, str]) -> None:
        obj = new or old
        if obj is not None:
            self.controller.enqueue(f"{obj.metadata.namespace}.{obj.metadata.name}")

    def _on_slice(self, event: str, new: Object | None, old: Object | None, headers: dict[str, str]) -> None:
        obj = new or old
        name = obj.metadata.labels.get(SERVICE_NAME_LABEL) if obj is not None else None
        if obj is not None and name:
            self.controller.enqueue(f"{obj.metadata.namespace}.{name}")

    # -- the worker -----------------------------------------------------------------------------

    async def reconcile(self, key: str, ctx: Context | None = None) -> float | None:
        namespace, _, name = key.partition(".")
        service = self.services.get(key)
        pods = [p for p in self.pods.list(namespace) if isinstance(p, Pod)]
        endpoints = self.endpoints.get(key)
        slices = [
            s
            for s in self.slices.by_index("service", name)
            if isinstance(s, EndpointSlice) and s.metadata.namespace == namespace
        ]
        plan = reconcile(
            service if isinstance(service, Service) else None,
            pods,
            endpoints if isinstance(endpoints, Endpoints) else None,
            slices,
        )
        if plan.empty:
            return None
        if plan.create_endpoints is not None:
            with contextlib.suppress(errors.AlreadyExists):  # the cache was behind: next event fixes it
                await self.store.create(plan.create_endpoints)
        if plan.update_endpoints is not None:
            await self.store.update(plan.update_endpoints)
        if plan.delete_endpoints and endpoints is not None:
            with contextlib.suppress(errors.NotFound):
                await self.store.delete("Endpoints", namespace, name, resource_version=endpoints.metadata.resourceVersion)
        for s in plan.create_slices:
            with contextlib.suppress(errors.AlreadyExists):
                await self.store.create(s)
        for s in plan.update_slices:
            await self.store.update(s)
        for slice_name in plan.delete_slices:
            with contextlib.suppress(errors.NotFound):
                await self.store.delete("EndpointSlice", namespace, slice_name)
        return None


async def run(ctx: ServiceContext, stop: asyncio.Event) -> None:
    opts = ctx.options
    controller = EndpointsController(ctx.nc, ctx.store, workers=int(opts.get("endpoints_workers", 4)))
    await run_as_leader(ctx, "kyb-endpoints", controller, stop)
