"""The deployment service: rolls Deployments out through ReplicaSets.

Informers on Deployments, ReplicaSets and Pods feed one controller keyed by the Deployment's
KV key. A ReplicaSet event enqueues the Deployment that controls it, or, for an orphan, every
Deployment of its namespace that selects it; a pod event enqueues the Deployment of its
ReplicaSet. The worker re-reads the caches and first claims the namespace's ReplicaSets
(:func:`services.deployment.reconcile.claim`): selected orphans are adopted and owned ones no
longer selected are released, each compare-and-set on a fresh read (and an adoption only after
a fresh read of the Deployment shows it is not being deleted, as Kubernetes' canAdopt). Then it
asks :func:`services.deployment.reconcile.reconcile` for one step over the ReplicaSets it owns
and applies it: the new ReplicaSet is created, scaled ReplicaSets and the Deployment (revision
annotation and status) are written compare-and-set at the revision read, history beyond
``revisionHistoryLimit`` is deleted at its revision. A lost compare-and-set raises Conflict and
the key is retried on fresh caches. Runs as the leader's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
from typing import Any

from opentelemetry.context import Context

from kyb import controllerref, errors
from kyb.controller import Controller
from kyb.informer import Informer, start_all, stop_all
from kyb.leading import run_as_leader
from kyb.serve import ServiceContext
from kyb.store import Store
from schemas.apps import Deployment, ReplicaSet
from schemas.helpers import controller_of, object_key
from schemas.meta import Object
from schemas.selector import SelectorError
from services.deployment.reconcile import (
    Claims,
    Plan,
    adopted,
    claim,
    controller,
    reconcile,
    released,
    selector_of,
)

SOURCE = "deployment-controller"


class Deployments:
    """Informers in, plans out through the store."""

    def __init__(self, nc: Any, store: Store, *, workers: int = 4, clock: Any = None) -> None:
        self.nc = nc
        self.store = store
        self.clock = clock or (lambda: _dt.datetime.now(_dt.UTC))
        self.deployments = Informer(nc, "Deployment")
        self.replicasets = Informer(nc, "ReplicaSet")
        self.pods = Informer(nc, "Pod")
        self.controller = Controller("deployment", self.reconcile, workers=workers, keys=self.deployments.keys)
        self.deployments.add_handler(self.controller.handler(lambda d: [object_key(d)]))
        self.replicasets.add_handler(self.controller.handler(self._deployments_of))
        self.pods.add_handler(self._on_pod)

    @property
    def informers(self) -> tuple[Informer, ...]:
        return (self.deployments, self.replicasets, self.pods)

    async def start(self, timeout: float = 30) -> None:
        await start_all(self.informers, timeout)

    async def stop(self) -> None:
        await stop_all(self.informers)

    # -- handlers only enqueue keys -------------------------------------------------------------

    def _deployments_of(self, rs: Object) -> list[str]:
        """The Deployment controlling ``rs``; for an orphan, every Deployment that selects it."""
        ns = rs.metadata.namespace or "default"
        ref = controller_of(rs)
        if ref is not None:
            return [f"{ns}.{ref.name}"] if ref.kind == "Deployment" else []
        keys = []
        for d in self.deployments.list(ns):
            with contextlib.suppress(SelectorError):
                if selector_of(d).matches(rs.metadata.labels):  # type: ignore[arg-type]
                    keys.append(object_key(d))
        return keys

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

    def pods_of(self, rss: list[ReplicaSet]) -> list[Object]:
        """The pods the ReplicaSets ``rss`` control, from the cache."""
        return [p for rs in rss for p in self.pods.by_index("owner", rs.metadata.uid or "")]

    async def reconcile(self, key: str, ctx: Context | None = None) -> float | None:
        d = self.deployments.get(key)
        if d is None:
            return None
        assert isinstance(d, Deployment)
        claims = claim(d, self.replicasets.list(d.metadata.namespace or "default"))  # type: ignore[arg-type]
        owned, taken = await self.apply_claims(d, claims)
        plan = reconcile(d, owned, self.pods_of(owned), self.clock(), taken)  # type: ignore[arg-type]
        await self.apply(d, plan)
        return plan.requeue_after

    async def apply_claims(self, d: Deployment, claims: Claims) -> tuple[list[ReplicaSet], list[str]]:
        """Adopt and release as ``claims`` says, each re-checked on a fresh read and written at its
        revision; returns the ReplicaSets ``d`` now owns and the names it must not take."""
        if not claims.adopt and not claims.release:
            return claims.owned, claims.taken
        ns = d.metadata.namespace or "default"
        if claims.adopt:
            # Kubernetes' canAdopt: never adopt for a Deployment that is gone or being deleted,
            # however stale the cache that said otherwise.
            try:
                fresh = await self.store.get("Deployment", ns, d.metadata.name)
            except errors.NotFound:
                fresh = None
            why = controllerref.may_adopt(fresh, controller(d))
            if why is not None:
                raise errors.Conflict(f'deployments "{d.metadata.name}" {why}: not adopting')
        written: list[tuple[Informer, Object]] = []
        results: dict[str, ReplicaSet | None] = {}

        async def write(rs: ReplicaSet, change: Any) -> None:
            try:
                obj = await self.store.mutate("ReplicaSet", ns, rs.metadata.name, lambda cur: change(cur, d))
            except errors.NotFound:
                results[rs.metadata.name] = None
                return
            assert isinstance(obj, ReplicaSet)
            results[rs.metadata.name] = obj
            written.append((self.replicasets, obj))

        await asyncio.gather(*(write(rs, adopted) for rs in claims.adopt),
                             *(write(rs, released) for rs in claims.release))
        await self._observed(written)
        for rs in claims.release:
            kept = results.get(rs.metadata.name)
            if kept is not None and (ref := controller_of(kept)) is not None and ref.uid == d.metadata.uid:
                # Selected again since the cache was read: plan from fresh caches, not without it.
                raise errors.Conflict(f'replicasets "{rs.metadata.name}" changed before it was released')
        adopting = {rs.metadata.name for rs in claims.adopt}
        owned: list[ReplicaSet] = []
        taken = list(claims.taken)
        for rs in claims.owned:
            if rs.metadata.name not in adopting:
                owned.append(rs)
                continue
            now_rs = results.get(rs.metadata.name)
            ref = controller_of(now_rs) if now_rs is not None else None
            if now_rs is not None and ref is not None and ref.uid == d.metadata.uid:
                owned.append(now_rs)
            elif now_rs is not None:  # someone else took it first, or it stopped matching
                taken.append(rs.metadata.name)
        return owned, taken

    async def apply(self, d: Deployment, plan: Plan) -> None:
        written: list[tuple[Informer, Object]] = []
        if plan.create is not None:
            try:
                written.append((self.replicasets, await self.store.create(plan.create)))
            except errors.AlreadyExists:
                # Ours, not yet in the cache, or a hash collision the next step will see.
                raise errors.Temporary(f'replicasets "{plan.create.metadata.name}" already exists', delay=0.1) from None
        if plan.updates:
            results = await asyncio.gather(*(self.store.update(rs, current=_cached(self.replicasets, rs))
                                             for rs in plan.updates), return_exceptions=True)
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
                written.append((self.deployments, await self.store.update(
                    plan.deployment, current=_cached(self.deployments, plan.deployment))))
            except errors.NotFound:
                return
        await asyncio.gather(
            *(self.store.record_event(d, ev.reason, ev.message, ev.type, source=SOURCE, nc=self.nc)
              for ev in plan.events),
            self._observed(written),
        )

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


def _cached(informer: Informer, obj: Object) -> Object | None:
    """The cached object ``obj`` was made from, when the cache still holds that revision (the
    stored object at it, so the store need not read it again before the compare-and-set)."""
    seen = informer.get(object_key(obj))
    if seen is not None and seen.metadata.resourceVersion == obj.metadata.resourceVersion:
        return seen
    return None


async def run(ctx: ServiceContext, stop: asyncio.Event) -> None:
    opts = ctx.options
    deployments = Deployments(ctx.nc, ctx.store, workers=int(opts.get("deployment_workers", 4)))
    await run_as_leader(ctx, "kyb-deployment", deployments, stop)
