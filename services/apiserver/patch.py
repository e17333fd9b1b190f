"""The three PATCH bodies the Kubernetes API takes, applied to an object's JSON form. Pure.

- ``application/merge-patch+json``: RFC 7386 (maps merge, ``null`` removes, lists replace).
- ``application/json-patch+json``: RFC 6902 operations, applied by the ``jsonpatch`` library.
- ``application/strategic-merge-patch+json``: Kubernetes' strategic merge. A list named in
  :data:`MERGE_KEYS` merges element by element on its merge key (``containers`` by ``name``,
  container ``ports`` by ``containerPort``, ``volumeMounts`` by ``mountPath``, ...); the others
  replace. Directives: ``$patch: delete`` / ``replace`` / ``merge`` in a map or list element,
  ``$setElementOrder/<list>``, ``$deleteFromPrimitiveList/<list>`` and ``$retainKeys``, which
  ``kubectl apply`` sends. ``metadata.finalizers`` merges as a set, as in Kubernetes.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# list field -> merge key (the patchMergeKey of Kubernetes' types); "ports" is contextual.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "conditions": "type",
    "ownerReferences": "uid",
    "resourceClaims": "name",
    "ports": "port",
}
CONTAINER_PORT_KEY = "containerPort"
SET_LISTS = frozenset({"finalizers"})  # primitive lists merged as sets (patchStrategy merge)


class PatchError(ValueError):
    """A patch that cannot be applied; the message says why."""


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def json_patch(target: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise PatchError("a JSON patch is a list of operations")
    try:
        return jsonpatch.apply_patch(target, operations)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError, ValueError) as e:
        raise PatchError(f"the JSON patch cannot be applied: {e}") from None


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch is a JSON object")
    return _merge_map(target if isinstance(target, dict) else {}, patch, None)


def merge_key(field: str | None, elements: list[Any]) -> str | None:
    if field is None or field not in MERGE_KEYS:
        return None
    if field == "ports" and any(isinstance(e, dict) and CONTAINER_PORT_KEY in e for e in elements):
        return CONTAINER_PORT_KEY
    return MERGE_KEYS[field]


def _merge_map(target: dict[str, Any], patch: dict[str, Any], _field: str | None) -> dict[str, Any] | None:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    if directive not in (None, "merge"):
        raise PatchError(f"unknown $patch directive {directive!r}")
    out = dict(target)
    retain = patch.get("$retainKeys")
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value if isinstance(value, list) else []
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            drop = value if isinstance(value, list) else []
            if isinstance(out.get(name), list):
                out[name] = [v for v in out[name] if v not in drop]
            continue
        if value is None:
            out.pop(key, None)
            continue
        current = out.get(key)
        if isinstance(value, dict):
            merged = _merge_map(current if isinstance(current, dict) else {}, value, key)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
        elif isinstance(value, list):
            out[key] = _merge_list(current if isinstance(current, list) else [], value, key)
        else:
            out[key] = copy.deepcopy(value)
    for name, order in orders.items():
        if isinstance(out.get(name), list):
            out[name] = _ordered(out[name], order, merge_key(name, out[name] + order))
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _merge_list(target: list[Any], patch: list[Any], field: str) -> list[Any]:
    if any(isinstance(e, dict) and e.get("$patch") == "replace" for e in patch):
        return [copy.deepcopy(e) for e in patch if not (isinstance(e, dict) and "$patch" in e)]
    if field in SET_LISTS and all(not isinstance(e, dict | list) for e in patch):
        return list(target) + [e for e in patch if e not in target]
    key = merge_key(field, target + patch)
    if key is None:
        return [copy.deepcopy(e) for e in patch]
    out = [copy.deepcopy(e) for e in target]
    for element in patch:
        if not isinstance(element, dict):
            raise PatchError(f"{field}: an element of a list merged on {key!r} must be an object")
        if key not in element:
            raise PatchError(f"{field}: an element has no merge key {key!r}")
        at = next((i for i, e in enumerate(out) if isinstance(e, dict) and e.get(key) == element[key]), None)
        if element.get("$patch") == "delete":
            if at is not None:
                del out[at]
            continue
        if at is None:
            merged = _merge_map({}, element, field)
            if merged is not None:
                out.append(merged)
        else:
            merged = _merge_map(out[at], element, field)
            if merged is None:
                del out[at]
            else:
                out[at] = merged
    return out


def _ordered(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    """``items`` in the order ``$setElementOrder`` names; items it does not name keep their
    place after the named ones."""
    def ident(e: Any) -> Any:
        return e.get(key) if key is not None and isinstance(e, dict) else e

    wanted = [ident(o) for o in order]
    named = sorted((e for e in items if ident(e) in wanted), key=lambda e: wanted.index(ident(e)))
    return named + [e for e in items if ident(e) not in wanted]


def apply(content_type: str, target: dict[str, Any], body: Any) -> dict[str, Any]:
    """``target`` with the patch ``body`` of ``content_type`` applied."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == MERGE_PATCH:
        out = merge_patch(target, body)
    elif kind == JSON_PATCH:
        out = json_patch(target, body)
    elif kind == STRATEGIC:
        out = strategic_merge_patch(target, body)
    else:
        raise PatchError(f"unsupported patch type {content_type!r}")
    if not isinstance(out, dict):
        raise PatchError("the patched object is not a JSON object")
    return out
