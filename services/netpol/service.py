"""The netpol service: enforces NetworkPolicy for the pods of one node in nftables.

``kyb serve netpol --node-name N -o network=cni [-o netns=PATH]``; with several nodes in one
network namespace (``kyb up --nodes 3``), ``node_names`` lists them and this one agent enforces
for the pods of all of them, in its one table. Informers on Pods,
Namespaces and NetworkPolicies only flag a change; one loop computes the whole table
(:mod:`services.netpol.plan`) and, when it differs from what it last applied (or every
``resync_seconds``), loads it with one nftables transaction (:mod:`kyb.nftables`), so the kernel always holds
either the old or the new rules. Only the table ``inet kyb-netpol`` is ever written. Does
nothing unless ``network`` is ``cni``. Rules stay when the agent stops (pods stay isolated
while it restarts).
"""

from __future__ import annotations

import asyncio
from typing import Any

from kyb.informer import Informer
from kyb.netns import run as run_in
from kyb.nftables import Nftables, NftError
from kyb.serve import ServiceContext
from schemas.core import Namespace
from schemas.networking import NetworkPolicy
from schemas.pod import Pod
from services.netpol.plan import allowed, ruleset


async def run(ctx: ServiceContext, stop: asyncio.Event) -> None:
    """Entry point for ``kyb serve netpol``."""
    opts: dict[str, Any] = ctx.options
    if str(opts.get("network") or "loopback") != "cni":
        ctx.log.info("netpol idle: the pod network is not cni (option network=cni turns it on)")
        await stop.wait()
        return
    # every node whose pods live in this namespace: one table serves them all (kyb up --nodes N)
    nodes = ctx.local_nodes()
    netns = opts.get("netns") or None
    nft = Nftables(netns)
    resync = float(opts.get("resync_seconds") or 30.0)
    # bridged pod-to-pod traffic of the node must cross the forward hook (br_netfilter)
    await run_in(netns, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1",
                 "net.bridge.bridge-nf-call-ip6tables=1", check=False)
    pods, namespaces, policies = Informer(ctx.nc, "Pod"), Informer(ctx.nc, "Namespace"), Informer(ctx.nc, "NetworkPolicy")
    informers = (pods, namespaces, policies)
    changed = asyncio.Event()
    for inf in informers:
        inf.add_handler(lambda *_: changed.set())
        await inf.start()
    try:
        for inf in informers:
            await inf.wait_synced(30)
        ctx.log.info("netpol started", nodes=list(nodes))
        last: str | None = None
        loop = asyncio.get_running_loop()
        next_resync = loop.time() + resync
        while not stop.is_set():
            changed.clear()
            rules = allowed([p for p in policies.list() if isinstance(p, NetworkPolicy)],
                            [p for p in pods.list() if isinstance(p, Pod)],
                            [n for n in namespaces.list() if isinstance(n, Namespace)], nodes)
            text = ruleset(rules)
            if text != last or loop.time() >= next_resync:
                try:
                    await nft.run(text)
                    if text != last:
                        ctx.log.info("network policy rules loaded", nodes=list(nodes),
                                     ingress_isolated=sum(r.ingress is not None for r in rules),
                                     egress_isolated=sum(r.egress is not None for r in rules))
                    last = text
                    next_resync = loop.time() + resync
                except NftError as e:
                    ctx.log.warning("loading network policy rules failed", error=str(e))
                    last = None
                    await asyncio.sleep(1.0)
                    changed.set()
            waiter = asyncio.ensure_future(changed.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, timeout=max(0.0, next_resync - loop.time()),
                               return_when=asyncio.FIRST_COMPLETED)
            for t in (waiter, stopper):
                t.cancel()
            await asyncio.gather(waiter, stopper, return_exceptions=True)
    finally:
        nft.close()
        for inf in informers:
            await inf.stop()
