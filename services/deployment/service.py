"""The deployment service: rolls Deployments out through ReplicaSets.

Informers on Deployments, ReplicaSets and Pods feed one controller keyed by the Deployment's
KV key. ReplicaSet and pod events enqueue the Deployment that controls them (a pod through its
ReplicaSet). The worker re-reads the caches, asks :func:`services.deployment.reconcile.reconcile`
for one step and applies it: the new ReplicaSet is created, scaled ReplicaSets and the
Deployment (revision annotation and status) are written compare-and-set at the revision read,
history beyond ``revisionHistoryLimit`` is deleted at its revision. A lost compare-and-set
raises Conflict and the key is retried on fresh caches. Runs as the leader's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
from typing import Any

from opentelemetry.context import Context

from kyb import errors
from kyb.controller import Controller, controller_keys
from kyb.informer import Informer, start_all, stop_all
from kyb.leading import run_as_leader
from kyb.serve import ServiceContext
from kyb.store import Store
from schemas.apps import Deployment, ReplicaSet
from schemas.helpers import controller_of, object_key
from schemas.meta import Object
from services.deployment.reconcile import Plan, reconcile

SOURCE = "deployment-controller"


class Deployments:
    """Informers in, plans out through the store."""

    def __init__(self, nc: Any, store: Store, *, workers: int = 4, clock: Any = None) -> None:
        self.store = store
        self.clock = clock or (lambda: _dt.datetime.now(_dt.UTC))
        self.deployments = Informer(nc, "Deployment")
        self.replicasets = Informer(nc, "ReplicaSet")
        self.pods = Informer(nc, "Pod")
        self.controller = Controller("deployment", self.reconcile, workers=workers, keys=self.deployments.keys)
        self.deployments.add_handler(self.controller.handler(lambda d: [object_key(d)]))
        self.replicasets.add_handler(self.controller.handler(controller_keys("Deployment")))
        self.pods.add_handler(self._on_pod)

    @property
    def informers(self) -> tuple[Informer, ...]:
        return (self.deployments, self.replicasets, self.pods)

    async def start(self, timeout: float = 30) -> None:
        await start_all(self.informers, timeout)

    async def stop(self) -> None:
        await stop_all(self.informers)

    # -- handlers only enqueue keys -------------------------------------------------------------

    def _on_pod(self, event: str, new: Object | None, old: Object | None, headers: dict[str, str]) -> None:
        for pod in {id(o): o for o in (new, old) if o is not None}.values():
            ref = controller_of(pod)
            if ref is None or ref.kind != "ReplicaSet":
                continue
            rs = self.replicasets.get(f"{pod.metadata.namespace or 'default'}.{ref.name}")
            owner = controller_of(rs) if rs is not None else None
            if owner is not None and owner.kind == "Deployment":
                self.controller.enqueue_from_headers(f"{pod.metadata.namespace or 'default'}.{owner.name}", headers)

    # -- the worker ------------------------------------------------------------------------------

    def snapshot(self, d: Deployment) -> tuple[list[ReplicaSet], list[Object]]:
        """The ReplicaSets ``d`` controls and their pods, from the caches."""
        uid = d.metadata.uid or ""
        rss = [rs for rs in self.replicasets.by_index("owner", uid)
               if (ref := controller_of(rs)) is not None and ref.uid == uid]
        pods = [p for rs in rss for p in self.pods.by_index("owner", rs.metadata.uid or "")]
        return rss, pods  # type: ignore[return-value]

    async def reconcile(self, key: str, ctx: Context | None = None) -> float | None:
        d = self.deployments.get(key)
        if d is None:
            return None
        assert isinstance(d, Deployment)
        rss, pods = self.snapshot(d)
        plan = reconcile(d, rss, pods, self.clock())  # type: ignore[arg-type]
        await self.apply(d, plan)
        return plan.requeue_after

    async def apply(self, d: Deployment, plan: Plan) -> None:
        written: list[tuple[Informer, Object]] = []
        if plan.create is not None:
            try:
                written.append((self.replicasets, await self.store.create(plan.create)))
            except errors.AlreadyExists:
                # Ours, not yet in the cache, or a hash collision the next step will see.
                raise errors.Temporary(f'replicasets "{plan.create.metadata.name}" already exists', delay=0.1) from None
        if plan.updates:
            results = await asyncio.gather(*(self.store.update(rs) for rs in plan.updates), return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            written += [(self.replicasets, r) for r in results if not isinstance(r, BaseException)]
            if failed:
                raise failed[0]
        for rs in plan.deletes:
            with contextlib.suppress(errors.NotFound):
                await self.store.delete("ReplicaSet", rs.metadata.namespace, rs.metadata.name,
                                        resource_version=rs.metadata.resourceVersion)
        if plan.deployment is not None:
            try:
                written.append((self.deployments, await self.store.update(plan.deployment)))
            except errors.NotFound:
                return
        for ev in plan.events:
            await self.store.record_event(d, ev.reason, ev.message, ev.type, source=SOURCE)
        await self._observed(written)

    async def _observed(self, written: list[tuple[Informer, Object]], timeout: float = 2.0) -> None:
        """Wait (bounded) until the caches hold what we just wrote, so the next step of this
        Deployment plans from it instead of losing a compare-and-set on a stale copy."""
        deadline = asyncio.get_running_loop().time() + timeout
        for informer, obj in written:
            want = int(obj.metadata.resourceVersion or 0)
            while asyncio.get_running_loop().time() < deadline:
                seen = informer.get(object_key(obj))
                if seen is not None and int(seen.metadata.resourceVersion or 0) >= want:
                    break
                await asyncio.sleep(0.002)


async def run(ctx: ServiceContext, stop: asyncio.Event) -> None:
    opts = ctx.options
    deployments = Deployments(ctx.nc, ctx.store, workers=int(opts.get("deployment_workers", 4)))
    await run_as_leader(ctx, "kyb-deployment", deployments, stop)
