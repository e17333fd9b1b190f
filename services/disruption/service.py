"""The disruption controller (kube-controller-manager's): keeps every PodDisruptionBudget's
``status`` — expected, healthy and desired pods, the disruptions allowed now, the pods the api
let go and not yet seen deleted — from informers on budgets, pods and the controllers whose
replicas a percentage or ``maxUnavailable`` is counted against (ReplicaSets, StatefulSets,
ReplicationControllers). The rules are :func:`schemas.policy.budget_status` (pure); the api's
eviction (``kyb.api.evict``) reads the status and takes one disruption per eviction with CAS.
Runs as the leader's work of lease ``kyb-disruption``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from msgspec.structs import replace
from opentelemetry.context import Context

from kyb import errors
from kyb.controller import Controller
from kyb.informer import Informer, start_all, stop_all
from kyb.leading import run_as_leader
from kyb.store import Store, split_key
from schemas.helpers import object_key
from schemas.meta import Object
from schemas.pod import Pod
from schemas.policy import PodDisruptionBudget, Scale, budget_status, selects

SCALED_KINDS = ("ReplicaSet", "StatefulSet", "ReplicationController")


class DisruptionController:
    """Reconciles every PodDisruptionBudget's status; see the module docstring."""

    def __init__(self, nc: Any, store: Store, *, workers: int = 2,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.store = store
        self.clock = clock or (lambda: datetime.now(UTC))
        self.budgets = Informer(nc, "PodDisruptionBudget")
        self.pods = Informer(nc, "Pod")
        self.scalers = {kind: Informer(nc, kind) for kind in SCALED_KINDS}
        # every 30 s at least: a disrupted pod that was never deleted leaves the map after 2 min
        self.controller = Controller("disruption", self.reconcile, workers=workers, keys=self.budgets.keys,
                                     resync_seconds=30)
        self.budgets.add_handler(self.controller.handler(lambda b: [object_key(b)]))
        self.pods.add_handler(self.controller.handler(self._budgets_of_pod))
        for inf in self.scalers.values():
            inf.add_handler(self.controller.handler(self._budgets_in_namespace))

    @property
    def informers(self) -> list[Informer]:
        return [self.budgets, self.pods, *self.scalers.values()]

    async def start(self) -> None:
        await start_all(self.informers)

    async def stop(self) -> None:
        await stop_all(self.informers)

    def _budgets_of_pod(self, pod: Pod) -> list[str]:
        return [object_key(b) for b in self.budgets.list(pod.metadata.namespace or "default")
                if isinstance(b, PodDisruptionBudget) and selects(b, pod)]

    def _budgets_in_namespace(self, obj: Object) -> list[str]:
        return [object_key(b) for b in self.budgets.list(obj.metadata.namespace or "default")]

    def _scales(self, pods: list[Pod]) -> dict[str, Scale | None]:
        out: dict[str, Scale | None] = {}
        for pod in pods:
            ref = next((o for o in pod.metadata.ownerReferences if o.controller), None)
            if ref is None or ref.uid in out:
                continue
            inf = self.scalers.get(ref.kind)
            owner = inf.get_by_name(pod.metadata.namespace or "default", ref.name) if inf is not None else None
            if owner is None or owner.metadata.uid != ref.uid:
                out[ref.uid] = None
            else:
                out[ref.uid] = Scale(ref.kind, ref.name, getattr(owner.spec, "replicas", None) or 0)  # type: ignore[attr-defined]
        return out

    async def reconcile(self, key: str, _ctx: Context | None = None) -> float | None:
        ns, _ = split_key(key)
        pdb = self.budgets.get(key)
        if not isinstance(pdb, PodDisruptionBudget) or pdb.metadata.deletionTimestamp:
            return None
        pods = [p for p in self.pods.list(ns) if isinstance(p, Pod) and selects(pdb, p)]
        status = budget_status(pdb, pods, self._scales(pods), self.clock())
        if status != pdb.status:
            await self._write_status(pdb, status)
        # entries of pods let go wait for their deletion; look again when the oldest expires
        return 10.0 if status.disruptedPods else None

    async def _write_status(self, pdb: PodDisruptionBudget, status: Any) -> None:
        def change(current: Object) -> Object | None:
            if not isinstance(current, PodDisruptionBudget) or current.metadata.uid != pdb.metadata.uid:
                return None
            if current.metadata.generation != pdb.metadata.generation:
                return None  # a newer spec: the next reconcile reports on it
            if current.status.disruptedPods != pdb.status.disruptedPods:
                return None  # an eviction took a disruption meanwhile: recompute with it
            return None if current.status == status else replace(current, status=status)

        with contextlib.suppress(errors.NotFound):
            written = await self.store.mutate("PodDisruptionBudget", pdb.metadata.namespace, pdb.metadata.name, change)
            if isinstance(written, PodDisruptionBudget) and written.status != status:
                self.controller.enqueue(object_key(pdb))


async def run(ctx: Any, stop: asyncio.Event) -> None:
    """Entry point for ``kyb serve disruption``."""
    dc = DisruptionController(ctx.nc, ctx.store)
    await run_as_leader(ctx, "kyb-disruption", dc, stop)
