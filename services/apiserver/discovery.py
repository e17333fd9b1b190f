"""What the apiserver tells clients it serves: /version, /api, /apis, the APIResourceList of
each group version and the aggregated discovery document (apidiscovery.k8s.io/v2), all
computed from ``schemas.registry``. Pure: no I/O.

kubectl resolves what a user types (``po``, ``deploy``, ``all``) from these documents, so the
short names and categories are kubectl's own.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass

from schemas import registry
from schemas.registry import KindInfo, all_kinds

KUBE_VERSION = ("1", "32")
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
# kubectl's "all" category (the kinds of it this installation has).
ALL_CATEGORY = frozenset({"pods", "services", "replicationcontrollers", "daemonsets", "deployments", "replicasets",
                          "horizontalpodautoscalers", "jobs", "cronjobs", "statefulsets"})
SCALABLE = frozenset({"deployments", "replicasets", "replicationcontrollers", "statefulsets"})
AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


@dataclass(frozen=True)
class Subresource:
    name: str
    kind: str
    group: str
    version: str
    verbs: tuple[str, ...]


@dataclass(frozen=True)
class Extra:
    """A resource served beside the kinds of the registry (not kept in a bucket)."""

    group_version: str
    name: str
    singular: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...]
    short_names: tuple[str, ...] = ()


EVENT_VERBS = ("create", "get", "list", "watch")
EXTRA = (
    Extra("v1", "events", "event", "Event", True, EVENT_VERBS, ("ev",)),
    Extra("events.k8s.io/v1", "events", "event", "Event", True, EVENT_VERBS, ("ev",)),
    Extra("authorization.k8s.io/v1", "selfsubjectaccessreviews", "selfsubjectaccessreview",
          "SelfSubjectAccessReview", False, ("create",)),
    Extra("authorization.k8s.io/v1", "selfsubjectrulesreviews", "selfsubjectrulesreview",
          "SelfSubjectRulesReview", False, ("create",)),
    Extra("authorization.k8s.io/v1", "subjectaccessreviews", "subjectaccessreview", "SubjectAccessReview", False,
          ("create",)),
    Extra("authorization.k8s.io/v1", "localsubjectaccessreviews", "localsubjectaccessreview",
          "LocalSubjectAccessReview", True, ("create",)),
    Extra("authentication.k8s.io/v1", "selfsubjectreviews", "selfsubjectreview", "SelfSubjectReview", False,
          ("create",)),
    Extra("authentication.k8s.io/v1", "tokenreviews", "tokenreview", "TokenReview", False, ("create",)),
    Extra("metrics.k8s.io/v1beta1", "nodes", "", "NodeMetrics", False, ("get", "list")),
    Extra("metrics.k8s.io/v1beta1", "pods", "", "PodMetrics", True, ("get", "list")),
)


def extras(group_version: str) -> list[Extra]:
    return [e for e in EXTRA if e.group_version == group_version]


def scalable(info: KindInfo) -> bool:
    if info.custom is not None:
        return any(v.scale is not None for v in info.custom.versions.values())
    return info.plural in SCALABLE


def custom_group(group_version: str) -> bool:
    """Whether a group version may be a custom kind's (a group with a dot that no built-in has)."""
    group = split_gv(group_version)[0]
    return "." in group and not any(i.group == group and i.custom is None for i in all_kinds())


def subresources(info: KindInfo, group_version: str | None = None) -> list[Subresource]:
    group, version = split_gv(group_version or info.api_version)
    if info.custom is not None:
        v = info.custom.versions.get(version)
        out = []
        if v is not None and v.status:
            out.append(Subresource("status", info.kind, group, version, ("get", "patch", "update")))
        if v is not None and v.scale is not None:
            out.append(Subresource("scale", "Scale", "autoscaling", "v1", ("get", "patch", "update")))
        return out
    out = [Subresource("status", info.kind, group, version, ("get", "patch", "update"))]
    if info.plural in SCALABLE:
        out.append(Subresource("scale", "Scale", "autoscaling", "v1", ("get", "patch", "update")))
    if info.kind == "ServiceAccount":
        out.append(Subresource("token", "TokenRequest", "authentication.k8s.io", "v1", ("create",)))
    if info.kind == "Pod":
        out.append(Subresource("log", "Pod", "", "v1", ("get",)))
        out.append(Subresource("eviction", "Eviction", "policy", "v1", ("create",)))
        out.append(Subresource("binding", "Binding", "", "v1", ("create",)))
        out.append(Subresource("resize", "Pod", "", "v1", ("get", "patch", "update")))
        for name in ("exec", "attach", "portforward"):
            out.append(Subresource(name, {"exec": "PodExecOptions", "attach": "PodAttachOptions"}.get(
                name, "PodPortForwardOptions"), "", "v1", ("create", "get")))
    return out


def split_gv(gv: str) -> tuple[str, str]:
    return tuple(gv.split("/", 1)) if "/" in gv else ("", gv)  # type: ignore[return-value]


def group_versions() -> dict[str, list[KindInfo]]:
    """groupVersion ("v1", "apps/v1") -> the kinds served there (each built-in kind at its
    preferred one, a custom kind at each of its served versions)."""
    return _group_versions(registry.generation())


@functools.lru_cache(maxsize=4)
def _group_versions(_generation: int) -> dict[str, list[KindInfo]]:
    out: dict[str, list[KindInfo]] = {}
    for info in all_kinds():
        for gv in (info.api_versions if info.custom is not None else (info.api_version,)):
            out.setdefault(gv, []).append(info)
    return out


def lookup(group_version: str, plural: str) -> KindInfo | None:
    return _by_path(registry.generation()).get((group_version, plural))


@functools.lru_cache(maxsize=4)
def _by_path(_generation: int) -> dict[tuple[str, str], KindInfo]:
    """(groupVersion, plural) -> kind, built once per set of kinds: every request of the
    apiserver looks one up."""
    return {(gv, info.plural): info for gv, infos in group_versions().items() for info in infos}


def version(build_date: str = "1970-01-01T00:00:00Z") -> dict:
    major, minor = KUBE_VERSION
    return {
        "major": major, "minor": minor, "gitVersion": f"v{major}.{minor}.0-kyb", "gitCommit": "",
        "gitTreeState": "clean", "buildDate": build_date, "goVersion": f"python{platform.python_version()}",
        "compiler": platform.python_implementation().lower(), "platform": f"{platform.system().lower()}/amd64",
    }


def api_versions(server_address: str) -> dict:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def _group(name: str, versions: list[str]) -> dict:
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}


def _groups() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for gv in [*group_versions(), *(e.group_version for e in EXTRA)]:
        group, ver = split_gv(gv)
        if group:
            if ver not in out.get(group, []):
                out.setdefault(group, []).append(ver)
    return dict(sorted(out.items()))


def api_group_list() -> dict:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(g, v) for g, v in _groups().items()]}


def api_group(name: str) -> dict | None:
    versions = _groups().get(name)
    if versions is None:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def _categories(info: KindInfo) -> list[str]:
    if info.custom is not None:
        return list(info.custom.categories)
    return ["all"] if info.plural in ALL_CATEGORY else []


def resource_list(group_version: str) -> dict | None:
    kinds = group_versions().get(group_version)
    if kinds is None and not extras(group_version):
        return None
    kinds = kinds or []
    resources = []
    for e in extras(group_version):
        entry = {"name": e.name, "singularName": e.singular, "namespaced": e.namespaced, "kind": e.kind,
                 "verbs": list(e.verbs)}
        if e.short_names:
            entry["shortNames"] = list(e.short_names)
        resources.append(entry)
    for info in kinds:
        entry = {"name": info.plural, "singularName": info.singular, "namespaced": info.namespaced,
                 "kind": info.kind, "verbs": VERBS}
        if info.short_names:
            entry["shortNames"] = list(info.short_names)
        if _categories(info):
            entry["categories"] = _categories(info)
        resources.append(entry)
        for sub in subresources(info, group_version):
            one = {"name": f"{info.plural}/{sub.name}", "singularName": "", "namespaced": info.namespaced,
                   "kind": sub.kind, "verbs": list(sub.verbs)}
            if sub.group != split_gv(group_version)[0]:
                one |= {"group": sub.group, "version": sub.version}
            resources.append(one)
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}


def _discovery_resource(info: KindInfo, gv: str) -> dict:
    group, ver = split_gv(gv)
    out = {
        "resource": info.plural,
        "responseKind": {"group": group, "version": ver, "kind": info.kind},
        "scope": "Namespaced" if info.namespaced else "Cluster",
        "singularResource": info.singular,
        "verbs": VERBS,
    }
    if info.short_names:
        out["shortNames"] = list(info.short_names)
    if _categories(info):
        out["categories"] = _categories(info)
    out["subresources"] = [
        {"subresource": s.name, "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
         "verbs": list(s.verbs)}
        for s in subresources(info, gv)
    ]
    return out


def _discovery_extra(e: Extra) -> dict:
    group, ver = split_gv(e.group_version)
    out = {"resource": e.name, "responseKind": {"group": group, "version": ver, "kind": e.kind},
           "scope": "Namespaced" if e.namespaced else "Cluster", "singularResource": e.singular,
           "verbs": list(e.verbs)}
    if e.short_names:
        out["shortNames"] = list(e.short_names)
    return out


def _discovery_resources(gv: str) -> list[dict]:
    return [_discovery_resource(i, gv) for i in group_versions().get(gv, [])] + [_discovery_extra(e) for e in extras(gv)]


def aggregated(core: bool) -> dict:
    """The APIGroupDiscoveryList of /api (core=True) or /apis."""
    items = []
    if core:
        items.append({"metadata": {}, "versions": [
            {"version": "v1", "resources": _discovery_resources("v1"), "freshness": "Current"}]})
    else:
        for group, versions in _groups().items():
            items.append({"metadata": {"name": group}, "versions": [
                {"version": v, "resources": _discovery_resources(f"{group}/{v}"),
                 "freshness": "Current"} for v in versions]})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items}


def wants_aggregated(accept: str) -> bool:
    """Whether an Accept header asks for aggregated discovery v2 (before any plain JSON)."""
    for part in accept.split(","):
        params = {p.split("=", 1)[0].strip(): p.split("=", 1)[1].strip() for p in part.split(";")[1:] if "=" in p}
        if params.get("g") == "apidiscovery.k8s.io" and params.get("as") == "APIGroupDiscoveryList":
            if params.get("v") == "v2":
                return True
            continue
        if part.strip().split(";")[0] in ("application/json", "*/*"):
            return False
    return False
