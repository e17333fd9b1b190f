"""The cluster DNS service: answers ``<svc>.<ns>.svc.cluster.local`` and friends (see
:mod:`services.dns.plan`) from Services and EndpointSlices.

Informers only flag a change; one loop rebuilds the zone from the caches and swaps it in, so
queries always see a whole, consistent zone.

Options: ``dns_address`` (default 127.253.255.53), ``dns_port`` (default 53 when the process
may bind it, else 10053), ``cluster_domain`` (default cluster.local), ``dns_ttl`` (default 5).
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
from services.dns.plan import DEFAULT_DOMAIN, Zone, build_zone
from services.dns.server import DnsServer

DEFAULT_ADDRESS = "127.253.255.53"
DEFAULT_PORT = 53
FALLBACK_PORT = 10053


class ClusterDns:
    def __init__(self, nc: Any, *, domain: str = DEFAULT_DOMAIN) -> None:
        self.domain = domain
        self.zone = Zone(domain=domain)
        self.services = Informer(nc, "Service")
        self.slices = Informer(nc, "EndpointSlice")
        self.changed = asyncio.Event()
        for inf in (self.services, self.slices):
            inf.add_handler(self._on_change)

    def _on_change(self, event: str, new: Object | None, old: Object | None, headers: dict[str, str]) -> None:
        self.changed.set()

    def rebuild(self) -> None:
        self.zone = build_zone(
            [s for s in self.services.list() if isinstance(s, Service)],
            [s for s in self.slices.list() if isinstance(s, EndpointSlice)],
            self.domain,
        )

    async def run(self, stop: asyncio.Event) -> None:
        for inf in (self.services, self.slices):
            await inf.start()
        try:
            for inf in (self.services, self.slices):
                await inf.wait_synced(30)
            self.rebuild()
            stopping = asyncio.ensure_future(stop.wait())
            while not stop.is_set():
                changed = asyncio.ensure_future(self.changed.wait())
                await asyncio.wait({changed, stopping}, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
                self.changed.clear()
                self.rebuild()
            stopping.cancel()
        finally:
            for inf in (self.services, self.slices):
                await inf.stop()


async def listen(address: str, port: int | None, zone: Any, ttl: int = 5) -> DnsServer:
    """Start on ``port``; without one, on 53 when allowed, else on 10053."""
    if port is not None:
        server = DnsServer(address, port, zone, ttl=ttl)
        await server.start()
        return server
    try:
        server = DnsServer(address, DEFAULT_PORT, zone, ttl=ttl)
        await server.start()
    except PermissionError:
        server = DnsServer(address, FALLBACK_PORT, zone, ttl=ttl)
        await server.start()
    return server


async def run(ctx: ServiceContext, stop: asyncio.Event) -> None:
    opts = ctx.options
    dns = ClusterDns(ctx.nc, domain=str(opts.get("cluster_domain", DEFAULT_DOMAIN)))
    ttl = int(opts.get("dns_ttl", 5))
    port = opts.get("dns_port")

    def zone() -> Zone:
        return dns.zone

    server = await listen(str(opts.get("dns_address", DEFAULT_ADDRESS)), int(port) if port else None, zone, ttl)
    ctx.log.info("dns started", address=f"{server.host}:{server.port}", domain=dns.domain)
    try:
        await dns.run(stop)
    finally:
        with contextlib.suppress(Exception):
            await server.stop()

