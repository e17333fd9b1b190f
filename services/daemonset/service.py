"""The DaemonSet controller's async shell: informers on DaemonSets, Nodes, Pods and
ControllerRevisions in, ``reconcile.history`` and ``reconcile.plan`` out through the store.

Any node change enqueues every DaemonSet (a node appeared, went, or its labels or taints
changed); pod changes enqueue their controlling DaemonSet. Pods created or deleted but not yet
seen by the pod informer are *expected*; the DaemonSet waits for them before planning again,
so a slow watch never puts a second pod on a node. The history is settled before any pod is
placed: a revision that already exists under the current name but holds another template (a
hash collision) bumps ``status.collisionCount``, which changes the hash. Runs as the leader's work of lease
``kyb-daemonset``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from msgspec.structs import replace
from opentelemetry.context import Context

from kyb import errors, history
from kyb.controller import controller_keys
from kyb.informer import Informer
from kyb.leading import run_as_leader
from kyb.shell import ControllerShell
from kyb.store import split_key
from schemas.apps import DaemonSet
from schemas.helpers import controller_of
from schemas.meta import Object
from services.daemonset import reconcile
from services.daemonset.reconcile import Settings

SOURCE = "daemonset-controller"


ds_key_of_pod = controller_keys("DaemonSet")


class DaemonSetController(ControllerShell, kind="DaemonSet", name="daemonset", source=SOURCE, settings=Settings):
    """Reconciles every DaemonSet; see the module docstring."""

    settings: Settings

    def wire(self, nc: Any) -> None:
        self.daemonsets = self.primary
        self.nodes = self.watch(Informer(nc, "Node"))
        self.nodes.add_handler(self._on_node)
        self.pods = self.watch(Informer(nc, "Pod", indexers={"daemonset": ds_key_of_pod}), ds_key_of_pod)
        self.revisions = self.watch(Informer(nc, "ControllerRevision"), ds_key_of_pod)


    # -- handlers only enqueue ------------------------------------------------------------

    def _on_node(self, event: str, new: Object | None, old: Object | None, headers: dict[str, str]) -> None:
        if new is not None and old is not None and new.metadata.labels == old.metadata.labels:
            if new.spec == old.spec and _ready(new) == _ready(old):  # type: ignore[attr-defined]
                return  # a heartbeat: nothing a DaemonSet decides on changed
        for key in self.daemonsets.keys():
            self.controller.enqueue_from_headers(key, headers)

    # -- one reconcile ----------------------------------------------------------------------

    async def reconcile(self, key: str, _ctx: Context | None = None) -> float | None:
        ns, name = split_key(key)
        if not self.caught_up(key, self.pods):
            return 0.1
        try:
            ds: DaemonSet = await self.store.get("DaemonSet", ns, name)  # type: ignore[assignment]
        except errors.NotFound:
            self.expectations.forget(key)
            return None
        if ds.metadata.deletionTimestamp is not None:
            return None
        uid = ds.metadata.uid or ""
        pods = [p for p in self.pods.by_index("owner", uid) if (r := controller_of(p)) is not None and r.uid == uid]
        revisions = [r for r in self.revisions.by_index("owner", uid) if (c := controller_of(r)) is not None and c.uid == uid]
        hist = reconcile.history(ds, revisions, pods)
        current_hash = hist.current_hash if await history.settle(self.store, ds, hist) else None
        if current_hash is None:
            return 0.1  # collisionCount bumped: the next reconcile hashes again
        nodes = self.nodes.list()
        plan = reconcile.plan(ds, nodes, pods, self.clock(), self.settings, current_hash=current_hash)  # type: ignore[arg-type]

        deleted = [n for n in await asyncio.gather(*(self._delete_pod(ds, n) for n in plan.delete)) if n]
        created = [n for n in await asyncio.gather(*(self._create_pod(ds, p) for p in plan.create)) if n]
        self.expect(key, creating=created, deleting=deleted)
        if plan.status != ds.status:

            def write_status(current: Object) -> Object | None:
                if current.metadata.uid != uid or current.status == plan.status:  # type: ignore[attr-defined]
                    return None
                if current.metadata.generation != ds.metadata.generation:
                    return None  # a newer spec: the next reconcile reports on it
                return replace(current, status=plan.status)

            with contextlib.suppress(errors.NotFound):
                await self.store.mutate("DaemonSet", ns, name, write_status)
        return plan.requeue_after

    async def _create_pod(self, ds: DaemonSet, pod: Object) -> str | None:
        node = reconcile.pinned_node(pod)  # type: ignore[arg-type]
        return await self.create(ds, pod, lambda created: f"Created pod: {created.metadata.name} on node {node}")

    async def _delete_pod(self, ds: DaemonSet, name: str) -> str | None:
        return await self.delete(ds, "Pod", name, f"Deleted pod: {name}")


def _ready(node: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)


async def run(ctx: Any, stop: asyncio.Event) -> None:
    """Entry point for ``kyb serve daemonset``."""
    dc = DaemonSetController(ctx.nc, ctx.store)
    await run_as_leader(ctx, "kyb-daemonset", dc, stop)
