"""The proxy service (one per node): serves every Service's ClusterIP, NodePort and
LoadBalancer addresses on this machine and relays connections to ready endpoints.

Informers on Services and EndpointSlices only flag "something changed"; a single sync
loop then recomputes the whole routing table from the caches (:func:`plan.routes`) and
moves the data plane to it — level-triggered, so a burst of changes is one sync. Listeners
that fail to bind are retried on the next sync and at least every ``retry_seconds``.

Options: ``node_address`` (where NodePorts listen, default 127.0.0.1), ``proxy_retry_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from kyb.informer import Informer
from kyb.serve import ServiceContext
from schemas.core import Service
from schemas.discovery import EndpointSlice
from schemas.meta import Object
from services.proxy.dataplane import DataPlane
from services.proxy.plan import Frontend, routes

DEFAULT_NODE_ADDRESS = "127.0.0.1"


class Proxy:
    """Caches in, data plane out."""

    def __init__(self, nc: Any, *, node_address: str = DEFAULT_NODE_ADDRESS, retry_seconds: float = 5.0, log: Any = None) -> None:
        self.node_address = node_address
        self.retry_seconds = retry_seconds
        self.log = log
        self.services = Informer(nc, "Service")
        self.slices = Informer(nc, "EndpointSlice")
        self.dataplane = DataPlane(on_error=self._bind_failed)
        self.changed = asyncio.Event()
        self.synced_once = asyncio.Event()
        for inf in (self.services, self.slices):
            inf.add_handler(self._on_change)

    def _on_change(self, event: str, new: Object | None, old: Object | None, headers: dict[str, str]) -> None:
        self.changed.set()

    def _bind_failed(self, frontend: Frontend, e: Exception) -> None:
        if self.log is not None:
            self.log.warning("cannot listen", protocol=frontend.protocol, address=f"{frontend.ip}:{frontend.port}", error=str(e))

    async def sync(self) -> None:
        table = routes(
            [s for s in self.services.list() if isinstance(s, Service)],
            [s for s in self.slices.list() if isinstance(s, EndpointSlice)],
            self.node_address,
        )
        await self.dataplane.apply(table)

    async def run(self, stop: asyncio.Event) -> None:
        for inf in (self.services, self.slices):
            await inf.start()
        try:
            for inf in (self.services, self.slices):
                await inf.wait_synced(30)
            self.changed.set()
            stopping = asyncio.ensure_future(stop.wait())
            while not stop.is_set():
                changed = asyncio.ensure_future(self.changed.wait())
                timeout = self.retry_seconds if self.dataplane.failed else None
                await asyncio.wait({changed, stopping}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
                if stop.is_set():
                    break
                self.changed.clear()
                await self.sync()
                self.synced_once.set()
            stopping.cancel()
        finally:
            with contextlib.suppress(Exception):
                await self.dataplane.close()
            for inf in (self.services, self.slices):
                await inf.stop()


async def run(ctx: ServiceContext, stop: asyncio.Event) -> None:
    opts = ctx.options
    proxy = Proxy(
        ctx.nc,
        node_address=str(opts.get("node_address", DEFAULT_NODE_ADDRESS)),
        retry_seconds=float(opts.get("proxy_retry_seconds", 5.0)),
        log=ctx.log,
    )
    ctx.log.info("proxy started", node_address=proxy.node_address)
    await proxy.run(stop)
