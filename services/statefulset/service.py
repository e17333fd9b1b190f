"""The StatefulSet controller's async shell: informers on StatefulSets, Pods, ControllerRevisions
and PersistentVolumeClaims in, ``kyb.revisions.history`` and ``reconcile.plan`` out through the
store.

Per key: claim the namespace's pods (ControllerRefManager: adopt selected orphans named as
members after a fresh read of the set, release those no longer selected), settle the history
(a revision name taken by another template bumps ``status.collisionCount``), plan, then write in
the order that keeps identities safe: claims' owner references, new claims, new pods, deletions,
status. Pods created or deleted but not yet seen by the pod informer are *expected*; the set
waits for them before planning again, so a slow watch never hides a pod from OrderedReady.
Runs as the leader's work of lease ``kyb-statefulset``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from msgspec.structs import replace
from opentelemetry.context import Context

from kyb import controllerref, errors, history, revisions
from kyb.controller import controller_keys
from kyb.informer import Informer
from kyb.leading import run_as_leader
from kyb.shell import ControllerShell
from kyb.store import split_key
from schemas.apps import ControllerRevision, StatefulSet
from schemas.core import PersistentVolumeClaim
from schemas.helpers import controller_of, object_key
from schemas.meta import Object
from schemas.pod import Pod
from services.statefulset import reconcile
from services.statefulset.reconcile import Settings

SOURCE = "statefulset-controller"

sts_key_of = controller_keys("StatefulSet")


class StatefulSetController(ControllerShell, kind="StatefulSet", name="statefulset", source=SOURCE, settings=Settings):
    """Reconciles every StatefulSet; see the module docstring."""

    settings: Settings

    def wire(self, nc: Any) -> None:
        self.sets = self.primary
        self.pods = self.watch(Informer(nc, "Pod"), self._keys_of_pod)
        self.revisions = self.watch(Informer(nc, "ControllerRevision"), sts_key_of)
        self.claims = self.watch(Informer(nc, "PersistentVolumeClaim"), self._keys_of_claim)


    # -- handlers only enqueue ------------------------------------------------------------

    def _keys_of_pod(self, pod: Object) -> list[str]:
        keys = sts_key_of(pod)
        if keys or controller_of(pod) is not None:
            return keys
        # an orphan: the sets whose name it carries (adoption candidates)
        ns = pod.metadata.namespace or "default"
        return [object_key(s) for s in self.sets.list(ns)
                if reconcile.is_member(s, pod)]  # type: ignore[arg-type]

    def _keys_of_claim(self, claim: Object) -> list[str]:
        ns = claim.metadata.namespace or "default"
        return [object_key(s) for s in self.sets.list(ns)
                if reconcile.claim_ordinal(s, claim.metadata.name) is not None]  # type: ignore[arg-type]

    # -- one reconcile ----------------------------------------------------------------------

    async def reconcile(self, key: str, _ctx: Context | None = None) -> float | None:
        ns, name = split_key(key)
        if not self.caught_up(key, self.pods):
            return 0.1
        sts = self.sets.get(key)
        if sts is None:
            self.expectations.forget(key)
            return None
        assert isinstance(sts, StatefulSet)
        uid = sts.metadata.uid or ""
        pods = await self._claim(sts)
        revs: list[ControllerRevision] = [
            r for r in self.revisions.by_index("owner", uid)
            if (c := controller_of(r)) is not None and c.uid == uid
        ]
        in_use = {reconcile.revision_of(p) for p in pods} | {sts.status.currentRevision, sts.status.updateRevision}
        hist = revisions.history(sts, sts.spec.template, sts.status.collisionCount, sts.spec.revisionHistoryLimit,
                                 revs, in_use)
        if sts.metadata.deletionTimestamp is None and not await history.settle(self.store, sts, hist):
            return 0.1  # collisionCount bumped: the next reconcile hashes again
        claims: dict[str, PersistentVolumeClaim] = {
            c.metadata.name: c for c in self.claims.list(ns)  # type: ignore[misc]
            if reconcile.claim_ordinal(sts, c.metadata.name) is not None
        }
        plan = reconcile.plan(sts, pods, claims, hist, self.clock(), self.settings)

        await asyncio.gather(*(self._claim_owners(sts, n) for n in plan.claim_owners))
        await asyncio.gather(*(self._create_claim(sts, c) for c in plan.create_claims))
        created = [n for n in await asyncio.gather(*(self._create_pod(sts, p) for p in plan.create)) if n]
        deleted = [n for n in await asyncio.gather(*(self._delete_pod(sts, n) for n in plan.delete)) if n]
        self.expect(key, creating=created, deleting=deleted)
        for n in plan.delete_claims:
            with contextlib.suppress(errors.NotFound):
                await self.store.delete("PersistentVolumeClaim", ns, n)
        if plan.status != sts.status:
            await self._write_status(sts, plan.status)
        return plan.requeue_after

    async def _claim(self, sts: StatefulSet) -> list[Pod]:
        """The pods ``sts`` owns after adopting and releasing as the ControllerRefManager says."""
        ns = sts.metadata.namespace or "default"
        claims = reconcile.claim_pods(sts, self.pods.list(ns))  # type: ignore[arg-type]
        c = reconcile.controller(sts)
        if claims.adopt:
            try:
                fresh = await self.store.get("StatefulSet", ns, sts.metadata.name)
            except errors.NotFound:
                fresh = None
            why = controllerref.may_adopt(fresh, c)
            if why is not None:
                raise errors.Conflict(f'statefulsets "{sts.metadata.name}" {why}: not adopting')

        async def write(pod: Pod, change: Callable[..., Any]) -> Pod | None:
            try:
                return await self.store.mutate("Pod", ns, pod.metadata.name, lambda cur: change(cur, c))  # type: ignore[return-value]
            except errors.NotFound:
                return None

        adopted = await asyncio.gather(*(write(p, controllerref.adopted) for p in claims.adopt))
        await asyncio.gather(*(write(p, controllerref.released) for p in claims.release))
        mine = {p.metadata.name for p in adopted if p is not None and (r := controller_of(p)) and r.uid == c.uid}
        adopting = {p.metadata.name for p in claims.adopt}
        return [p for p in claims.owned if p.metadata.name not in adopting or p.metadata.name in mine]

    async def _write_status(self, sts: StatefulSet, status: Any) -> None:
        def change(current: Object) -> Object | None:
            if current.metadata.uid != sts.metadata.uid or current.status == status:  # type: ignore[attr-defined]
                return None
            if current.metadata.generation != sts.metadata.generation:
                return None  # a newer spec: the next reconcile reports on it
            keep = current.status.collisionCount  # type: ignore[attr-defined]
            return replace(current, status=replace(status, collisionCount=keep))

        with contextlib.suppress(errors.NotFound):
            await self.store.mutate("StatefulSet", sts.metadata.namespace, sts.metadata.name, change)

    async def _claim_owners(self, sts: StatefulSet, name: str) -> None:
        ns = sts.metadata.namespace
        ordinal = reconcile.claim_ordinal(sts, name)
        assert ordinal is not None
        start = reconcile.start_ordinal(sts)
        in_range = start <= ordinal < start + sts.spec.replicas
        pod = self.pods.get_by_name(ns, reconcile.pod_name(sts, ordinal))
        ours = pod if pod is not None and (r := controller_of(pod)) is not None and r.uid == sts.metadata.uid else None

        def change(current: Object) -> Object | None:
            return reconcile.with_retention_owners(current, sts, ours, in_range=in_range)  # type: ignore[arg-type]

        with contextlib.suppress(errors.NotFound):
            await self.store.mutate("PersistentVolumeClaim", ns, name, change)

    async def _create_claim(self, sts: StatefulSet, claim: PersistentVolumeClaim) -> None:
        pod = claim.metadata.name.removeprefix(f"{_template_of(sts, claim.metadata.name)}-")
        await self.create(sts, claim, lambda _created: f"create Claim {claim.metadata.name} Pod {pod} "
                                                       f"in StatefulSet {sts.metadata.name} success")

    async def _create_pod(self, sts: StatefulSet, pod: Pod) -> str | None:
        return await self.create(sts, pod, lambda created: f"create Pod {created.metadata.name} "
                                                           f"in StatefulSet {sts.metadata.name} successful")

    async def _delete_pod(self, sts: StatefulSet, name: str) -> str | None:
        return await self.delete(sts, "Pod", name, f"delete Pod {name} in StatefulSet {sts.metadata.name} successful")


def _template_of(sts: StatefulSet, claim: str) -> str:
    return next((t.metadata.name for t in sts.spec.volumeClaimTemplates
                 if claim.startswith(f"{t.metadata.name}-{sts.metadata.name}-")), "")


async def run(ctx: Any, stop: asyncio.Event) -> None:
    """Entry point for ``kyb serve statefulset``."""
    sc = StatefulSetController(ctx.nc, ctx.store)
    await run_as_leader(ctx, "kyb-statefulset", sc, stop)
