"""``kyb autoscale deploy/NAME --min N --max M --cpu-percent P``: kubectl's autoscale, which
creates an autoscaling/v1 HorizontalPodAutoscaler for a Deployment, ReplicaSet or
ReplicationController through the api (so it is validated like any manifest).
"""

from __future__ import annotations

from typing import Any

import click

from kyb.cli.base import namespace_opt, resolve_kind, run_api
from kyb.client import ApiClient

SCALABLE = {"Deployment", "ReplicaSet", "ReplicationController"}


def hpa_manifest(kind: str, api_version: str, name: str, namespace: str, min_replicas: int | None,
                 max_replicas: int, cpu_percent: int | None, hpa_name: str | None = None) -> dict[str, Any]:
    """The autoscaling/v1 object kubectl autoscale creates (kubectl leaves the CPU target to the
    controller's default when --cpu-percent is not given)."""
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": api_version, "kind": kind, "name": name},
        "maxReplicas": max_replicas,
    }
    if min_replicas is not None:
        spec["minReplicas"] = min_replicas
    if cpu_percent is not None and cpu_percent >= 0:
        spec["targetCPUUtilizationPercentage"] = cpu_percent
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": hpa_name or name, "namespace": namespace},
        "spec": spec,
    }


def split_target(target: str, name: str | None) -> tuple[str, str]:
    """``deploy/web`` or ``deploy web`` -> (kind text, name)."""
    if "/" in target:
        kind, _, rest = target.partition("/")
        if name or not rest:
            raise click.UsageError("specify the target as TYPE/NAME or TYPE NAME")
        return kind, rest
    if not name:
        raise click.UsageError("specify the target as TYPE/NAME or TYPE NAME")
    return target, name


@click.command("autoscale")
@click.argument("target")
@click.argument("name", required=False)
@namespace_opt
@click.option("--min", "min_replicas", type=int, default=None, help="lower limit for the number of pods")
@click.option("--max", "max_replicas", type=int, required=True, help="upper limit for the number of pods")
@click.option("--cpu-percent", type=int, default=None, help="target average CPU utilization (percentage of request)")
@click.option("--name", "hpa_name", default=None, help="name of the HorizontalPodAutoscaler (default: the target's)")
@click.pass_obj
def autoscale_cmd(obj: dict[str, Any], target: str, name: str | None, namespace: str, min_replicas: int | None,
                  max_replicas: int, cpu_percent: int | None, hpa_name: str | None) -> None:
    """Create a HorizontalPodAutoscaler for a Deployment, ReplicaSet or ReplicationController."""
    kind_text, target_name = split_target(target, name)
    info = resolve_kind(kind_text)
    if info.kind not in SCALABLE:
        raise click.ClickException(f"cannot autoscale a {info.kind}: not scalable")

    async def go(api: ApiClient) -> None:
        await api.get(info.plural, namespace, target_name)  # NotFound comes back as kubectl's message
        manifest = hpa_manifest(info.kind, info.api_version, target_name, namespace, min_replicas, max_replicas,
                                cpu_percent, hpa_name)
        created = await api.create(manifest, namespace)
        click.echo(f"horizontalpodautoscaler.autoscaling/{created['metadata']['name']} autoscaled")

    run_api(go, obj["nats"])
