"""Small pure questions many services ask of objects: the KV key of an object, whether a pod
is ready, what it requests from a node, who controls it, and RFC 3339 times.

Time is always passed in (``now``), never read from the clock here.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable, Mapping
from fractions import Fraction
from functools import lru_cache
from typing import TypeVar

import msgspec

from schemas.core import Service
from schemas.meta import Object, OwnerReference
from schemas.pod import Pod, ResourceRequirements, is_sidecar
from schemas.quantity import cpu_millis, to_bytes
from schemas.registry import by_kind

ObjT = TypeVar("ObjT", bound=Object)

CLUSTER_SCOPE = "_"


def object_key(obj: Object) -> str:
    """The KV key: ``<namespace>.<name>``, or ``_.<name>`` for cluster-scoped kinds.

    A namespaced object without a namespace is keyed in ``default``.
    """
    return key_for(obj.kind, obj.metadata.namespace, obj.metadata.name)


def key_for(kind: str, namespace: str | None, name: str) -> str:
    return scoped_key(by_kind(kind).namespaced, namespace, name)


# What a name may hold in a KV key as it is; anything else (the ':' of RBAC names such as
# system:auth-delegator, which Kubernetes allows there, and '=' itself) is written as =XX, one per
# UTF-8 byte, so a key stays within NATS' key alphabet and maps back to one name. A DNS name
# (every other kind's) is its own key.
_KEY_SAFE = re.compile(r"[-_.a-zA-Z0-9]*")
_KEY_CHAR = re.compile(r"[^-_.a-zA-Z0-9]")
_KEY_ESCAPE = re.compile(r"(?:=[0-9A-F]{2})+")


def key_name(name: str) -> str:
    """``name`` as it stands in a KV key."""
    if _KEY_SAFE.fullmatch(name):
        return name
    return _KEY_CHAR.sub(lambda m: "".join(f"={b:02X}" for b in m[0].encode()), name)


def name_of_key(part: str) -> str:
    """The name a KV key's name part stands for (``key_name`` undone)."""
    if "=" not in part:
        return part
    return _KEY_ESCAPE.sub(lambda m: bytes.fromhex(m[0].replace("=", "")).decode(errors="replace"), part)


def scoped_key(namespaced: bool, namespace: str | None, name: str) -> str:
    """The KV key of ``name`` in a namespaced kind (``default`` when none is given) or a cluster-scoped one."""
    if not namespaced:
        return f"{CLUSTER_SCOPE}.{key_name(name)}"
    return f"{namespace or 'default'}.{key_name(name)}"


def split_key(key: str) -> tuple[str | None, str]:
    """(namespace, name) of a KV key; the namespace is None for cluster-scoped keys."""
    namespace, _, name = key.partition(".")
    return (None if namespace == CLUSTER_SCOPE else namespace), name_of_key(name)


def pod_is_ready(pod: Pod) -> bool:
    """True when the pod's Ready condition is True (as endpoints and rollouts count it)."""
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


def pod_is_available(pod: Pod, min_ready_seconds: int, now: _dt.datetime) -> bool:
    """Ready for at least ``min_ready_seconds`` (by the Ready condition's transition time)."""
    for c in pod.status.conditions:
        if c.type == "Ready" and c.status == "True":
            if min_ready_seconds <= 0:
                return True
            if c.lastTransitionTime is None:
                return False
            since = parse_time(c.lastTransitionTime)
            return since + _dt.timedelta(seconds=min_ready_seconds) <= now
    return False


def pod_is_terminal(pod: Pod) -> bool:
    return pod.status.phase in ("Succeeded", "Failed")


def volume_references(pod: Pod) -> tuple[set[str], set[str]]:
    """Names of the ConfigMaps and Secrets a pod's volumes project: configMap and secret
    volumes and the sources of projected volumes."""
    cms: set[str] = set()
    secrets: set[str] = set()
    for v in pod.spec.volumes:
        if v.configMap is not None:
            cms.add(v.configMap.name)
        if v.secret is not None:
            secrets.add(v.secret.secretName)
        for s in v.projected.sources if v.projected is not None else ():
            if s.configMap is not None:
                cms.add(s.configMap.name)
            if s.secret is not None:
                secrets.add(s.secret.name)
    return cms, secrets


N = TypeVar("N", int, Fraction)


def _add(a: Mapping[str, N], b: Mapping[str, N]) -> dict[str, N]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out[k] + v if k in out else v
    return out


def _at_least(a: Mapping[str, N], b: Mapping[str, N]) -> dict[str, N]:
    out = dict(a)
    for k, v in b.items():
        out[k] = max(out[k], v) if k in out else v
    return out


POD_LEVEL_RESOURCES = ("cpu", "memory")  # what spec.resources may set (Kubernetes' PodLevelResources)


def pod_resources(pod: Pod, of: Callable[[ResourceRequirements], Mapping[str, N]], *,
                  pod_level: bool = True) -> dict[str, N]:
    """What a pod needs of each resource, ``of(requirements)`` giving each container's (and the
    pod's): Kubernetes' PodRequests/PodLimits. A resource the pod-level ``spec.resources`` sets
    is that value; any other is the app containers' sum with the sidecars' (init containers with
    restartPolicy Always, which keep running) added, or more where the init sequence needs more
    at its peak (each plain init container beside the sidecars started before it).
    ``pod_level=False``: the containers' aggregate alone (what validation compares the pod's with)."""
    total: dict[str, N] = {}
    for c in pod.spec.containers:
        total = _add(total, of(c.resources))
    sidecars: dict[str, N] = {}
    peak: dict[str, N] = {}
    for c in pod.spec.initContainers:
        own = of(c.resources)
        if is_sidecar(c):
            total = _add(total, own)
            sidecars = _add(sidecars, own)
            peak = _at_least(peak, sidecars)
        else:
            peak = _at_least(peak, _add(sidecars, own))
    need = _at_least(total, peak)
    if pod_level and pod.spec.resources is not None:
        need.update({k: v for k, v in of(pod.spec.resources).items() if k in POD_LEVEL_RESOURCES})
    return need


# Cached: thousands of pods and nodes share a handful of quantity strings.
@lru_cache(maxsize=4096)
def millis(q: str) -> int:
    """``schemas.quantity.cpu_millis``, cached."""
    return cpu_millis(q)


@lru_cache(maxsize=4096)
def size(q: str) -> int:
    """``schemas.quantity.to_bytes``, cached."""
    return to_bytes(q)


def _scheduled(r: ResourceRequirements) -> dict[str, int]:
    out = {}
    for name, parse in (("cpu", millis), ("memory", size)):
        # an unset request is the limit, as the API server defaults it
        q = r.requests.get(name) or r.limits.get(name)
        if q:
            out[name] = parse(q)
    return out


def pod_requests(pod: Pod) -> tuple[int, int]:
    """(CPU millicores, memory bytes) the scheduler reserves for a pod (:func:`pod_resources`
    of the requests, or the limits where a request is unset; the pod-level ones where set)."""
    need = pod_resources(pod, _scheduled)
    return need.get("cpu", 0), need.get("memory", 0)


def qos_class(pod: Pod) -> str:
    """Guaranteed, Burstable or BestEffort, from the containers' requests and limits (the kubelet
    reports it; an in-place resize may not change it)."""
    cs = list(pod.spec.containers) + list(pod.spec.initContainers)
    if not any(c.resources.requests or c.resources.limits for c in cs):
        return "BestEffort"
    for c in cs:
        lim, req = c.resources.limits, c.resources.requests
        if not all(k in lim for k in ("cpu", "memory")):
            return "Burstable"
        if any(req.get(k, lim[k]) != lim[k] for k in ("cpu", "memory")):
            return "Burstable"
    return "Guaranteed"


def controller_of(obj: Object) -> OwnerReference | None:
    """The owner reference with ``controller: true``, if any."""
    return next((r for r in obj.metadata.ownerReferences if r.controller), None)


def owner_reference(owner: Object, controller: bool = True) -> OwnerReference:
    """An owner reference pointing at ``owner`` (which must have a uid)."""
    return OwnerReference(apiVersion=owner.apiVersion, kind=owner.kind, name=owner.metadata.name,
                          uid=owner.metadata.uid or "", controller=controller, blockOwnerDeletion=True)


def with_controller(obj: ObjT, ref: OwnerReference) -> ObjT:
    """``obj`` adopted: ``ref`` as its controller, other references to the same owner dropped."""
    refs = [r for r in obj.metadata.ownerReferences if r.uid != ref.uid] + [ref]
    return msgspec.structs.replace(obj, metadata=msgspec.structs.replace(obj.metadata, ownerReferences=refs))


def without_owner(obj: ObjT, uid: str) -> ObjT:
    """``obj`` released: every reference to the owner ``uid`` dropped."""
    refs = [r for r in obj.metadata.ownerReferences if r.uid != uid]
    return msgspec.structs.replace(obj, metadata=msgspec.structs.replace(obj.metadata, ownerReferences=refs))


def format_time(t: _dt.datetime) -> str:
    """RFC 3339 in UTC with second precision, as Kubernetes writes: "2024-01-01T00:00:00Z"."""
    if t.tzinfo is not None:
        t = t.astimezone(_dt.UTC)
    return t.replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def format_micro_time(t: _dt.datetime) -> str:
    """RFC 3339 with microseconds (Lease times): "2024-01-01T00:00:00.000000Z"."""
    if t.tzinfo is not None:
        t = t.astimezone(_dt.UTC)
    return t.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def now_rfc3339(now: _dt.datetime) -> str:
    return format_time(now)


def parse_time(text: str) -> _dt.datetime:
    """An aware UTC datetime from an RFC 3339 string ("Z" or an offset, optional fraction)."""
    t = _dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return t.astimezone(_dt.UTC)


# kube-proxy's default ClientIP affinity (sessionAffinityConfig.clientIP.timeoutSeconds): 3 hours.
DEFAULT_AFFINITY_SECONDS = 10800


def affinity_seconds(service: Service) -> int | None:
    """How long a client stays with its endpoint under ``sessionAffinity: ClientIP``; None without."""
    if service.spec.sessionAffinity != "ClientIP":
        return None
    cfg = service.spec.sessionAffinityConfig
    if cfg is not None and cfg.clientIP is not None and cfg.clientIP.timeoutSeconds:
        return cfg.clientIP.timeoutSeconds
    return DEFAULT_AFFINITY_SECONDS
