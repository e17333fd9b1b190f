"""v1 LimitRange, and Kubernetes' LimitRanger admission of new pods, pure.

A LimitRange holds per-namespace constraints on compute resources. Items of ``type: Container``
give every container of a new pod its ``default`` limits and ``defaultRequest`` requests where it
sets none, then bound each container's requests and limits by ``min`` and ``max`` and the ratio
limit/request by ``maxLimitRequestRatio``; items of ``type: Pod`` bound the pod's sums the same
way. A pod outside them is refused (403) with Kubernetes' messages
(``plugin/pkg/admission/limitranger``). Only creates are admitted: a pod's containers do not
change afterwards. Items of ``type: PersistentVolumeClaim`` are stored and validated only.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Literal

from msgspec.structs import replace

from schemas import names
from schemas.helpers import pod_resources
from schemas.meta import Base, Object
from schemas.pod import Container, Pod
from schemas.quantity import format_quantity, parse_quantity

# Every new pod's admission compares the same few bounds: parse each string once.
quantity = functools.lru_cache(maxsize=4096)(parse_quantity)

LimitType = Literal["Container", "Pod", "PersistentVolumeClaim"]
ANNOTATION = "kubernetes.io/limit-ranger"  # what the plugin set, per container, as Kubernetes records it

Errors = list[tuple[str, str]]


class LimitRangeItem(Base, kw_only=True, frozen=True):
    type: LimitType
    max: dict[str, str] = {}
    min: dict[str, str] = {}
    default: dict[str, str] = {}  # default limits (Container only)
    defaultRequest: dict[str, str] = {}  # default requests (Container only)
    maxLimitRequestRatio: dict[str, str] = {}


class LimitRangeSpec(Base, kw_only=True, frozen=True):
    limits: list[LimitRangeItem] = []


class LimitRange(Object, kw_only=True, frozen=True):
    API_VERSION = "v1"
    KIND = "LimitRange"

    spec: LimitRangeSpec = LimitRangeSpec()


class LimitRefused(ValueError):
    """A new pod LimitRanger refuses: ``problems`` holds (field, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]], forbidden: bool = True) -> None:
        super().__init__("; ".join(m for _, m in problems))
        self.problems = problems
        self.forbidden = forbidden  # False: the defaults made the pod invalid (422, as validation says)


# -- defaults (Kubernetes' SetDefaults_LimitRangeItem) -----------------------------------------


def default(lr: LimitRange) -> LimitRange:
    """For Container items: a default limit is the max where none is given; a default request is
    the default limit, else the min."""
    items = []
    for item in lr.spec.limits:
        if item.type != "Container":
            items.append(item)
            continue
        limits = {**item.max, **item.default}
        requests = {**item.min, **limits, **item.defaultRequest}
        items.append(replace(item, default=limits, defaultRequest=requests))
    if items == lr.spec.limits:
        return lr
    return replace(lr, spec=replace(lr.spec, limits=items))


# -- validation (Kubernetes' ValidateLimitRange) ------------------------------------------------


def _parsed(errs: Errors, path: str, values: Mapping[str, str]) -> dict[str, Fraction]:
    out = {}
    for key, text in values.items():
        if bad := names.qualified_name(key):
            errs.extend((f"{path}[{key}]", m) for m in bad)
        try:
            q = parse_quantity(text)
        except ValueError as e:
            errs.append((f"{path}[{key}]", str(e)))
            continue
        if q < 0:
            errs.append((f"{path}[{key}]", f'Invalid value: "{text}": must be greater than or equal to 0'))
        out[key] = q
    return out


def validate(errs: Errors, lr: LimitRange) -> None:
    seen: set[str] = set()
    for i, item in enumerate(lr.spec.limits):
        path = f"spec.limits[{i}]"
        if item.type in seen:
            errs.append((f"{path}.type", f'Duplicate value: "{item.type}"'))
        seen.add(item.type)
        mx, mn = _parsed(errs, f"{path}.max", item.max), _parsed(errs, f"{path}.min", item.min)
        dl, dr = _parsed(errs, f"{path}.default", item.default), _parsed(errs, f"{path}.defaultRequest", item.defaultRequest)
        ratio = _parsed(errs, f"{path}.maxLimitRequestRatio", item.maxLimitRequestRatio)
        if item.type == "Pod":
            if item.default:
                errs.append((f"{path}.default", "Forbidden: may not be specified when `type` is 'Pod'"))
            if item.defaultRequest:
                errs.append((f"{path}.defaultRequest", "Forbidden: may not be specified when `type` is 'Pod'"))
        if item.type == "PersistentVolumeClaim" and "storage" not in mx and "storage" not in mn:
            errs.append((f"{path}.limits", "Required value: either minimum or maximum storage value is required, "
                                           "but neither was provided"))
        for k in sorted({*mx, *mn, *dl, *dr, *ratio}):
            t = {"max": item.max.get(k), "min": item.min.get(k), "default": item.default.get(k),
                 "defaultRequest": item.defaultRequest.get(k), "ratio": item.maxLimitRequestRatio.get(k)}
            if k in mn and k in mx and mn[k] > mx[k]:
                errs.append((f"{path}.min[{k}]", f'Invalid value: "{t["min"]}": min value {t["min"]} is greater than '
                                                 f'max value {t["max"]}'))
            if k in dr and k in mn and mn[k] > dr[k]:
                errs.append((f"{path}.defaultRequest[{k}]", f'Invalid value: "{t["defaultRequest"]}": min value '
                                                            f'{t["min"]} is greater than default request value '
                                                            f'{t["defaultRequest"]}'))
            if k in dr and k in mx and dr[k] > mx[k]:
                errs.append((f"{path}.defaultRequest[{k}]", f'Invalid value: "{t["defaultRequest"]}": default request '
                                                            f'value {t["defaultRequest"]} is greater than max value '
                                                            f'{t["max"]}'))
            if k in dr and k in dl and dr[k] > dl[k]:
                errs.append((f"{path}.defaultRequest[{k}]", f'Invalid value: "{t["defaultRequest"]}": default request '
                                                            f'value {t["defaultRequest"]} is greater than default '
                                                            f'limit value {t["default"]}'))
            if k in dl and k in mn and mn[k] > dl[k]:
                errs.append((f"{path}.default[{k}]", f'Invalid value: "{t["min"]}": min value {t["min"]} is greater '
                                                     f'than default value {t["default"]}'))
            if k in dl and k in mx and dl[k] > mx[k]:
                errs.append((f"{path}.default[{k}]", f'Invalid value: "{t["max"]}": default value {t["default"]} is '
                                                     f'greater than max value {t["max"]}'))
            if k in ratio and ratio[k] < 1:
                errs.append((f"{path}.maxLimitRequestRatio[{k}]", f'Invalid value: "{t["ratio"]}": ratio {t["ratio"]} '
                                                                  "is less than 1"))
            if k in ratio and k in mn and k in mx and mn[k] > 0 and ratio[k] > mx[k] / mn[k]:
                errs.append((f"{path}.maxLimitRequestRatio[{k}]", f'Invalid value: "{t["ratio"]}": ratio {t["ratio"]} '
                                                                  f"is greater than max/min = {float(mx[k] / mn[k]):f}"))


# -- LimitRanger admission of a new pod ---------------------------------------------------------


def _container_defaults(ranges: Iterable[LimitRange]) -> tuple[dict[str, str], dict[str, str]]:
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    for lr in ranges:
        for item in default(lr).spec.limits:
            if item.type == "Container":
                requests.update(item.defaultRequest)
                limits.update(item.default)
    return limits, requests


def _with_defaults(c: Container, limits: dict[str, str], requests: dict[str, str]) -> tuple[Container, list[str]]:
    res = c.resources
    new_limits = {**{k: v for k, v in limits.items() if k not in res.limits}, **res.limits}
    new_requests = {**{k: v for k, v in requests.items() if k not in res.requests}, **res.requests}
    notes = []
    set_requests = sorted(k for k in requests if k not in res.requests)
    set_limits = sorted(k for k in limits if k not in res.limits)
    if set_requests:
        notes.append(f"{', '.join(set_requests)} request for container {c.name}")
    if set_limits:
        notes.append(f"{', '.join(set_limits)} limit for container {c.name}")
    if not notes:
        return c, []
    return replace(c, resources=replace(res, limits=new_limits, requests=new_requests)), notes


def _min(kind: str, res: str, enforced: str, req: Mapping[str, str], lim: Mapping[str, str]) -> str | None:
    e = quantity(enforced)
    if res not in req:
        return f"minimum {res} usage per {kind} is {enforced}.  No request is specified"
    if quantity(req[res]) < e:
        return f"minimum {res} usage per {kind} is {enforced}, but request is {req[res]}"
    if res in lim and quantity(lim[res]) < e:
        return f"minimum {res} usage per {kind} is {enforced}, but limit is {lim[res]}"
    return None


def _max(kind: str, res: str, enforced: str, req: Mapping[str, str], lim: Mapping[str, str]) -> str | None:
    e = quantity(enforced)
    if res not in lim:
        return f"maximum {res} usage per {kind} is {enforced}.  No limit is specified"
    if quantity(lim[res]) > e:
        return f"maximum {res} usage per {kind} is {enforced}, but limit is {lim[res]}"
    if res in req and quantity(req[res]) > e:
        return f"maximum {res} usage per {kind} is {enforced}, but request is {req[res]}"
    return None


def _ratio(kind: str, res: str, enforced: str, req: Mapping[str, str], lim: Mapping[str, str]) -> str | None:
    r = quantity(req[res]) if res in req else Fraction(0)
    li = quantity(lim[res]) if res in lim else Fraction(0)
    if r == 0:
        return f"{res} max limit to request ratio per {kind} is {enforced}, but no request is specified or request is 0"
    if li == 0:
        return f"{res} max limit to request ratio per {kind} is {enforced}, but no limit is specified or limit is 0"
    if li / r > quantity(enforced):
        return f"{res} max limit to request ratio per {kind} is {enforced}, but provided ratio is {float(li / r):f}"
    return None


def _check(errs: Errors, path: str, kind: str, item: LimitRangeItem, req: Mapping[str, str],
           lim: Mapping[str, str]) -> None:
    for res, enforced in sorted(item.min.items()):
        if (m := _min(kind, res, enforced, req, lim)) is not None:
            errs.append((f"{path}.requests[{res}]", m))
    for res, enforced in sorted(item.max.items()):
        if (m := _max(kind, res, enforced, req, lim)) is not None:
            errs.append((f"{path}.limits[{res}]", m))
    for res, enforced in sorted(item.maxLimitRequestRatio.items()):
        if (m := _ratio(kind, res, enforced, req, lim)) is not None:
            errs.append((f"{path}.limits[{res}]", m))


def _fmt(value: Fraction, binary: bool) -> str:
    # as Kubernetes' Quantity.Add keeps the first operand's format: binary suffixes stay binary
    return format_quantity(value, binary=binary)


def pod_totals(pod: Pod) -> tuple[dict[str, str], dict[str, str]]:
    """The pod's requests and limits as LimitRanger and quota sum them (Kubernetes' PodRequests
    and PodLimits: ``schemas.helpers.pod_resources``, sidecars counted), as quantity strings
    (binary where a container wrote that resource in binary units)."""
    everyone = [c.resources for c in (*pod.spec.containers, *pod.spec.initContainers)]
    if pod.spec.resources is not None:
        everyone.append(pod.spec.resources)
    binary = {k for r in everyone for values in (r.requests, r.limits) for k, v in values.items() if v.endswith("i")}
    req = pod_resources(pod, lambda r: {k: quantity(v) for k, v in r.requests.items()})
    lim = pod_resources(pod, lambda r: {k: quantity(v) for k, v in r.limits.items()})
    return ({k: _fmt(v, k in binary) for k, v in req.items()}, {k: _fmt(v, k in binary) for k, v in lim.items()})


def with_limits(pod: Pod, ranges: Iterable[LimitRange]) -> Pod:
    """Kubernetes' LimitRanger admission of a new pod against its namespace's LimitRanges:
    defaults first (annotated ``kubernetes.io/limit-ranger``), then every Container and Pod
    item's bounds. :class:`LimitRefused` names each container field out of bounds."""
    ranges = [default(lr) for lr in ranges if lr.metadata.deletionTimestamp is None]
    if not ranges:
        return pod
    limits, requests = _container_defaults(ranges)
    notes: list[str] = []
    groups = []
    for containers in (pod.spec.containers, pod.spec.initContainers):
        out = []
        for c in containers:
            c, set_ = _with_defaults(c, limits, requests)
            out.append(c)
            notes += set_
        groups.append(out)
    spec = replace(pod.spec, containers=groups[0], initContainers=groups[1]) if notes else pod.spec
    invalid: Errors = []
    for field, containers in (("containers", spec.containers), ("initContainers", spec.initContainers)):
        for i, c in enumerate(containers):
            for k, v in c.resources.requests.items():
                if k in c.resources.limits and quantity(v) > quantity(c.resources.limits[k]):
                    invalid.append((f"spec.{field}[{i}].resources.requests[{k}]",
                                    f'Invalid value: "{v}": must be less than or equal to {k} limit of '
                                    f"{c.resources.limits[k]}"))
    if invalid:
        raise LimitRefused(invalid, forbidden=False)
    errs: Errors = []
    for lr in ranges:
        for item in lr.spec.limits:
            if item.type == "Container":
                for field, containers in (("containers", spec.containers), ("initContainers", spec.initContainers)):
                    for i, c in enumerate(containers):
                        _check(errs, f"spec.{field}[{i}].resources", "Container", item, c.resources.requests,
                               c.resources.limits)
            elif item.type == "Pod":
                req, lim = pod_totals(replace(pod, spec=spec))
                _check(errs, "spec", "Pod", item, req, lim)
    if errs:
        raise LimitRefused(errs)
    if not notes:
        return pod
    note = "LimitRanger plugin set: " + "; ".join(notes)
    meta = replace(pod.metadata, annotations={**pod.metadata.annotations, ANNOTATION: note})
    return replace(pod, metadata=meta, spec=spec)


def keep_defaults(new: Pod, old: Pod) -> Pod:
    """An update of a pod keeps the resources LimitRanger gave its containers when the new spec
    names none of its own for them (a pod's resources do not change after its creation)."""
    def kept(news: list[Container], olds: list[Container]) -> list[Container]:
        by_name = {c.name: c for c in olds}
        out = []
        for c in news:
            was = by_name.get(c.name)
            res = c.resources
            if was is not None and res != was.resources and all(
                    was.resources.requests.get(k) == v for k, v in res.requests.items()) and all(
                    was.resources.limits.get(k) == v for k, v in res.limits.items()):
                c = replace(c, resources=was.resources)
            out.append(c)
        return out

    if ANNOTATION not in old.metadata.annotations:
        return new
    containers, inits = kept(new.spec.containers, old.spec.containers), kept(new.spec.initContainers,
                                                                             old.spec.initContainers)
    if containers == new.spec.containers and inits == new.spec.initContainers:
        return new
    return replace(new, spec=replace(new.spec, containers=containers, initContainers=inits))
