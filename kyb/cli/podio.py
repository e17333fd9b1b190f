"""``kyb logs`` and ``kyb exec``: a container's output and commands run inside it, through
the node that runs the pod (``kyb.node.<node>.logs|exec``, see ``kyb.cli.nodeclient``).

The async functions do the work and are what tests call; the click commands only parse
arguments, connect and print.
"""

from __future__ import annotations

import sys
from typing import BinaryIO

import click

from kyb.cli.base import DEFAULT_NATS, run_exit_code
from kyb.cli.nodeclient import exec_command, locate, stream_logs
from kyb.client import connect


async def write_logs(
    nc,
    namespace: str,
    pod: str,
    out: BinaryIO,
    *,
    container: str | None = None,
    follow: bool = False,
    previous: bool = False,
    tail: int | None = None,
) -> None:
    """Copy a container's log to ``out`` (until the container exits when ``follow``)."""
    node, name = await locate(nc, namespace, pod, container)
    request = {
        "namespace": namespace,
        "pod": pod,
        "container": name,
        "follow": follow,
        "previous": previous,
        "tail": tail,
    }
    async for chunk in stream_logs(nc, node, request, idle_timeout=None if follow else 10.0):
        out.write(chunk)
        out.flush()


async def run_in_container(
    nc, namespace: str, pod: str, command: list[str], *, container: str | None = None, timeout: float = 300.0
) -> tuple[int, str]:
    """(exit code, output) of ``command`` run in the pod's container."""
    node, name = await locate(nc, namespace, pod, container)
    request = {"namespace": namespace, "pod": pod, "container": name, "command": command, "timeout": timeout}
    return await exec_command(nc, node, request, timeout=timeout + 10)


nats_option = click.option(
    "--nats", "nats_url", envvar="KYB_NATS_URL", default=DEFAULT_NATS, show_default=True, help="NATS URL"
)
namespace_option = click.option(
    "-n", "--namespace", default="default", show_default=True, help="namespace of the pod"
)


def pod_name(arg: str) -> str:
    """``NAME`` or ``pod/NAME`` (``pods/``, ``po/``), as kubectl takes a pod."""
    kind, sep, name = arg.partition("/")
    if not sep:
        return arg
    if kind not in ("pod", "pods", "po"):
        raise click.BadParameter(f"{arg!r}: give a pod (NAME or pod/NAME), not a {kind}", param_hint="POD")
    return name


@click.command("logs")
@click.argument("pod")
@click.option("-c", "--container", default=None, help="container name (default: the only one)")
@click.option("-f", "--follow", is_flag=True, help="stream the log until the container exits")
@click.option("-p", "--previous", is_flag=True, help="the log of the previous, terminated instance")
@click.option("--tail", type=int, default=-1, help="lines from the end to show (-1: all)")
@nats_option
@namespace_option
def logs_command(
    pod: str, container: str | None, follow: bool, previous: bool, tail: int, nats_url: str, namespace: str
) -> None:
    """Print the log of a container in a pod."""
    pod = pod_name(pod)

    async def main() -> int:
        nc = await connect(nats_url)
        try:
            out = sys.stdout.buffer
            await write_logs(
                nc,
                namespace,
                pod,
                out,
                container=container,
                follow=follow,
                previous=previous,
                tail=None if tail < 0 else tail,
            )
            return 0
        finally:
            await nc.close()

    sys.exit(run_exit_code(main()))


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("pod")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("-c", "--container", default=None, help="container name (default: the only one)")
@click.option(
    "--timeout", type=float, default=300.0, show_default=True, help="seconds before the command is killed"
)
@nats_option
@namespace_option
def exec_command_cli(
    pod: str, command: tuple[str, ...], container: str | None, timeout: float, nats_url: str, namespace: str
) -> None:
    """Run a command in a container: kyb exec POD [-c C] -- CMD [ARGS...]. Exits with its exit code."""
    pod = pod_name(pod)

    async def main() -> int:
        nc = await connect(nats_url)
        try:
            code, output = await run_in_container(
                nc, namespace, pod, list(command), container=container, timeout=timeout
            )
        finally:
            await nc.close()
        sys.stdout.write(output)
        sys.stdout.flush()
        return code

    sys.exit(run_exit_code(main()))
