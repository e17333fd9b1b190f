"""The netagent service: keeps this node's routes to every other node's pod CIDR (like flannel).

``kyb serve netagent --node-name N -o network=cni -o backend=host-gw|vxlan``. An informer on
Nodes triggers a resync; the resync computes :func:`services.netagent.plan.desired` and makes
the kernel hold exactly that (Nodes whose InternalIP is one of this namespace's addresses are
this host's own, served by their bridges): routes it owns carry protocol 77 (``ip route ...
proto 77``) so foreign routes are never touched; with vxlan, also the device, its neighbour and
FDB entries.
Commands run in the namespace named by ``netns`` (``nsenter --net=``) or in our own. Does
nothing unless ``network`` is ``cni``, so a default ``kyb up`` never touches the host's routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from typing import Any

from kyb.informer import Informer
from kyb.netns import CommandError
from kyb.netns import run as run_in
from kyb.serve import ServiceContext
from schemas.core import Node
from services.netagent.plan import (
    ROUTE_PROTO,
    UNREACHABLE_METRIC,
    VXLAN_DEVICE,
    Desired,
    Fdb,
    Neighbour,
    Route,
    Settings,
    desired,
)


class Kernel:
    """``ip`` and ``bridge`` in one network namespace."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns

    async def run(self, *argv: str, check: bool = True) -> str:
        return await run_in(self.netns, *argv, check=check)

    async def json(self, *argv: str) -> list[dict[str, Any]]:
        text = await self.run(*argv, check=False)
        with contextlib.suppress(ValueError):
            doc = json.loads(text or "[]")
            return doc if isinstance(doc, list) else []
        return []

    async def addresses(self) -> set[str]:
        """This namespace's own addresses (a Node with one of them is served by its bridge)."""
        return {a["local"] for link in await self.json("ip", "-j", "addr", "show")
                for a in link.get("addr_info", []) if a.get("local")}

    # routes

    async def routes(self) -> set[Route]:
        out: set[Route] = set()
        for r in await self.json("ip", "-j", "route", "show", "proto", ROUTE_PROTO):
            out.add(Route(dst=r["dst"], via=r.get("gateway", ""), dev=r.get("dev", "") if r.get("gateway") and
                          r.get("dev") == VXLAN_DEVICE else "", onlink="onlink" in r.get("flags", []),
                          unreachable=r.get("type") == "unreachable"))
        return out

    def _route_args(self, r: Route) -> list[str]:
        if r.unreachable:
            return ["unreachable", r.dst, "metric", str(UNREACHABLE_METRIC), "proto", ROUTE_PROTO]
        args = [r.dst, "via", r.via]
        if r.dev:
            args += ["dev", r.dev]
        if r.onlink:
            args.append("onlink")
        return [*args, "proto", ROUTE_PROTO]

    async def add_route(self, r: Route) -> None:
        await self.run("ip", "route", "replace", *self._route_args(r))

    async def del_route(self, r: Route) -> None:
        await self.run("ip", "route", "del", *self._route_args(r), check=False)

    # vxlan

    async def ensure_vxlan(self, d: Desired, vni: int, port: int) -> None:
        assert d.vtep is not None
        links = await self.json("ip", "-j", "-d", "link", "show", "dev", VXLAN_DEVICE)
        info = (links[0].get("linkinfo") or {}).get("info_data") or {} if links else {}
        if links and (info.get("id") != vni or info.get("local") != d.vtep.local or links[0].get("address") != d.vtep.mac):
            await self.run("ip", "link", "del", VXLAN_DEVICE)
            links = []
        if not links:
            await self.run("ip", "link", "add", VXLAN_DEVICE, "type", "vxlan", "id", str(vni), "local", d.vtep.local,
                           "dstport", str(port), "nolearning")
            await self.run("ip", "link", "set", VXLAN_DEVICE, "address", d.vtep.mac)
        await self.run("ip", "addr", "replace", f"{d.vtep.ip}/32", "dev", VXLAN_DEVICE)
        await self.run("ip", "link", "set", VXLAN_DEVICE, "up")

    async def neighbours(self) -> set[Neighbour]:
        return {Neighbour(ip=n["dst"], mac=n.get("lladdr", "")) for n in
                await self.json("ip", "-j", "neigh", "show", "dev", VXLAN_DEVICE) if "PERMANENT" in n.get("state", [])}

    async def fdb(self) -> set[Fdb]:
        return {Fdb(mac=f["mac"], dst=f["dst"]) for f in
                await self.json("bridge", "-j", "fdb", "show", "dev", VXLAN_DEVICE) if f.get("dst")}


async def sync(kernel: Kernel, d: Desired, *, vni: int = 1, port: int = 8472) -> None:
    """Make the kernel hold ``d``: add what is missing first, then remove what is stale."""
    if d.vtep is not None:
        await kernel.ensure_vxlan(d, vni, port)
        have_fdb, have_neigh = await kernel.fdb(), await kernel.neighbours()
        for f in d.fdb - have_fdb:
            await kernel.run("bridge", "fdb", "replace", f.mac, "dev", VXLAN_DEVICE, "dst", f.dst, "self", "permanent")
        for n in d.neighbours - have_neigh:
            await kernel.run("ip", "neigh", "replace", n.ip, "lladdr", n.mac, "dev", VXLAN_DEVICE, "nud", "permanent")
    have = await kernel.routes()
    for r in sorted(d.routes - have):
        await kernel.add_route(r)
    for r in sorted(have - d.routes):
        await kernel.del_route(r)
    if d.vtep is not None:
        for f in have_fdb - d.fdb:
            await kernel.run("bridge", "fdb", "del", f.mac, "dev", VXLAN_DEVICE, "dst", f.dst, "self", check=False)
        for n in have_neigh - d.neighbours:
            await kernel.run("ip", "neigh", "del", n.ip, "dev", VXLAN_DEVICE, check=False)


async def run(ctx: ServiceContext, stop: asyncio.Event) -> None:
    """Entry point for ``kyb serve netagent``."""
    opts = ctx.options
    if str(opts.get("network") or "loopback") != "cni":
        ctx.log.info("netagent idle: the pod network is not cni (option network=cni turns it on)")
        await stop.wait()
        return
    settings = Settings(
        node_name=str(opts.get("node_name") or socket.gethostname()).lower(),
        backend=str(opts.get("backend") or "host-gw"),  # type: ignore[arg-type]
        cluster_cidr=str(opts.get("cluster_cidr") or "10.244.0.0/16"),
        service_cidr=str(opts.get("service_cidr") or "10.96.0.0/12"),
    )
    if settings.backend not in ("host-gw", "vxlan"):
        raise ValueError(f"unknown backend {settings.backend!r}: expected host-gw or vxlan")
    kernel = Kernel(opts.get("netns"))
    vni, port = int(opts.get("vxlan_vni") or 1), int(opts.get("vxlan_port") or 8472)
    resync = float(opts.get("resync_seconds") or 30.0)
    nodes = Informer(ctx.nc, "Node")
    changed = asyncio.Event()
    nodes.add_handler(lambda *_: changed.set())
    await nodes.start()
    try:
        await nodes.wait_synced(30)
        ctx.log.info("netagent started", node=settings.node_name, backend=settings.backend)
        last: Desired | None = None
        while not stop.is_set():
            changed.clear()
            want = desired([n for n in nodes.list() if isinstance(n, Node)], settings, await kernel.addresses())
            try:
                await sync(kernel, want, vni=vni, port=port)
                if want != last:
                    ctx.log.info("routes in place", routes=len(want.routes), waiting=list(want.waiting))
                last = want
            except CommandError as e:
                ctx.log.warning("route sync failed", error=str(e))
                await asyncio.sleep(1.0)
                changed.set()
            waiter = asyncio.ensure_future(changed.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, timeout=resync, return_when=asyncio.FIRST_COMPLETED)
            for t in (waiter, stopper):
                t.cancel()
            await asyncio.gather(waiter, stopper, return_exceptions=True)
    finally:
        await nodes.stop()
