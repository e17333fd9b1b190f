"""``kyb top pods`` and ``kyb top nodes``: CPU and memory use from the kubelets' metrics samples.

The last sample of every node is kept by the ``KYB_METRICS`` stream (see
``kyb.cli.nodeclient``), so the figures are at most one kubelet metrics interval old.
Percentages in ``top nodes`` are of the node's allocatable resources, read through the api.
"""

from __future__ import annotations

import asyncio
import io
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from kyb.cli.nodeclient import latest_samples
from kyb.cli.podio import nats_option
from kyb.client import ApiClient, connect
from kyb.errors import KybError
from schemas.quantity import cpu_millis, to_bytes

MI = 1024 * 1024


def cpu_text(millis: int) -> str:
    return f"{millis}m"


def memory_text(nbytes: int) -> str:
    return f"{round(nbytes / MI)}Mi"


def pod_rows(
    samples: list[dict[str, Any]], namespace: str | None, containers: bool = False
) -> list[list[str]]:
    """Rows of ``top pods``: [NAMESPACE,] NAME, [CONTAINER,] CPU, MEMORY; sorted by namespace and name."""
    rows: list[list[str]] = []
    for sample in samples:
        for pod in sample.get("pods") or []:
            if namespace is not None and pod.get("namespace") != namespace:
                continue
            prefix = [pod.get("namespace", "")] if namespace is None else []
            cs = pod.get("containers") or []
            if containers:
                for c in cs:
                    rows.append(
                        [
                            *prefix,
                            pod["name"],
                            c["name"],
                            cpu_text(c["cpu_millis"]),
                            memory_text(c["memory_bytes"]),
                        ]
                    )
            else:
                cpu = sum(int(c["cpu_millis"]) for c in cs)
                mem = sum(int(c["memory_bytes"]) for c in cs)
                rows.append([*prefix, pod["name"], cpu_text(cpu), memory_text(mem)])
    return sorted(rows)


def node_rows(samples: list[dict[str, Any]], allocatable: dict[str, dict[str, str]]) -> list[list[str]]:
    rows = []
    for sample in sorted(samples, key=lambda s: s.get("node", "")):
        usage = sample.get("node_usage") or {}
        cpu, mem = int(usage.get("cpu_millis", 0)), int(usage.get("memory_bytes", 0))
        alloc = allocatable.get(sample.get("node", ""), {})
        try:
            cpu_pct = f"{round(100 * cpu / cpu_millis(alloc['cpu']))}%"
            mem_pct = f"{round(100 * mem / to_bytes(alloc['memory']))}%"
        except (KeyError, ValueError, ZeroDivisionError):
            cpu_pct = mem_pct = "<unknown>"
        rows.append([sample.get("node", ""), cpu_text(cpu), cpu_pct, memory_text(mem), mem_pct])
    return rows


def render(headers: list[str], rows: list[list[str]]) -> str:
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="", padding=(0, 3, 0, 0))
    for h in headers:
        table.add_column(h, no_wrap=True)
    for r in rows:
        table.add_row(*r)
    buf = io.StringIO()
    Console(file=buf, width=400, no_color=True, highlight=False).print(table)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"


async def top_pods_text(nc, namespace: str | None, containers: bool = False) -> str:
    rows = pod_rows(await latest_samples(nc), namespace, containers)
    if not rows:
        where = f" in {namespace} namespace" if namespace else ""
        raise KybError(f"No resources found{where}.")
    headers = (["NAMESPACE"] if namespace is None else []) + ["NAME"] + (["CONTAINER"] if containers else [])
    return render(headers + ["CPU(cores)", "MEMORY(bytes)"], rows)


async def top_nodes_text(nc) -> str:
    samples = await latest_samples(nc)
    allocatable: dict[str, dict[str, str]] = {}
    try:
        for node in await ApiClient(nc, timeout=2.0).list("nodes"):
            status = node.get("status") or {}
            allocatable[node["metadata"]["name"]] = status.get("allocatable") or status.get("capacity") or {}
    except KybError:
        pass  # no api answering: figures without percentages
    return render(["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"], node_rows(samples, allocatable))


@click.group("top")
def top_group() -> None:
    """CPU and memory use of pods or nodes."""


def _print(coro_fn, nats_url: str) -> None:
    async def main() -> str:
        nc = await connect(nats_url)
        try:
            return await coro_fn(nc)
        finally:
            await nc.close()

    try:
        click.echo(asyncio.run(main()), nl=False)
    except KybError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)


@top_group.command("pods")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-A", "--all-namespaces", is_flag=True, help="pods of every namespace")
@click.option("--containers", is_flag=True, help="one line per container")
@nats_option
def top_pods(namespace: str, all_namespaces: bool, containers: bool, nats_url: str) -> None:
    """CPU and memory use of pods."""
    _print(lambda nc: top_pods_text(nc, None if all_namespaces else namespace, containers), nats_url)


@top_group.command("nodes")
@nats_option
def top_nodes(nats_url: str) -> None:
    """CPU and memory use of nodes."""
    _print(top_nodes_text, nats_url)
