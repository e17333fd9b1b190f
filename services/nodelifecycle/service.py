"""The node lifecycle service: notices nodes whose kubelet went silent, taints them, evicts
their pods, and force-deletes pods bound to nodes that are gone.

Informers on Nodes, Leases (``kube-node-lease/<node>``) and Pods (indexed by node) feed one
controller keyed by node (``_.<node>``). The worker re-reads the caches, remembers when it last
saw each node's heartbeat change, asks :mod:`services.nodelifecycle.reconcile` what to do and
applies it: the node's conditions and taints with compare-and-set, pods' Ready condition,
and deletions with grace period 0 (the node's kubelet is not there to finish a graceful one).
Runs as the leader's work; a new leader gives every node a full grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as _dt
from collections.abc import Callable
from typing import Any

from opentelemetry.context import Context

from kyb import errors
from kyb.controller import Controller
from kyb.informer import Informer, by_node_name, start_all, stop_all
from kyb.leading import run_as_leader
from kyb.serve import ServiceContext
from kyb.store import Store, split_key
from schemas.core import Node
from schemas.meta import Object
from schemas.pod import Pod
from services.nodelifecycle.reconcile import (
    Eviction,
    Health,
    Settings,
    desired_node,
    is_stale,
    not_ready_pod,
    observe,
    plan_node,
    plan_orphans,
)

SOURCE = "node-controller"
LEASE_NAMESPACE = "kube-node-lease"


def settings_from(options: dict[str, Any]) -> Settings:
    base = Settings()
    return Settings(
        node_monitor_grace_period=float(options.get("node_monitor_grace_period", base.node_monitor_grace_period)),
        pod_eviction_timeout=float(options.get("pod_eviction_timeout", base.pod_eviction_timeout)),
        orphan_quarantine=float(options.get("orphan_quarantine", base.orphan_quarantine)),
    )


class NodeLifecycle:
    """Informers, the heartbeat memory and the reconcile that applies plans."""

    def __init__(
        self,
        nc: Any,
        store: Store,
        settings: Settings,
        *,
        workers: int = 4,
        resync_seconds: float = 30.0,
        clock: Callable[[], _dt.datetime] | None = None,
        log: Any = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock or (lambda: _dt.datetime.now(_dt.UTC))
        self.nodes = Informer(nc, "Node")
        self.leases = Informer(nc, "Lease")
        self.pods = Informer(nc, "Pod", indexers={"node": by_node_name})
        self.health: dict[str, Health] = {}  # node name -> last heartbeat seen
        self.orphans_seen: dict[str, _dt.datetime] = {}  # pod uid -> first seen bound to a missing node
        self.controller = Controller(
            "nodelifecycle", self.reconcile, workers=workers, resync_seconds=resync_seconds, keys=self._keys
        )
        self.log = log
        self.nodes.add_handler(self._on_node)
        self.leases.add_handler(self._on_lease)
        self.pods.add_handler(self._on_pod)

    async def start(self) -> None:
        await start_all((self.nodes, self.leases, self.pods), timeout=None)

    async def stop(self) -> None:
        await stop_all((self.nodes, self.leases, self.pods))

    async def lead(self, stop_leading: asyncio.Event) -> None:
        """The leader's work: what a previous term saw of heartbeats is not trusted."""
        self.health.clear()
        self.orphans_seen.clear()
        await self.controller.run(stop_leading)

    # -- handlers: only enqueue ----------------------------------------------------------------

    def _keys(self) -> list[str]:
        names = {split_key(k)[1] for k in self.nodes.keys()}
        names.update(p.spec.nodeName for p in self.pods.list() if p.spec.nodeName)  # type: ignore[attr-defined]
        return [f"_.{n}" for n in names]

    def _on_node(self, event: str, new: Object | None, old: Object | None, headers: dict[str, str]) -> None:
        obj = new or old
        if obj is not None:
            self.controller.enqueue_from_headers(f"_.{obj.metadata.name}", headers)

    def _on_lease(self, event: str, new: Object | None, old: Object | None, headers: dict[str, str]) -> None:
        obj = new or old
        if obj is not None and obj.metadata.namespace == LEASE_NAMESPACE:
            self.controller.enqueue_from_headers(f"_.{obj.metadata.name}", headers)

    def _on_pod(self, event: str, new: Object | None, old: Object | None, headers: dict[str, str]) -> None:
        for pod in (new, old):
            node_name = getattr(getattr(pod, "spec", None), "nodeName", "")
            if not node_name:
                continue
            node = self.nodes.get(f"_.{node_name}")
            # Pods on healthy nodes need nothing from this controller.
            if node is None or any(t.effect == "NoExecute" for t in node.spec.taints):  # type: ignore[attr-defined]
                self.controller.enqueue_from_headers(f"_.{node_name}", headers)
                return

    # -- the worker ----------------------------------------------------------------------------

    async def reconcile(self, key: str, ctx: Context | None = None) -> float | None:
        _, name = split_key(key)
        now = self.clock()
        node = self.nodes.get(key)
        pods: list[Pod] = self.pods.by_index("node", name)
        if node is None:
            self.health.pop(name, None)
            return await self._collect_orphans(pods, now)
        assert isinstance(node, Node)
        lease = self.leases.get(f"{LEASE_NAMESPACE}.{name}")
        health = observe(self.health.get(name), lease, node, now)  # type: ignore[arg-type]
        self.health[name] = health
        plan = plan_node(node, health, pods, now, self.settings)
        if plan.node is not None:
            await self._write_node(node, health, lease, now)
            if plan.became is not None:
                await self.store.record_event(
                    node, plan.became, f"Node {name} status is now: {plan.became}", source=SOURCE
                )
        for pod in plan.not_ready:
            await self._mark_not_ready(pod, now)
        await self._evict(plan.evict)
        return plan.requeue_after

    async def _write_node(self, node: Node, health: Health, lease: Any, now: _dt.datetime) -> None:
        def fn(current: Object) -> Object | None:
            if current.metadata.uid != node.metadata.uid:
                return None
            assert isinstance(current, Node)
            # The stored node may carry a heartbeat newer than the cache's.
            stale = is_stale(observe(health, lease, current, now), now, self.settings)
            desired = desired_node(current, stale, now)
            return None if desired is current else desired

        with contextlib.suppress(errors.NotFound):
            await self.store.mutate("Node", None, node.metadata.name, fn)

    async def _mark_not_ready(self, pod: Pod, now: _dt.datetime) -> None:
        def fn(current: Object) -> Object | None:
            if current.metadata.uid != pod.metadata.uid or current.metadata.deletionTimestamp:
                return None
            return not_ready_pod(current, now)  # type: ignore[arg-type]

        with contextlib.suppress(errors.NotFound):
            await self.store.mutate("Pod", pod.metadata.namespace, pod.metadata.name, fn)

    async def _collect_orphans(self, pods: list[Pod], now: _dt.datetime) -> float | None:
        for pod in pods:
            self.orphans_seen.setdefault(pod.metadata.uid or "", now)
        evict, requeue = plan_orphans(pods, self.orphans_seen, now, self.settings)
        await self._evict(evict)
        return requeue

    async def _evict(self, evictions: list[Eviction]) -> None:
        """Delete each pod with grace period 0, unless it was replaced by a namesake meanwhile."""
        for ev in evictions:
            meta = ev.pod.metadata
            for _ in range(5):
                try:
                    current = await self.store.get("Pod", meta.namespace, meta.name)
                    if current.metadata.uid != meta.uid:
                        break
                    await self.store.delete(
                        "Pod",
                        meta.namespace,
                        meta.name,
                        resource_version=current.metadata.resourceVersion,
                        grace_period_seconds=0,
                    )
                except errors.NotFound:
                    break
                except errors.Conflict:
                    continue
                await self.store.record_event(ev.pod, ev.reason, ev.message, source=SOURCE)
                if self.log is not None:
                    self.log.info("pod deleted", pod=f"{meta.namespace}/{meta.name}", reason=ev.reason)
                break
            else:
                raise errors.Conflict(f'pods "{meta.name}": kept changing while being deleted')
            self.orphans_seen.pop(meta.uid or "", None)


async def run(ctx: ServiceContext, stop: asyncio.Event) -> None:
    """Entry point for ``kyb serve nodelifecycle``."""
    opts = ctx.options
    lifecycle = NodeLifecycle(
        ctx.nc,
        ctx.store,
        settings_from(opts),
        workers=int(opts.get("nodelifecycle_workers", 4)),
        log=ctx.log,
    )
    await run_as_leader(ctx, "kyb-nodelifecycle", lifecycle, stop, work=lifecycle.lead, **dataclasses.asdict(lifecycle.settings))
