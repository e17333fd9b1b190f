"""``kyb hollow-nodes``: try the control plane at scale without machines (as KWOK does).

Registers ``--count`` hollow Nodes, keeps their Leases renewed and runs the pods the scheduler
binds to them without containers (Running and Ready at once), until Ctrl-C; then the Nodes
go again (``--keep`` leaves them). Hollow nodes carry the label ``type=hollow`` and the taint
``kybernetes.io/hollow=true:NoSchedule``, so only pods that tolerate it land there.

It writes Nodes, Leases and pod status like a kubelet, so it needs more than the admin's
rights: with the admin credentials ``kyb up`` wrote, it takes ``system.creds`` beside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

import click

from kyb import auth, errors


def _identity() -> auth.ClientAuth:
    current = auth.default()
    if current.source == str(auth.admin_creds_path()):
        system = Path(current.source).with_name("system.creds")
        if system.is_file():
            return auth.ClientAuth.from_creds(system, tls_ca=current.tls_ca, tls_cert=current.tls_cert,
                                              tls_key=current.tls_key)
    return current


@click.command("hollow-nodes")
@click.option("--count", type=click.IntRange(1, 20_000), default=10, show_default=True, help="hollow nodes to run")
@click.option("--prefix", default="hollow-", show_default=True, help="node names: PREFIX0, PREFIX1, ...")
@click.option("--cpu", default="8", show_default=True, help="allocatable CPU of each node")
@click.option("--memory", default="16Gi", show_default=True, help="allocatable memory of each node")
@click.option("--pods", default="110", show_default=True, help="allocatable pods of each node")
@click.option("--no-taint", is_flag=True, help="leave the nodes untainted, so any pod may land there")
@click.option("--keep", is_flag=True, help="keep the Nodes when stopping")
@click.pass_context
def hollow_nodes_cmd(ctx: click.Context, count: int, prefix: str, cpu: str, memory: str, pods: str,
                     no_taint: bool, keep: bool) -> None:
    """Run COUNT hollow nodes: Nodes without machines whose pods run without containers."""
    from kyb.client import connect
    from kyb.hollow import HollowNodes
    from kyb.store import Store

    names = [f"{prefix}{i}" for i in range(count)]
    url = ctx.obj["nats"]

    async def main() -> None:
        nc = await connect(url, name="kyb-hollow-nodes", **_identity().nats_options())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            nodes = HollowNodes(Store(nc.jetstream()), nc, names, cpu=cpu, memory=memory, pods=pods,
                                taint=not no_taint, keep=keep)
            run = asyncio.create_task(nodes.run(stop))
            registered = asyncio.create_task(nodes.registered.wait())
            await asyncio.wait({run, registered}, return_when=asyncio.FIRST_COMPLETED)
            registered.cancel()
            if run.done():
                run.result()  # it failed before the nodes were there: say why
            click.echo(f"{count} hollow nodes running ({names[0]} .. {names[-1]}); Ctrl-C stops them")
            await run
        finally:
            with contextlib.suppress(Exception):
                await nc.close()

    try:
        asyncio.run(main())
    except errors.Unreachable as e:
        click.echo(f"error: {e.message}", err=True)
        sys.exit(1)
    except errors.KybError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
