"""The nodeipam service: gives every Node ``spec.podCIDR``/``podCIDRs`` from the cluster CIDR.

Kubernetes' node IPAM controller (range allocator). An informer on Nodes feeds one controller
keyed by node; the worker gives a Node without a range the next free one of
:class:`services.nodeipam.reconcile.CidrSet`, written compare-and-set (a Node that got a range
meanwhile keeps its own and the one picked goes back). When a Node is gone its range is free
again. Runs as the leader's work; each new term rebuilds the set from the Nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from kyb import errors
from kyb.controller import Controller
from kyb.informer import Informer, start_all, stop_all
from kyb.leading import run_as_leader
from kyb.serve import ServiceContext
from kyb.store import Store, split_key
from schemas.core import Node
from schemas.meta import Object
from services.nodeipam.reconcile import (
    DEFAULT_CLUSTER_CIDR,
    DEFAULT_NODE_MASK,
    CidrExhausted,
    CidrSet,
    Settings,
    node_cidr,
    rebuild,
    wants_cidr,
    with_cidr,
)

SOURCE = "nodeipam"


def settings_from(options: dict[str, Any]) -> Settings:
    return Settings(
        cluster_cidr=str(options.get("cluster_cidr") or DEFAULT_CLUSTER_CIDR),
        node_mask=int(options.get("node_cidr_mask_size") or DEFAULT_NODE_MASK),
    )


class NodeIpam:
    def __init__(self, nc: Any, store: Store, settings: Settings, *, log: Any = None) -> None:
        self.store = store
        self.settings = settings
        self.log = log
        self.nodes = Informer(nc, "Node")
        self.cidrs = CidrSet(settings.cluster_cidr, settings.node_mask)  # checks the settings
        self.held: dict[str, str] = {}  # node name -> the range it holds
        self.controller = Controller("nodeipam", self.reconcile, workers=1, resync_seconds=60, keys=self.nodes.keys)
        self.nodes.add_handler(self._on_node)

    async def start(self) -> None:
        await start_all((self.nodes,), timeout=None)

    async def stop(self) -> None:
        await stop_all((self.nodes,))

    async def lead(self, stop_leading: asyncio.Event) -> None:
        """A new term trusts only the Nodes: the set is rebuilt from their ranges."""
        self.cidrs, self.held = rebuild([n for n in self.nodes.list() if isinstance(n, Node)], self.settings)
        await self.controller.run(stop_leading)

    def _on_node(self, event: str, new: Object | None, old: Object | None, headers: dict[str, str]) -> None:
        obj = new or old
        if obj is not None:
            self.controller.enqueue_from_headers(f"_.{obj.metadata.name}", headers)

    async def reconcile(self, key: str, _ctx: Any = None) -> float | None:
        _, name = split_key(key)
        node = self.nodes.get(key)
        if not isinstance(node, Node):
            if self._release(name):
                for waiting in self.nodes.list():  # a range is free again: nodes waiting for one
                    if isinstance(waiting, Node) and wants_cidr(waiting):
                        self.controller.enqueue(f"_.{waiting.metadata.name}")
            return None
        cidr = node_cidr(node)
        if cidr:
            if self.held.get(name) != cidr and self.cidrs.occupy(cidr):
                self._release(name)
                self.held[name] = cidr  # written by someone else (or an earlier term)
            return None
        if not wants_cidr(node):
            return None
        try:
            picked = self.cidrs.allocate()
        except CidrExhausted as e:
            await self._event(node, "CIDRNotAvailable", f"Node {name} status is now: CIDRNotAvailable ({e})")
            return 30.0
        uid = node.metadata.uid

        def fn(current: Object) -> Object | None:
            if current.metadata.uid != uid or not isinstance(current, Node) or node_cidr(current):
                return None
            return with_cidr(current, picked)

        try:
            written = await self.store.mutate("Node", None, name, fn)
        except errors.NotFound:
            written = None
        except BaseException:
            self.cidrs.release(picked)
            raise
        if written is None or node_cidr(written) != picked:
            self.cidrs.release(picked)
            return None
        self._release(name)
        self.held[name] = picked
        if self.log is not None:
            self.log.info("node pod CIDR assigned", node=name, pod_cidr=picked)
        await self._event(written, "CIDRAssigned", f"Node {name} got pod CIDR {picked}")
        return None

    def _release(self, name: str) -> bool:
        cidr = self.held.pop(name, None)
        if cidr is not None and cidr not in self.held.values():
            self.cidrs.release(cidr)
            return True
        return False

    async def _event(self, node: Node, reason: str, message: str) -> None:
        with contextlib.suppress(Exception):
            await self.store.record_event(node, reason, message, source=SOURCE)


async def run(ctx: ServiceContext, stop: asyncio.Event) -> None:
    """Entry point for ``kyb serve nodeipam``."""
    ipam = NodeIpam(ctx.nc, ctx.store, settings_from(ctx.options), log=ctx.log)
    await run_as_leader(ctx, "kyb-nodeipam", ipam, stop, work=ipam.lead,
                        cluster_cidr=ipam.settings.cluster_cidr, node_mask=ipam.settings.node_mask)
