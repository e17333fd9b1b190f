"""OpenAPI documents of the served kinds, generated from the msgspec Structs in ``schemas/``
(``msgspec.json.schema_components``, as schemas/generate.py makes the JSON Schema files).

- ``/openapi/v3`` lists one document per group version; each holds the component schemas
  (kinds marked ``x-kubernetes-group-version-kind``, merge lists with
  ``x-kubernetes-patch-merge-key``/``x-kubernetes-patch-strategy``) and the paths with their
  operations, whose PATCH names the ``fieldValidation`` and ``dryRun`` parameters. That is
  what ``kubectl explain`` and ``kubectl apply`` (its field validation and strategic merge)
  read.
- ``/openapi/v2`` is the same as Swagger 2.0 JSON (kubectl asks for protobuf first; it is
  told 406 and manages without).

JSON Schema's ``anyOf [X, null]`` (an Optional field) becomes X, int-or-string unions become
``x-kubernetes-int-or-string``, and what OpenAPI 3.0 has no word for is dropped.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import msgspec

from schemas import registry
from schemas.generate import normalise_descriptions
from schemas.registry import KindInfo, all_kinds
from services.apiserver import discovery
from services.apiserver.patch import CONTAINER_PORT_KEY, MERGE_KEYS, SET_LISTS

REF_V3 = "#/components/schemas/{name}"
REF_V2 = "#/definitions/{name}"
LIST_PARAMS = ("labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "watch",
               "allowWatchBookmarks", "timeoutSeconds")
WRITE_PARAMS = ("dryRun", "fieldManager", "fieldValidation")
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json")


def _clean(node: Any, owner: str | None = None, field: str | None = None) -> Any:
    if isinstance(node, list):
        return [_clean(n, owner, field) for n in node]
    if not isinstance(node, dict):
        return node
    any_of = node.get("anyOf")
    if isinstance(any_of, list):
        rest = [a for a in any_of if a != {"type": "null"}]
        types = sorted(a.get("type", "") for a in rest if isinstance(a, dict))
        base = {k: v for k, v in node.items() if k not in ("anyOf", "default")}
        if len(rest) == 1:
            return _clean({**rest[0], **base}, owner, field)
        if "integer" in types and "string" in types:
            return {**base, "x-kubernetes-int-or-string": True}
        return {**base, "type": "object"} if not types else _clean({**rest[0], **base}, owner, field)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "additionalProperties"):
            continue
        if key == "default" and value is None:
            continue
        if key == "required" and not value:
            continue
        if key == "properties":
            out[key] = {name: _clean(v, owner, name) for name, v in value.items()}
            continue
        out[key] = _clean(value, owner, field)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "$ref" in out and len(out) > 1:
        out = {"allOf": [{"$ref": out.pop("$ref")}], **out}
    if out.get("type") == "array" and field is not None:
        if field in MERGE_KEYS and isinstance(out.get("items"), dict) and ("$ref" in out["items"] or
                                                                           "allOf" in out["items"]):
            key = CONTAINER_PORT_KEY if field == "ports" and owner == "Container" else MERGE_KEYS[field]
            if field != "ports" or owner in ("Container", "ServiceSpec"):
                out["x-kubernetes-patch-merge-key"] = key
                out["x-kubernetes-patch-strategy"] = "merge"
                out["x-kubernetes-list-type"] = "map"
                out["x-kubernetes-list-map-keys"] = [key]
        elif field in SET_LISTS:
            out["x-kubernetes-patch-strategy"] = "merge"
            out["x-kubernetes-list-type"] = "set"
    return out


def _gvk(info: KindInfo) -> list[dict[str, str]]:
    group, version = discovery.split_gv(info.api_version)
    return [{"group": group, "kind": info.kind, "version": version}]


def component_name(info: KindInfo, group_version: str | None = None) -> str:
    """The schema component of a kind at a version: the Struct's name, or for a custom kind at
    a version other than its preferred one ``<Kind>.<version>`` (one component per version,
    each naming its one group-version-kind, as kubectl's validation expects)."""
    gv = group_version or info.api_version
    if info.custom is None or gv == info.api_version:
        return info.type.__name__
    return f"{info.type.__name__}.{gv.rpartition('/')[2]}"


def _custom_schema(info: KindInfo, gv: str, ref_template: str) -> dict[str, Any]:
    """A custom kind's schema at one version: its openAPIV3Schema, with metadata."""
    schema = json.loads(json.dumps(info.custom.version(gv).schema))
    props = schema.setdefault("properties", {})
    props["metadata"] = {"$ref": ref_template.format(name="ObjectMeta")}
    schema["x-kubernetes-group-version-kind"] = [{"group": info.group, "kind": info.kind,
                                                  "version": gv.rpartition("/")[2]}]
    return schema


def components(ref_template: str) -> dict[str, Any]:
    every = all_kinds()
    kinds = [i for i in every if i.custom is None]
    _, comps = msgspec.json.schema_components([i.type for i in kinds], ref_template=ref_template)
    comps = normalise_descriptions(comps)
    out = {name: _clean(schema, owner=name) for name, schema in comps.items()}
    for info in kinds:
        name = info.type.__name__
        if name in out:
            out[name]["x-kubernetes-group-version-kind"] = _gvk(info)
            props = out[name].setdefault("properties", {})
            props["apiVersion"] = {"type": "string", "description": "APIVersion defines the versioned schema of "
                                   "this representation of an object."}
            props["kind"] = {"type": "string", "description": "Kind is a string value representing the REST "
                             "resource this object represents."}
    for info in every:
        if info.custom is not None:
            for gv in info.api_versions:
                out.setdefault(component_name(info, gv), _custom_schema(info, gv, ref_template))
    return out


def _param(name: str, where: str = "query", kind: str = "string", v3: bool = True) -> dict[str, Any]:
    if v3:
        return {"name": name, "in": where, "required": where == "path", "schema": {"type": kind}}
    return {"name": name, "in": where, "required": where == "path", "type": kind}


def _paths(info: KindInfo, v3: bool, group_version: str | None = None) -> dict[str, Any]:
    gv = group_version or info.api_version
    group, version = discovery.split_gv(gv)
    prefix = "/api/v1" if not group else f"/apis/{group}/{version}"
    ns = "/namespaces/{namespace}" if info.namespaced else ""
    ref = (REF_V3 if v3 else REF_V2).format(name=component_name(info, gv))
    gvk = {"group": group, "kind": info.kind, "version": version}
    common = [_param("namespace", "path", v3=v3)] if info.namespaced else []

    def op(action: str, verb: str, params: tuple[str, ...], *, body: tuple[str, ...] = ()) -> dict[str, Any]:
        out: dict[str, Any] = {
            "operationId": f"{verb}{info.kind}",
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
            "parameters": [_param(p, kind="integer" if p in ("limit", "timeoutSeconds") else "string", v3=v3)
                           for p in params],
        }
        if v3:
            out["responses"] = {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": ref}}}}}
            if body:
                out["requestBody"] = {"content": {t: {"schema": {"$ref": ref} if t == "application/json"
                                                      else {"type": "object"}} for t in body}}
        else:
            out["responses"] = {"200": {"description": "OK", "schema": {"$ref": ref}}}
            out["consumes"] = list(body) or ["*/*"]
            out["produces"] = ["application/json"]
            if body:
                out["parameters"].append({"name": "body", "in": "body", "required": True, "schema": {"$ref": ref}})
        return out

    collection = {"parameters": common,
                  "get": op("list", "list", LIST_PARAMS),
                  "post": op("post", "create", WRITE_PARAMS, body=("application/json",))}
    item = {"parameters": [*common, _param("name", "path", v3=v3)],
            "get": op("get", "read", ()),
            "put": op("put", "replace", WRITE_PARAMS, body=("application/json",)),
            "patch": op("patch", "patch", (*WRITE_PARAMS, "force"), body=PATCH_TYPES),
            "delete": op("delete", "delete", ("dryRun", "gracePeriodSeconds", "propagationPolicy"))}
    out = {f"{prefix}{ns}/{info.plural}": collection, f"{prefix}{ns}/{info.plural}/{{name}}": item}
    if info.namespaced:
        out[f"{prefix}/{info.plural}"] = {"get": op("list", "list", LIST_PARAMS) | {"operationId": f"list{info.kind}ForAllNamespaces"}}
    return out


class OpenApi:
    """The documents, computed once."""

    def __init__(self) -> None:
        self._v2: bytes | None = None
        self._v3: dict[str, bytes] | None = None
        self._generation = registry.generation()

    def _fresh(self) -> None:
        """Forget the documents once the kinds changed (a CRD came or went)."""
        if self._generation != registry.generation():
            self._v2 = self._v3 = None
            self._generation = registry.generation()

    def _v3_docs(self) -> dict[str, bytes]:
        self._fresh()
        if self._v3 is None:
            schemas = components(REF_V3)
            docs: dict[str, bytes] = {}
            for gv, kinds in discovery.group_versions().items():
                paths: dict[str, Any] = {}
                for info in kinds:
                    paths.update(_paths(info, v3=True, group_version=gv))
                doc = {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0-kyb"},
                       "paths": paths, "components": {"schemas": schemas}}
                key = "api/v1" if gv == "v1" else f"apis/{gv}"
                docs[key] = json.dumps(doc, sort_keys=True).encode()
            self._v3 = docs
        return self._v3

    def v3_index(self) -> dict[str, Any]:
        return {"paths": {key: {"serverRelativeURL": f"/openapi/v3/{key}?hash={hashlib.sha512(body).hexdigest()[:64]}"}
                          for key, body in self._v3_docs().items()}}

    def v3(self, path: str) -> bytes | None:
        return self._v3_docs().get(path.strip("/"))

    def v2(self) -> bytes:
        self._fresh()
        if self._v2 is None:
            paths: dict[str, Any] = {}
            for info in all_kinds():
                for gv in (info.api_versions if info.custom is not None else (info.api_version,)):
                    paths.update(_paths(info, v3=False, group_version=gv))
            doc = {"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.32.0-kyb"}, "paths": paths,
                   "definitions": components(REF_V2)}
            self._v2 = json.dumps(doc, sort_keys=True).encode()
        return self._v2
