"""The nftables proxy's shell: keeps table ``ip kyb-proxy`` in one network namespace equal
to :func:`services.proxy.nftplan.ruleset` of the informers' caches.

Each change is one nftables transaction (:mod:`kyb.nftables`: a long-lived libnftables
context, ``nft -f -`` where the library is missing): the whole table on the first sync (and after a
failed one), then only the chains and map elements of the Service ports that changed. The
fragments of a Service are recomputed only when its object or one of its slices changed
(resourceVersions), so a sync costs what changed, not the table's size. After the rules:
``conntrack -D`` for UDP entries towards endpoints that left, and the HTTP health checks of
``externalTrafficPolicy: Local`` LoadBalancers (kube-proxy's healthCheckNodePort: 200 with
local endpoints, 503 without).

Locally started connections to a ClusterIP need a route before the output hook can DNAT them
(the netagent's ``unreachable`` service-CIDR route would fail them at ``connect``), so the
proxy keeps a port-less bridge ``kyb-svc`` with ``<service_cidr> dev kyb-svc metric 3000
proto 78``: anything not DNATed is rejected by the table and nothing sent there can leave.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from kyb.netns import run as run_in
from kyb.netns import socket_in
from kyb.nftables import Nftables, NftError
from schemas.core import Service
from schemas.discovery import EndpointSlice
from services.proxy.nftplan import (
    FAMILY,
    Flush,
    HealthCheck,
    Ruleset,
    Settings,
    assemble,
    conntrack_flushes,
    full_script,
    group_slices,
    service_fragments,
    update_script,
)

SERVICE_DEVICE = "kyb-svc"
ROUTE_PROTO = "78"
ROUTE_METRIC = "3000"


def available() -> str | None:
    """Why this machine cannot run the nftables proxy, or None."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("nft") is None:
        return "nft is not installed (nftables)"
    return None


class Commands:
    """``nft``, ``ip`` and ``conntrack`` in one network namespace (nsenter), or our own."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.nftables = Nftables(netns)

    async def run(self, *argv: str, check: bool = True) -> str:
        return await run_in(self.netns, *argv, check=check)

    async def nft(self, script: str) -> None:
        await self.nftables.run(script)

    async def ensure_service_route(self, service_cidr: str) -> None:
        links = await self.run("ip", "-j", "link", "show", "dev", SERVICE_DEVICE, check=False)
        if not links.strip() or links.strip() == "[]":
            await self.run("ip", "link", "add", SERVICE_DEVICE, "type", "bridge", check=False)
        await self.run("ip", "link", "set", SERVICE_DEVICE, "up")
        await self.run("ip", "route", "replace", service_cidr, "dev", SERVICE_DEVICE, "metric", ROUTE_METRIC,
                       "proto", ROUTE_PROTO)

    async def remove(self, table: str) -> None:
        with contextlib.suppress(NftError):  # already gone
            await self.nftables.run(f"delete table {FAMILY} {table}\n")
        await self.run("ip", "link", "del", SERVICE_DEVICE, check=False)

    def close(self) -> None:
        self.nftables.close()

    async def conntrack(self, f: Flush) -> None:
        argv = ["conntrack", "-D", "-p", "udp", "--orig-port-dst", str(f.orig_port)]
        if f.orig_dst:
            argv += ["--orig-dst", f.orig_dst]
        if f.dst_nat:
            argv += ["--dst-nat", f.dst_nat]
        await self.run(*argv, check=False)  # exits 1 when nothing matched


def listen_in_netns(netns: str | None, port: int) -> socket.socket:
    """A TCP listening socket on 0.0.0.0:``port`` in namespace ``netns``."""
    s = socket_in(netns, socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(128)
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


class HealthServer:
    """One healthCheckNodePort: 200 while this node has an endpoint of the Service, else 503."""

    def __init__(self, check: HealthCheck) -> None:
        self.check = check
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        ns, _, name = self.check.service.partition("/")
        n = self.check.local_endpoints
        body = {"service": {"namespace": ns, "name": name}, "localEndpoints": n, "serviceProxyHealthy": True}
        return web.Response(text=json.dumps(body), status=200 if n else 503, content_type="application/json",
                            headers={"X-Content-Type-Options": "nosniff", "X-Load-Balancing-Endpoint-Weight": str(n)})

    async def start(self, netns: str | None) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.SockSite(self.runner, listen_in_netns(netns, self.check.port)).start()

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class NftProxy:
    """Caches in, table out."""

    def __init__(self, settings: Settings, *, netns: str | None = None, log: Any = None,
                 commands: Commands | None = None) -> None:
        self.settings = settings
        self.netns = netns
        self.log = log
        self.commands = commands or Commands(netns)
        self.applied: Ruleset | None = None
        self._cache: dict[tuple[str, str], tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self.health: dict[int, HealthServer] = {}
        self.on_applied: Callable[[float], None] | None = None  # seconds the transaction took

    def desired(self, services: list[Service], slices: list[EndpointSlice]) -> Ruleset:
        grouped = group_slices(slices)
        parts: dict[str, Any] = {}
        cache: dict[tuple[str, str], tuple[tuple[Any, ...], dict[str, Any]]] = {}
        for svc in services:
            key = (svc.metadata.namespace or "default", svc.metadata.name)
            mine = grouped.get(key, [])
            version = (svc.metadata.resourceVersion, svc.metadata.uid,
                       tuple(sorted((s.metadata.name, s.metadata.resourceVersion) for s in mine)))
            held = self._cache.get(key)
            if held is None or held[0] != version or not version[0]:
                held = (version, service_fragments(svc, mine, self.settings))
            cache[key] = held
            parts.update(held[1])
        self._cache = cache
        return assemble(parts, self.settings)

    async def start(self) -> None:
        await self.commands.ensure_service_route(self.settings.service_cidr)

    async def sync(self, services: list[Service], slices: list[EndpointSlice]) -> None:
        want = self.desired(services, slices)
        t0 = time.perf_counter()
        if self.applied is None:
            await self.commands.nft(full_script(want, self.settings))
        else:
            script = update_script(self.applied, want, self.settings)
            if script:
                try:
                    await self.commands.nft(script)
                except NftError as e:
                    if self.log is not None:
                        self.log.warning("incremental nft update failed; replacing the table", error=str(e))
                    self.applied = None
                    await self.commands.nft(full_script(want, self.settings))
        if self.on_applied is not None:
            self.on_applied(time.perf_counter() - t0)
        old, self.applied = self.applied, want
        if old is not None:
            for f in conntrack_flushes(old, want):
                await self.commands.conntrack(f)
        await self._health(want)

    async def _health(self, rs: Ruleset) -> None:
        for port in [p for p in self.health if p not in rs.health]:
            await self.health.pop(port).close()
        for port, check in rs.health.items():
            server = self.health.get(port)
            if server is not None:
                server.check = check
                continue
            server = HealthServer(check)
            try:
                await server.start(self.netns)
            except OSError as e:
                if self.log is not None:
                    self.log.warning("cannot serve the health check", port=port, error=str(e))
                continue
            self.health[port] = server

    async def close(self, *, remove: bool = False) -> None:
        for server in self.health.values():
            with contextlib.suppress(Exception):
                await server.close()
        self.health.clear()
        try:
            if remove:
                await self.commands.remove(self.settings.table)
        finally:
            self.commands.close()
