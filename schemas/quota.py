"""v1 ResourceQuota: what a namespace may use, what it uses, and Kubernetes' quota admission of
a new pod, pure.

``spec.hard`` caps resources per namespace: object counts (``pods``, ``services``,
``count/deployments.apps``, ...) and the compute requests and limits of its non-terminal pods
(``requests.cpu``, ``limits.memory``; ``cpu`` and ``memory`` mean the requests). The
resourcequota service keeps ``status.hard`` (a copy of spec.hard) and ``status.used``
(:func:`usage`); every new pod, and every new object a count limits, is charged to its
namespace's quotas before it is stored (:func:`charge`), refused with Kubernetes' "exceeded
quota" message when one would go over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fractions import Fraction

from schemas import names
from schemas.helpers import pod_is_terminal
from schemas.limitrange import pod_totals, quantity
from schemas.meta import Base, Object
from schemas.pod import Pod
from schemas.quantity import format_quantity, parse_quantity
from schemas.registry import UnknownKind, resolve

Errors = list[tuple[str, str]]

# Kubernetes' standard quota resource names (a name with a '/' is any qualified name).
OBJECT_COUNTS = {"pods": "pods", "services": "services", "replicationcontrollers": "replicationcontrollers",
                 "resourcequotas": "resourcequotas", "secrets": "secrets", "configmaps": "configmaps",
                 "persistentvolumeclaims": "persistentvolumeclaims"}
COMPUTE = {"cpu": ("requests", "cpu"), "memory": ("requests", "memory"),
           "ephemeral-storage": ("requests", "ephemeral-storage"),
           "requests.cpu": ("requests", "cpu"), "requests.memory": ("requests", "memory"),
           "requests.ephemeral-storage": ("requests", "ephemeral-storage"),
           "limits.cpu": ("limits", "cpu"), "limits.memory": ("limits", "memory"),
           "limits.ephemeral-storage": ("limits", "ephemeral-storage")}
STANDARD = {*OBJECT_COUNTS, *COMPUTE, "services.nodeports", "services.loadbalancers", "requests.storage"}
_BINARY = {"memory", "ephemeral-storage"}


class ResourceQuotaSpec(Base, kw_only=True, frozen=True):
    hard: dict[str, str] = {}


class ResourceQuotaStatus(Base, kw_only=True, frozen=True):
    hard: dict[str, str] = {}
    used: dict[str, str] = {}


class ResourceQuota(Object, kw_only=True, frozen=True):
    API_VERSION = "v1"
    KIND = "ResourceQuota"

    spec: ResourceQuotaSpec = ResourceQuotaSpec()
    status: ResourceQuotaStatus = ResourceQuotaStatus()


def is_integer_resource(name: str) -> bool:
    return name in OBJECT_COUNTS or name.startswith("count/") or name in ("services.nodeports",
                                                                         "services.loadbalancers")


def validate(errs: Errors, quota: ResourceQuota) -> None:
    """Kubernetes' ValidateResourceQuota of spec.hard (the status is the controller's)."""
    for key, text in quota.spec.hard.items():
        path = f"spec.hard[{key}]"
        if bad := names.qualified_name(key):
            errs.extend((path, m) for m in bad)
        elif "/" not in key and key not in STANDARD:
            errs.append((path, f'Invalid value: "{key}": must be a standard resource for quota'))
        try:
            q = parse_quantity(text)
        except ValueError as e:
            errs.append((path, str(e)))
            continue
        if q < 0:
            errs.append((path, f'Invalid value: "{text}": must be greater than or equal to 0'))
        elif is_integer_resource(key) and q.denominator != 1:
            errs.append((path, f'Invalid value: "{text}": must be an integer'))


# -- usage ---------------------------------------------------------------------------------------


def counted_kind(key: str) -> str | None:
    """The kubectl name of the kind an object-count key counts: ``count/deployments.apps`` ->
    ``deployments.apps``, ``secrets`` -> ``secrets``; None for other keys."""
    if key.startswith("count/"):
        return key[len("count/"):]
    return OBJECT_COUNTS.get(key)


def _fmt(resource: str, value: Fraction) -> str:
    return format_quantity(value, binary=resource in _BINARY)


def pod_usage(pod: Pod, keys: Iterable[str]) -> dict[str, Fraction]:
    """What one pod uses of each of ``keys`` (nothing when it is terminal)."""
    if pod_is_terminal(pod):
        return {}
    requests, limits = pod_totals(pod)
    out: dict[str, Fraction] = {}
    for key in keys:
        if key in ("pods", "count/pods"):
            out[key] = Fraction(1)
        elif key in COMPUTE:
            which, resource = COMPUTE[key]
            values = requests if which == "requests" else limits
            if resource in values:
                out[key] = quantity(values[resource])
    return out


def usage(hard: Mapping[str, str], pods: Iterable[Pod], counts: Mapping[str, int]) -> dict[str, str]:
    """``status.used`` for ``hard``: pod counts and compute sums over the non-terminal ``pods``,
    other object counts from ``counts`` (by :func:`counted_kind`). Keys it cannot count
    (services.nodeports, extended resources) are left out."""
    keys = list(hard)
    sums: dict[str, Fraction] = {k: Fraction(0) for k in keys if k in COMPUTE or k in ("pods", "count/pods")}
    for pod in pods:
        for k, v in pod_usage(pod, keys).items():
            sums[k] += v
    out = {k: _fmt(COMPUTE[k][1] if k in COMPUTE else k, v) for k, v in sums.items()}
    for k in keys:
        kind = counted_kind(k)
        if k not in out and kind is not None and kind in counts:
            out[k] = str(counts[kind])
    return out


# -- admission of a new pod ---------------------------------------------------------------------


class QuotaRefused(ValueError):
    """A new pod a quota refuses (403); ``field`` is the quota's resource at fault."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def _joined(values: Mapping[str, str]) -> str:
    return ",".join(f"{k}={values[k]}" for k in sorted(values))


def _counts_kind(key: str, kind: str) -> bool:
    """Whether the object-count key ``key`` counts objects of ``kind``."""
    name = counted_kind(key)
    if name is None:
        return False
    try:
        info = resolve(name)
    except UnknownKind:
        return False
    # The kinds CRDs make are not counted by the resourcequota service yet: charging them would
    # refuse every new one ("status unknown"), so they are not limited.
    return info.kind == kind and info.custom is None


def limited_keys(quota: ResourceQuota, kind: str) -> list[str]:
    """The keys of ``quota`` a new object of ``kind`` is charged to: a pod's count and compute,
    any other kind's count."""
    if kind == "Pod":
        return [k for k in quota.spec.hard if k in COMPUTE or k in ("pods", "count/pods")]
    return [k for k in quota.spec.hard if _counts_kind(k, kind)]


def charge(quota: ResourceQuota, obj: Object) -> dict[str, str] | None:
    """The quota's ``status.used`` with the new ``obj`` added (None: it uses none of what the
    quota limits), as Kubernetes' quota admission computes it; :class:`QuotaRefused` when the
    status is not known yet, a pod's container does not set a limited compute resource, or the
    object would go over ``status.hard`` (messages as Kubernetes')."""
    hard, used = quota.status.hard, quota.status.used
    name = quota.metadata.name
    keys = limited_keys(quota, obj.kind)
    if not keys:
        return None
    if isinstance(obj, Pod):
        missing: dict[str, list[str]] = {}
        for key in keys:
            if key in COMPUTE:
                which, resource = COMPUTE[key]
                for c in obj.spec.containers:
                    if resource not in getattr(c.resources, which):
                        missing.setdefault(key, []).append(c.name)
        if missing:
            text = "; ".join(f"{k} for: {','.join(v)}" for k, v in sorted(missing.items()))
            raise QuotaRefused(f"failed quota: {name}: must specify {text}", f"spec.hard[{sorted(missing)[0]}]")
    for key in keys:
        if key not in hard or key not in used:
            raise QuotaRefused(f"status unknown for quota: {name}, resource: {key}", f"status.used[{key}]")
    delta = pod_usage(obj, keys) if isinstance(obj, Pod) else dict.fromkeys(keys, Fraction(1))
    new = {k: quantity(used[k]) + v for k, v in delta.items()}
    over = sorted(k for k, v in new.items() if v > quantity(hard[k]) and delta[k] > 0)
    if over:
        requested = {k: _fmt(COMPUTE[k][1] if k in COMPUTE else k, delta[k]) for k in over}
        raise QuotaRefused(f"exceeded quota: {name}, requested: {_joined(requested)}, "
                           f"used: {_joined({k: used[k] for k in over})}, limited: {_joined({k: hard[k] for k in over})}",
                           f"spec.hard[{over[0]}]")
    if not delta:
        return None
    return {**used, **{k: _fmt(COMPUTE[k][1] if k in COMPUTE else k, v) for k, v in new.items()}}


def quotas_for(quotas: Iterable[Object], namespace: str, kind: str = "Pod") -> list[ResourceQuota]:
    """The namespace's quotas that a new object of ``kind`` is charged to, by name (the order it
    is charged in)."""
    return sorted((q for q in quotas if isinstance(q, ResourceQuota) and q.metadata.namespace == namespace
                   and q.metadata.deletionTimestamp is None and limited_keys(q, kind)),
                  key=lambda q: q.metadata.name)
