"""The cluster DNS service: answers ``<svc>.<ns>.svc.cluster.local`` and friends (see
:mod:`services.dns.plan`) from Services and EndpointSlices.

Informers only flag a change; one loop rebuilds the zone from the caches and swaps it in, so
queries always see a whole, consistent zone.

Options: ``dns_address`` (default 127.253.255.53), ``dns_port`` (default 53 when the process
may bind it, else 10053), ``cluster_domain`` (default cluster.local), ``dns_ttl`` (default 5).
With ``network: cni`` (one dns per node, like NodeLocal DNSCache) it answers pods on the cluster
DNS address (``cluster_dns``, 10.96.0.10) held by a dummy device ``kyb-dns`` (or ``lo``) of the node's
namespace (``netns``, else ours), and forwards names outside the domain to the node's resolvers
(``resolv_conf``) or to ``upstream``; see the README.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import Any

from kyb.informer import Informer, start_all, stop_all
from kyb.netns import command, socket_in
from kyb.serve import ServiceContext
from schemas.core import Service
from schemas.discovery import EndpointSlice
from schemas.meta import Object
from services.dns.forward import Forwarder, parse_upstreams, resolv_conf_upstreams
from services.dns.plan import DEFAULT_DOMAIN, Zone, build_zone
from services.dns.server import DnsServer

DEFAULT_ADDRESS = "127.253.255.53"
CLUSTER_DNS = "10.96.0.10"  # network cni: the tenth address of the service CIDR
DNS_DEVICE = "kyb-dns"
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
        try:
            await start_all((self.services, self.slices))
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
            await stop_all((self.services, self.slices))


async def listen(address: str, port: int | None, zone: Any, ttl: int = 5,
                 forwarder: Forwarder | None = None) -> DnsServer:
    """Start on ``port``; without one, on 53 when allowed, else on 10053."""
    if port is not None:
        server = DnsServer(address, port, zone, ttl=ttl, forwarder=forwarder)
        await server.start()
        return server
    try:
        server = DnsServer(address, DEFAULT_PORT, zone, ttl=ttl, forwarder=forwarder)
        await server.start()
    except PermissionError:
        server = DnsServer(address, FALLBACK_PORT, zone, ttl=ttl, forwarder=forwarder)
        await server.start()
    return server


async def run(ctx: ServiceContext, stop: asyncio.Event) -> None:
    opts = ctx.options
    dns = ClusterDns(ctx.nc, domain=str(opts.get("cluster_domain", DEFAULT_DOMAIN)))
    ttl = int(opts.get("dns_ttl", 5))
    port = opts.get("dns_port")

    def zone() -> Zone:
        return dns.zone

    if str(opts.get("network") or "loopback") == "cni":
        server = await node_listen(opts, zone, ttl)
    else:
        upstream = opts.get("upstream")
        forwarder = Forwarder(parse_upstreams(str(upstream))) if upstream else None
        server = await listen(str(opts.get("dns_address", DEFAULT_ADDRESS)), int(port) if port else None, zone, ttl,
                              forwarder)
    ctx.log.info("dns started", address=f"{server.host}:{server.port}", domain=dns.domain,
                 upstreams=[f"{h}:{p}" for h, p in server.forwarder.upstreams] if server.forwarder else [])
    try:
        await dns.run(stop)
    finally:
        with contextlib.suppress(Exception):
            await server.stop()


async def _ip(netns: str | None, *argv: str, check: bool = True) -> None:
    proc = await asyncio.create_subprocess_exec(*command(netns, "ip", *argv), stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if check and proc.returncode != 0:
        raise OSError(f"ip {' '.join(argv)}: {err.decode(errors='replace').strip()}")


async def node_listen(opts: dict[str, Any], zone: Any, ttl: int) -> DnsServer:
    """``network: cni``: the cluster DNS address on the dummy device ``kyb-dns`` of the node's
    namespace (on ``lo`` when the kernel has no dummy driver); pods reach it through their
    gateway, the node. Port 53, forwarding upstream."""
    netns = opts.get("netns") or None
    address = str(opts.get("cluster_dns") or CLUSTER_DNS)
    await _ip(netns, "link", "add", DNS_DEVICE, "type", "dummy", check=False)  # exists already: fine
    try:
        await _ip(netns, "link", "set", DNS_DEVICE, "up")
        device = DNS_DEVICE
    except OSError:
        device = "lo"  # a kernel without the dummy driver: the node's loopback holds the address
    await _ip(netns, "addr", "replace", f"{address}/32", "dev", device)
    upstream = opts.get("upstream")
    if upstream:
        upstreams = parse_upstreams(str(upstream))
    else:
        path = str(opts.get("resolv_conf") or "/etc/resolv.conf")
        try:
            text = await asyncio.to_thread(Path(path).read_text)
        except OSError:
            text = ""
        upstreams = resolv_conf_upstreams(text, exclude=(address,))

    def factory(family: int, kind: int) -> socket.socket:
        return socket_in(netns, family, kind)

    server = DnsServer(address, int(opts.get("dns_port") or DEFAULT_PORT), zone, ttl=ttl,
                       forwarder=Forwarder(upstreams, socket_factory=factory) if upstreams else None,
                       socket_factory=factory)
    await server.start()
    return server

