"""``kyb cordon``, ``kyb uncordon`` and ``kyb drain``: take a node out of scheduling and empty it
before maintenance, as kubectl does.

Cordon and uncordon set ``spec.unschedulable`` with a compare-and-set replace through the api
(the scheduler then leaves the node out). Drain cordons, decides with
:mod:`kyb.cli.drainplan` which pods to evict, evicts them through the api (``kyb.api.evict``,
with their own grace period unless ``--grace-period``) and waits until they are gone. An
eviction a PodDisruptionBudget refuses is said and retried every 5 s until the budget allows
it or ``--timeout`` runs out, as kubectl drain does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import click

from kyb import errors
from kyb.cli.base import DEFAULT_NATS, nats_opt, run_api
from kyb.cli.drainplan import DrainOptions, plan_drain, pod_ref
from kyb.cli.params import Duration
from kyb.client import ApiClient

Echo = Callable[[str], None]


# -- the work, over an ApiClient -------------------------------------------------------------------


async def set_unschedulable(api: ApiClient, node: str, value: bool, *, attempts: int = 20) -> bool:
    """Set the node's spec.unschedulable; False when it already was so."""
    for _ in range(attempts):
        obj = await api.get("node", None, node)
        spec = obj.setdefault("spec", {})
        if bool(spec.get("unschedulable")) == value:
            return False
        if value:
            spec["unschedulable"] = True
        else:
            spec.pop("unschedulable", None)
        try:
            await api.replace(obj)
        except errors.Conflict:
            continue  # someone wrote the node meanwhile (its kubelet, say): read again
        return True
    raise errors.Conflict(f'nodes "{node}": kept changing while being cordoned')


async def evict_pod(api: ApiClient, pod: dict[str, Any], grace_period: int | None) -> None:
    """Evict ``pod`` (pods/eviction): TooManyRequests while its PodDisruptionBudget allows no
    disruption."""
    meta = pod.get("metadata") or {}
    await api.evict(meta.get("namespace") or "default", meta.get("name") or "", grace_period)


async def _gone(api: ApiClient, pod: dict[str, Any]) -> bool:
    meta = pod.get("metadata") or {}
    try:
        now = await api.get("pods", meta.get("namespace") or "default", meta.get("name"))
    except errors.NotFound:
        return True
    return (now.get("metadata") or {}).get("uid") != meta.get("uid")


async def drain(
    api: ApiClient,
    node: str,
    options: DrainOptions,
    *,
    grace_period: int | None = None,
    timeout: float | None = None,
    echo: Echo = click.echo,
    warn: Echo = lambda line: click.echo(line, err=True),
    poll: float = 0.2,
    retry: float = 5.0,
) -> bool:
    """Cordon ``node`` and evict its pods; True once it is drained, False when the filters
    refused (the reasons were printed). Raises Temporary when ``timeout`` runs out."""
    if await set_unschedulable(api, node, True):
        echo(f"node/{node} cordoned")
    else:
        echo(f"node/{node} already cordoned")
    pods = await api.list("pods", None, field_selector=f"spec.nodeName={node}")
    plan = plan_drain(pods, options)
    if plan.refused:
        lines = plan.error_lines()
        joined = lines[0] if len(lines) == 1 else f"[{', '.join(lines)}]"
        warn(f'error: unable to drain node "{node}" due to error: {joined}, continuing command...')
        warn("There are pending nodes to be drained:")
        warn(f" {node}")
        for line in lines:
            warn(line)
        return False
    for line in plan.warning_lines():
        warn(f"Warning: {line}")
    deadline = time.monotonic() + timeout if timeout else None
    to_evict = list(plan.evict)  # an eviction a PodDisruptionBudget refuses is retried, as kubectl does
    for pod in to_evict:
        echo(f"evicting pod {pod_ref(pod)}")
    pending: list[dict[str, Any]] = []
    next_try = 0.0
    while to_evict or pending:
        if to_evict and time.monotonic() >= next_try:
            refused = []
            for pod in to_evict:
                try:
                    await evict_pod(api, pod, grace_period)
                    pending.append(pod)
                except errors.NotFound:
                    pending.append(pod)  # already gone: said as evicted, as before
                except errors.TooManyRequests as e:
                    meta = pod.get("metadata") or {}
                    warn(f'error when evicting pods/"{meta.get("name")}" -n "{meta.get("namespace") or "default"}" '
                         f"(will retry after {_duration(retry)}): {e.message}")
                    refused.append(pod)
            to_evict = refused
            next_try = time.monotonic() + retry
        still = []
        for pod in pending:
            if await _gone(api, pod):
                echo(f"pod/{pod['metadata']['name']} evicted")
            else:
                still.append(pod)
        pending = still
        if not to_evict and not pending:
            break
        if deadline is not None and time.monotonic() > deadline:
            raise errors.Temporary(
                f'unable to drain node "{node}": global timeout reached: {_duration(timeout or 0)}; '
                f"still there: {', '.join(pod_ref(p) for p in to_evict + pending)}"
            )
        await asyncio.sleep(poll)
    echo(f"node/{node} drained")
    return True


# -- the commands ----------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _run(obj: dict[str, Any], work: Callable[[ApiClient], Any], timeout: float = 5.0) -> Any:
    return run_api(work, obj.get("nats") or DEFAULT_NATS, timeout)


@click.command()
@click.argument("node")
@nats_opt
@click.pass_obj
def cordon(obj: dict[str, Any], node: str) -> None:
    """Mark NODE unschedulable: new pods are not placed on it."""

    async def work(api: ApiClient) -> None:
        changed = await set_unschedulable(api, node, True)
        click.echo(f"node/{node} cordoned" if changed else f"node/{node} already cordoned")

    _run(obj, work)


@click.command()
@click.argument("node")
@nats_opt
@click.pass_obj
def uncordon(obj: dict[str, Any], node: str) -> None:
    """Mark NODE schedulable again."""

    async def work(api: ApiClient) -> None:
        changed = await set_unschedulable(api, node, False)
        click.echo(f"node/{node} uncordoned" if changed else f"node/{node} already uncordoned")

    _run(obj, work)


@click.command(name="drain")
@click.argument("node")
@click.option("--ignore-daemonsets", is_flag=True, help="leave DaemonSet-managed pods on the node")
@click.option("--delete-emptydir-data", is_flag=True, help="evict pods with emptyDir volumes (their data is lost)")
@click.option("--force", is_flag=True, help="evict pods that no controller manages (they are not recreated)")
@click.option("--grace-period", type=int, default=-1, show_default=True,
              help="seconds each pod gets to stop; negative: the pod's own terminationGracePeriodSeconds")
@click.option("--timeout", type=Duration(), default="0", show_default=True,
              help="give up after this long (e.g. 90s, 5m); 0: wait as long as it takes")
@nats_opt
@click.pass_obj
def drain_command(obj: dict[str, Any], node: str, ignore_daemonsets: bool, delete_emptydir_data: bool,
                  force: bool, grace_period: int, timeout: float) -> None:
    """Cordon NODE, then evict its pods and wait until they are gone."""
    options = DrainOptions(ignore_daemonsets=ignore_daemonsets, delete_emptydir_data=delete_emptydir_data, force=force)

    async def work(api: ApiClient) -> bool:
        return await drain(api, node, options, grace_period=grace_period if grace_period >= 0 else None,
                           timeout=timeout or None)

    if not _run(obj, work):
        raise SystemExit(1)


COMMANDS = (cordon, uncordon, drain_command)
