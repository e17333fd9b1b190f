"""``kyb scale KIND/NAME --replicas N``: kubectl's scale for Deployments, ReplicaSets,
ReplicationControllers and StatefulSets, through the api (get, then replace at the revision read, so the api
validates the write and a concurrent change is never overwritten).

``--current-replicas`` and ``--resource-version`` are preconditions as in kubectl: when they
do not hold, nothing is written. Without them a lost compare-and-set is retried on a fresh read.
"""

from __future__ import annotations

import copy
from typing import Any

import click

from kyb import errors
from kyb.cli.base import namespace_opt, parse_targets, run_api
from kyb.cli.printers import kind_ref
from kyb.client import ApiClient

SCALABLE = ("Deployment", "ReplicaSet", "ReplicationController", "StatefulSet")
ATTEMPTS = 5


def scaled(
    obj: dict[str, Any],
    replicas: int,
    current_replicas: int | None = None,
    resource_version: str | None = None,
) -> dict[str, Any]:
    """``obj`` with ``spec.replicas`` set, keeping its resourceVersion for the compare-and-set;
    raises Conflict when a precondition does not hold."""
    meta = obj.get("metadata") or {}
    have = (obj.get("spec") or {}).get("replicas", 1)
    if current_replicas is not None and have != current_replicas:
        raise errors.Conflict(f"Expected replicas to be {current_replicas}, was {have}")
    if resource_version is not None and meta.get("resourceVersion") != resource_version:
        raise errors.Conflict(
            f"Expected resourceVersion {resource_version}, was {meta.get('resourceVersion')}"
        )
    out = copy.deepcopy(obj)
    out.setdefault("spec", {})["replicas"] = replicas
    out.pop("status", None)
    return out


async def scale(
    api: ApiClient,
    kind: str,
    namespace: str | None,
    name: str,
    replicas: int,
    *,
    current_replicas: int | None = None,
    resource_version: str | None = None,
) -> dict[str, Any]:
    """Set ``spec.replicas`` of one object; returns the stored object."""
    retry = current_replicas is None and resource_version is None
    for attempt in range(ATTEMPTS):
        obj = await api.get(kind, namespace, name)
        try:
            return await api.replace(scaled(obj, replicas, current_replicas, resource_version), namespace)
        except errors.Conflict:
            if not retry or attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


@click.command("scale")
@click.argument("args", nargs=-1, required=True)
@click.option(
    "--replicas", type=click.IntRange(min=0), required=True, help="the new desired number of replicas"
)
@click.option(
    "--current-replicas",
    type=int,
    default=None,
    help="precondition: scale only if the current number of replicas is this",
)
@click.option("--resource-version", default=None, help="precondition: scale only at this resourceVersion")
@namespace_opt
@click.pass_obj
def scale_cmd(
    obj: dict[str, Any],
    args: tuple[str, ...],
    replicas: int,
    current_replicas: int | None,
    resource_version: str | None,
    namespace: str,
) -> None:
    """Set a new size for a Deployment, ReplicaSet, ReplicationController or StatefulSet."""
    targets = parse_targets(args)
    for info, names in targets:
        if info.kind not in SCALABLE:
            raise click.ClickException(f"cannot scale a {info.kind}: not scalable")
        if not names:
            raise click.UsageError("specify the name of the resource to scale")

    async def go(api: ApiClient) -> None:
        for info, names in targets:
            for name in names:
                await scale(
                    api,
                    info.plural,
                    namespace,
                    name,
                    replicas,
                    current_replicas=current_replicas,
                    resource_version=resource_version,
                )
                click.echo(f"{kind_ref(info.kind, info.group)}/{name} scaled")

    run_api(go, obj["nats"])
