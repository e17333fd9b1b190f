"""A container's environment and command line, resolved the way the kubelet does it.

``envFrom`` sources first (in order, each with its prefix), then ``env`` entries (later ones
win): literal values, ``configMapKeyRef`` / ``secretKeyRef`` (``optional`` honoured), the
downward API ``fieldRef`` and ``resourceFieldRef``. ``$(VAR)`` in env values, command and args
expands to a variable defined before it; ``$$`` escapes; an unknown reference stays as written.

A missing ConfigMap, Secret or key that is not optional raises :class:`ConfigError`
(CreateContainerConfigError). Pure: ConfigMaps and Secrets come from lookup functions.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping

from schemas.core import ConfigMap, Secret
from schemas.helpers import volume_references
from schemas.pod import Container, Pod
from schemas.quantity import parse_quantity

ConfigMapLookup = Callable[[str, str], ConfigMap | None]  # (namespace, name)
SecretLookup = Callable[[str, str], Secret | None]


class ConfigError(Exception):
    """A container cannot be configured yet (reason CreateContainerConfigError)."""

    reason = "CreateContainerConfigError"


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined names are replaced, ``$$`` is a literal ``$``,
    anything else is kept as written."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            end = text.find(")", i + 2)
            if end < 0:
                out.append(text[i:])
                break
            name = text[i + 2 : end]
            out.append(env[name] if name in env else text[i : end + 1])
            i = end + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def _secret_value(secret: Secret, key: str) -> str | None:
    if key in secret.data:
        return base64.b64decode(secret.data[key]).decode(errors="replace")
    if key in secret.stringData:
        return secret.stringData[key]
    return None


def _secret_keys(secret: Secret) -> list[str]:
    return sorted(set(secret.data) | set(secret.stringData))


def field_value(pod: Pod, path: str) -> str:
    """The downward API's ``fieldRef.fieldPath``."""
    meta = pod.metadata
    simple = {
        "metadata.name": meta.name,
        "metadata.namespace": meta.namespace or "default",
        "metadata.uid": meta.uid or "",
        "spec.nodeName": pod.spec.nodeName,
        "spec.serviceAccountName": pod.spec.serviceAccountName or pod.spec.serviceAccount or "default",
        "status.podIP": pod.status.podIP,
        "status.podIPs": ",".join(p.ip for p in pod.status.podIPs) or pod.status.podIP,
        "status.hostIP": pod.status.hostIP,
        "status.hostIPs": ",".join(h.ip for h in pod.status.hostIPs) or pod.status.hostIP,
    }
    if path in simple:
        return simple[path]
    for prefix, source in (("metadata.labels", meta.labels), ("metadata.annotations", meta.annotations)):
        if path.startswith(prefix + "['") and path.endswith("']"):
            return source.get(path[len(prefix) + 2 : -2], "")
        if path == prefix:
            return "\n".join(f'{k}="{v}"' for k, v in sorted(source.items()))
    raise ConfigError(f'unsupported fieldPath "{path}"')


def resource_value(
    pod: Pod, container: Container, resource: str, divisor: str | None, node_allocatable: Mapping[str, str]
) -> str:
    """The downward API's ``resourceFieldRef``: a limit (the pod-level limit when unset, else the
    node's allocatable) or a request (the limit when unset, else 0), divided by ``divisor`` and
    rounded up."""
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or name not in ("cpu", "memory", "ephemeral-storage"):
        raise ConfigError(f'unsupported resource "{resource}"')
    raw = container.resources.limits.get(name)
    if kind == "requests":  # an unset request is the limit, as the api defaults it, else 0
        raw = container.resources.requests.get(name, raw or "0")
    elif raw is None:  # unset: the pod-level limit, else the node's allocatable (MergeContainerResourceLimits)
        pod_limits = pod.spec.resources.limits if pod.spec.resources is not None else {}
        raw = pod_limits.get(name) or node_allocatable.get(name, "0")
    value = parse_quantity(raw)
    div = parse_quantity(divisor) if divisor else parse_quantity("1")
    if div == 0:
        raise ConfigError(f'divisor of "{resource}" is zero')
    return str(max(math.ceil(value / div), 1 if value > 0 else 0))


def container_env(
    pod: Pod,
    container: Container,
    configmaps: ConfigMapLookup,
    secrets: SecretLookup,
    node_allocatable: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of ``container``; raises ConfigError for what is missing."""
    ns = pod.metadata.namespace or "default"
    env: dict[str, str] = {}
    for source in container.envFrom:
        if source.configMapRef is not None:
            ref = source.configMapRef
            cm = configmaps(ns, ref.name)
            if cm is None:
                if ref.optional:
                    continue
                raise ConfigError(f'configmap "{ref.name}" not found')
            for k, v in cm.data.items():
                env[source.prefix + k] = v
        if source.secretRef is not None:
            sref = source.secretRef
            secret = secrets(ns, sref.name)
            if secret is None:
                if sref.optional:
                    continue
                raise ConfigError(f'secret "{sref.name}" not found')
            for k in _secret_keys(secret):
                env[source.prefix + k] = _secret_value(secret, k) or ""
    for var in container.env:
        src = var.valueFrom
        if src is None:
            env[var.name] = expand(var.value, env)
        elif src.configMapKeyRef is not None:
            cref = src.configMapKeyRef
            cm = configmaps(ns, cref.name)
            if cm is None or cref.key not in cm.data:
                if cref.optional:
                    continue
                if cm is None:
                    raise ConfigError(f'configmap "{cref.name}" not found')
                raise ConfigError(f"couldn't find key {cref.key} in ConfigMap {ns}/{cref.name}")
            env[var.name] = cm.data[cref.key]
        elif src.secretKeyRef is not None:
            kref = src.secretKeyRef
            secret = secrets(ns, kref.name)
            value = _secret_value(secret, kref.key) if secret is not None else None
            if value is None:
                if kref.optional:
                    continue
                if secret is None:
                    raise ConfigError(f'secret "{kref.name}" not found')
                raise ConfigError(f"couldn't find key {kref.key} in Secret {ns}/{kref.name}")
            env[var.name] = value
        elif src.fieldRef is not None:
            env[var.name] = field_value(pod, src.fieldRef.fieldPath)
        elif src.resourceFieldRef is not None:
            rref = src.resourceFieldRef
            target = container
            if rref.containerName:
                target = next(
                    (c for c in [*pod.spec.containers, *pod.spec.initContainers] if c.name == rref.containerName),
                    container,
                )
            env[var.name] = resource_value(pod, target, rref.resource, rref.divisor, node_allocatable or {})
    return env


def command_line(container: Container, env: Mapping[str, str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(command, args) with ``$(VAR)`` expanded."""
    return tuple(expand(a, env) for a in container.command), tuple(expand(a, env) for a in container.args)


def referenced(pod: Pod) -> tuple[set[str], set[str]]:
    """Names of the ConfigMaps and Secrets the pod's containers and volumes refer to."""
    cms: set[str] = set()
    secrets: set[str] = set()
    for c in [*pod.spec.initContainers, *pod.spec.containers]:
        for s in c.envFrom:
            if s.configMapRef is not None:
                cms.add(s.configMapRef.name)
            if s.secretRef is not None:
                secrets.add(s.secretRef.name)
        for v in c.env:
            if v.valueFrom is not None and v.valueFrom.configMapKeyRef is not None:
                cms.add(v.valueFrom.configMapKeyRef.name)
            if v.valueFrom is not None and v.valueFrom.secretKeyRef is not None:
                secrets.add(v.valueFrom.secretKeyRef.name)
    volume_cms, volume_secrets = volume_references(pod)
    return cms | volume_cms, secrets | volume_secrets
