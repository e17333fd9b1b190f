"""Subresources computed in the apiserver: the scale of custom kinds (``autoscaling/v1`` Scale
from the paths the CRD's ``subresources.scale`` names, as Kubernetes' apiextensions-apiserver
serves it) and the pod an in-place resize makes (``pods/resize``). Pure."""

from __future__ import annotations

from typing import Any

from schemas import jsonpath, podresize
from schemas.pod import Pod
from schemas.registry import KindInfo
from services.apiserver.respond import Failure


def scale_paths(info: KindInfo, obj: dict[str, Any]) -> tuple[str, str, str | None]:
    """(specReplicasPath, statusReplicasPath, labelSelectorPath) of the object's version."""
    try:
        scale = info.custom.version(str(obj.get("apiVersion") or info.api_version)).scale
    except KeyError:
        scale = None
    if scale is None:
        raise Failure(404, "NotFound", f"the server could not find the requested resource ({info.plural}/scale)")
    return scale.specReplicasPath, scale.statusReplicasPath, scale.labelSelectorPath


def _first(path: str, obj: dict[str, Any]) -> Any:
    found = jsonpath.find(path, obj)
    return found[0] if found else None


def custom_scale(obj: dict[str, Any], info: KindInfo) -> dict[str, Any]:
    spec_path, status_path, selector_path = scale_paths(info, obj)
    meta = obj.get("metadata") or {}
    replicas = _first(spec_path, obj)
    status: dict[str, Any] = {"replicas": _first(status_path, obj) or 0}
    if selector_path:
        selector = _first(selector_path, obj)
        if isinstance(selector, str):
            status["selector"] = selector
    return {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta},
        "spec": {"replicas": replicas if isinstance(replicas, int) else 0},
        "status": status,
    }


def set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    """Set the field a simple path (``.spec.replicas``) names, making the objects on the way."""
    names = [p for p in path.strip().lstrip(".").split(".") if p]
    if not names:
        raise Failure(422, "Invalid", f"cannot set {path!r}")
    cur = obj
    for name in names[:-1]:
        nxt = cur.get(name)
        if not isinstance(nxt, dict):
            nxt = cur[name] = {}
        cur = nxt
    cur[names[-1]] = value


def resize_of(current: dict[str, Any], wanted: Any, name: str) -> dict[str, Any]:
    """The stored pod ``current`` with the containers' resources of ``wanted`` (a pod), or 422
    naming what a resize may not change."""
    from kyb.render import to_dict
    from schemas.validation import SchemaError, decode

    if not isinstance(wanted, dict):
        raise Failure(400, "BadRequest", "the body of pods/resize must be a Pod")
    try:
        new, old = decode(wanted), decode(current)
    except SchemaError as e:
        raise Failure(422, "Invalid", f'Pod "{name}" is invalid: {e}',
                      causes=[{"field": f, "message": m, "reason": "FieldValueInvalid"} for f, m in e.details]) from None
    assert isinstance(new, Pod) and isinstance(old, Pod)
    found = podresize.problems(new, old)
    if found:
        summary = "; ".join(f"{f}: {m}" if f else m for f, m in found[:3])
        raise Failure(422, "Invalid", f'Pod "{name}" is invalid: {summary}',
                      causes=[{"field": f, "message": m, "reason": "FieldValueForbidden"} for f, m in found])
    out = to_dict(podresize.resized(old, new))
    out.setdefault("metadata", {})["resourceVersion"] = (current.get("metadata") or {}).get("resourceVersion")
    return out
