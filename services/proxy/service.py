"""The proxy service (one per node): makes every Service's ClusterIP, NodePort and
LoadBalancer addresses work on this node, in one of two modes (option ``proxy_mode``):

- ``nftables`` (the default where the node runs ``network: cni`` and we are root with ``nft``):
  the kernel does it, from table ``ip kyb-proxy`` (:mod:`services.proxy.kernel`);
- ``userspace``: listening sockets relaying each connection to a ready endpoint (the data plane).

Informers on Services and EndpointSlices only flag "something changed"; a single sync
loop then recomputes the desired state from the caches and moves the mode's plane to it —
level-triggered, so a burst of changes is one sync. Userspace listeners that fail to bind
and failed nft transactions are retried on the next sync and at least every ``retry_seconds``.

Options: ``proxy_mode`` (nftables|userspace, default as above), ``node_address`` (userspace:
where NodePorts listen, default 127.0.0.1), ``proxy_retry_seconds``; nftables: ``node_name``,
``cluster_cidr`` (10.244.0.0/16), ``service_cidr`` (10.96.0.0/12), ``netns`` (program that
network namespace instead of our own), ``proxy_cleanup`` (remove the table when stopping).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from kyb.informer import Informer, start_all, stop_all
from kyb.serve import ServiceContext
from schemas.core import Service
from schemas.discovery import EndpointSlice
from schemas.meta import Object
from services.proxy.dataplane import DataPlane
from services.proxy.plan import Frontend, routes

DEFAULT_NODE_ADDRESS = "127.0.0.1"


def choose_mode(options: dict[str, Any]) -> tuple[str, str]:
    """(mode, why) for these options: ``proxy_mode`` when given, else nftables where it can work."""
    from services.proxy import kernel

    asked = str(options.get("proxy_mode") or "")
    if asked in ("nftables", "userspace"):
        return asked, "proxy_mode"
    if asked:
        raise ValueError(f"unknown proxy_mode {asked!r}: expected nftables or userspace")
    if str(options.get("network") or "loopback") != "cni":
        return "userspace", "the pod network is not cni"
    missing = kernel.available()
    return ("userspace", missing) if missing else ("nftables", "network cni, root and nft")


class Proxy:
    """Caches in, data plane (userspace) or nftables table (``kernel``) out."""

    def __init__(self, nc: Any, *, node_address: str = DEFAULT_NODE_ADDRESS, retry_seconds: float = 5.0, log: Any = None,
                 kernel: Any = None, cleanup: bool = False) -> None:
        self.node_address = node_address
        self.retry_seconds = retry_seconds
        self.log = log
        self.kernel = kernel
        self.cleanup = cleanup
        self.failed = False
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
        services = [s for s in self.services.list() if isinstance(s, Service)]
        slices = [s for s in self.slices.list() if isinstance(s, EndpointSlice)]
        if self.kernel is not None:
            from services.proxy.kernel import NftError

            try:
                await self.kernel.sync(services, slices)
                self.failed = False
            except NftError as e:
                self.failed = True
                if self.log is not None:
                    self.log.warning("nft transaction failed", error=str(e))
            return
        await self.dataplane.apply(routes(services, slices, self.node_address))

    async def run(self, stop: asyncio.Event) -> None:
        try:
            if self.kernel is not None:
                await self.kernel.start()
            await start_all((self.services, self.slices))
            self.changed.set()
            stopping = asyncio.ensure_future(stop.wait())
            while not stop.is_set():
                changed = asyncio.ensure_future(self.changed.wait())
                timeout = self.retry_seconds if self.dataplane.failed or self.failed else None
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
            if self.kernel is not None:
                with contextlib.suppress(Exception):
                    await self.kernel.close(remove=self.cleanup)
            await stop_all((self.services, self.slices))


def _flag(value: Any) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


async def run(ctx: ServiceContext, stop: asyncio.Event) -> None:
    opts = ctx.options
    mode, why = choose_mode(opts)
    kernel = None
    if mode == "nftables":
        from services.proxy.kernel import NftProxy
        from services.proxy.nftplan import Settings

        settings = Settings(node_name=str(opts.get("node_name") or ""), node_names=ctx.local_nodes(),
                            cluster_cidr=str(opts.get("cluster_cidr") or "10.244.0.0/16"),
                            service_cidr=str(opts.get("service_cidr") or "10.96.0.0/12"))
        kernel = NftProxy(settings, netns=opts.get("netns") or None, log=ctx.log)
    proxy = Proxy(
        ctx.nc,
        node_address=str(opts.get("node_address", DEFAULT_NODE_ADDRESS)),
        retry_seconds=float(opts.get("proxy_retry_seconds", 5.0)),
        log=ctx.log,
        kernel=kernel,
        cleanup=_flag(opts.get("proxy_cleanup", False)),
    )
    ctx.log.info("proxy started", mode=mode, why=why, node_address=proxy.node_address)
    await proxy.run(stop)
