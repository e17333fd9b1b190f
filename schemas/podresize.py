"""The ``pods/resize`` subresource: which changes an in-place resize may make, as Kubernetes
validates them (only CPU and memory requests and limits of app containers and sidecars; the
pod's QoS class stays; a memory limit is lowered only by restarting the container), and the
pod it makes (everything else as stored). Pure."""

from __future__ import annotations

from fractions import Fraction

from msgspec.structs import replace

from schemas.helpers import qos_class
from schemas.pod import Container, Pod, ResourceRequirements, is_sidecar
from schemas.quantity import parse_quantity

Errors = list[tuple[str, str]]
RESIZABLE = ("cpu", "memory")


def _amount(value: str | None) -> Fraction | None:
    return None if value is None else parse_quantity(value)


def _others(r: ResourceRequirements) -> tuple[dict[str, str], dict[str, str]]:
    return ({k: v for k, v in r.limits.items() if k not in RESIZABLE},
            {k: v for k, v in r.requests.items() if k not in RESIZABLE})


def problems(new: Pod, old: Pod) -> Errors:
    """What Kubernetes refuses in a resize of ``old`` into ``new`` (field path, message)."""
    errs: Errors = []
    if old.status.phase in ("Succeeded", "Failed"):
        errs.append(("", "Forbidden: pod resize is not allowed on a terminated pod"))
    for group in ("containers", "initContainers"):
        before: list[Container] = getattr(old.spec, group)
        after: list[Container] = getattr(new.spec, group)
        if [c.name for c in before] != [c.name for c in after]:
            errs.append((f"spec.{group}", "Forbidden: containers may not be added, removed or renamed by a resize"))
            continue
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            path = f"spec.{group}[{i}].resources"
            if a.resources == b.resources:
                continue
            if group == "initContainers" and not is_sidecar(b):
                errs.append((path, "Forbidden: resources for non-sidecar init containers are immutable"))
                continue
            if _others(a.resources) != _others(b.resources):
                errs.append((path, "Forbidden: only cpu and memory resources are mutable"))
            policy = {p.resourceName: p.restartPolicy for p in b.resizePolicy}
            lowered = _amount(a.resources.limits.get("memory"))
            was = _amount(b.resources.limits.get("memory"))
            if (was is not None and lowered is not None and lowered < was
                    and policy.get("memory", "NotRequired") != "RestartContainer"):
                errs.append((f"{path}.limits[memory]", "Forbidden: memory limits cannot be decreased unless "
                                                         "resizePolicy is RestartContainer"))
    if not errs and qos_class(new) != qos_class(old):
        errs.append(("", "Invalid value: Pod QoS is immutable"))
    return errs


def resized(old: Pod, new: Pod) -> Pod:
    """``old`` with the containers' resources of ``new`` (nothing else of ``new`` is taken)."""
    def take(before: list[Container], after: list[Container]) -> list[Container]:
        by_name = {c.name: c for c in after}
        return [replace(c, resources=by_name[c.name].resources) if c.name in by_name else c for c in before]

    spec = replace(old.spec, containers=take(old.spec.containers, new.spec.containers),
                   initContainers=take(old.spec.initContainers, new.spec.initContainers))
    return replace(old, spec=spec)
