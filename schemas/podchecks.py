"""Semantic checks of a pod spec, shared by Pod and every pod template (Deployment,
ReplicaSet, DaemonSet, ReplicationController, Job).

Each check appends ``(field path, message)`` pairs, with paths in the form Kubernetes prints
(``spec.template.spec.containers[0].image``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from fractions import Fraction

from schemas import names, securitychecks, volumechecks
from schemas.helpers import POD_LEVEL_RESOURCES, pod_resources
from schemas.pod import Container, LifecycleHandler, Pod, PodSpec, Probe, Volume
from schemas.quantity import format_quantity, parse_quantity
from schemas.selector import SelectorError, from_label_selector

Errors = list[tuple[str, str]]

_IANA_SVC_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


def port_name(name: str) -> list[str]:
    """An IANA service name, as container port names and named targetPorts must be."""
    errs = []
    if len(name) > 15:
        errs.append("must be no more than 15 characters")
    if not _IANA_SVC_NAME.fullmatch(name) or "--" in name:
        errs.append("must contain only lower-case alphanumeric characters and '-', not start or end with '-'")
    if not re.search(r"[a-z]", name):
        errs.append("must contain at least one letter (a-z)")
    return errs


def port_number(port: int) -> list[str]:
    return [] if 1 <= port <= 65535 else ["must be between 1 and 65535, inclusive"]


def int_or_port(value: int | str) -> list[str]:
    return port_number(value) if isinstance(value, int) else port_name(value)


def quantities(errs: Errors, path: str, values: dict[str, str]) -> dict[str, Fraction]:
    parsed: dict[str, Fraction] = {}
    for key, q in values.items():
        try:
            v = parse_quantity(q)
        except ValueError as e:
            errs.append((f"{path}[{key}]", str(e)))
            continue
        if v < 0:
            errs.append((f"{path}[{key}]", "must be greater than or equal to 0"))
        parsed[key] = v
    return parsed


def _handlers(errs: Errors, path: str, obj: Probe | LifecycleHandler, fields: Iterable[str]) -> None:
    set_ = [f for f in fields if getattr(obj, f) is not None]
    if not set_:
        errs.append((path, "must specify a handler type"))
    elif len(set_) > 1:
        errs.append((f"{path}.{set_[1]}", "may not specify more than 1 handler type"))
    for name in ("httpGet", "tcpSocket"):
        action = getattr(obj, name, None)
        if action is not None:
            for m in int_or_port(action.port):
                errs.append((f"{path}.{name}.port", m))


def probe(errs: Errors, path: str, p: Probe, liveness: bool) -> None:
    _handlers(errs, path, p, ("exec", "httpGet", "tcpSocket", "grpc"))
    for name in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"):
        if getattr(p, name) < 0:
            errs.append((f"{path}.{name}", "must be greater than or equal to 0"))
    for name in ("periodSeconds", "timeoutSeconds", "successThreshold", "failureThreshold"):
        if getattr(p, name) == 0:
            errs.append((f"{path}.{name}", "must be greater than or equal to 1"))
    if liveness and p.successThreshold != 1:
        errs.append((f"{path}.successThreshold", "must be 1"))


def container(errs: Errors, path: str, c: Container, volumes: set[str]) -> None:
    for m in names.dns1123_label(c.name):
        errs.append((f"{path}.name", m))
    if not c.image.strip():
        errs.append((f"{path}.image", "Required value"))
    for i, port in enumerate(c.ports):
        pp = f"{path}.ports[{i}]"
        for m in port_number(port.containerPort):
            errs.append((f"{pp}.containerPort", m))
        if port.hostPort is not None and not 0 <= port.hostPort <= 65535:
            errs.append((f"{pp}.hostPort", "must be between 0 and 65535, inclusive"))
        if port.name:
            for m in port_name(port.name):
                errs.append((f"{pp}.name", m))
    for i, env in enumerate(c.env):
        ep = f"{path}.env[{i}]"
        for m in names.env_var_name(env.name):
            errs.append((f"{ep}.name", m))
        if env.valueFrom is not None:
            vf = env.valueFrom
            sources = [s for s in ("configMapKeyRef", "secretKeyRef", "fieldRef", "resourceFieldRef") if getattr(vf, s)]
            if len(sources) != 1:
                errs.append((f"{ep}.valueFrom", "must specify exactly one of: `fieldRef`, `resourceFieldRef`, "
                             "`configMapKeyRef` or `secretKeyRef`"))
            if env.value:
                errs.append((f"{ep}.valueFrom", "may not be specified when `value` is not empty"))
    for i, ef in enumerate(c.envFrom):
        if (ef.configMapRef is None) == (ef.secretRef is None):
            errs.append((f"{path}.envFrom[{i}]", "must specify one of: `configMapRef` or `secretRef`"))
    requests = quantities(errs, f"{path}.resources.requests", c.resources.requests)
    limits = quantities(errs, f"{path}.resources.limits", c.resources.limits)
    for key, req in requests.items():
        lim = limits.get(key)
        if lim is not None and req > lim:
            errs.append((f"{path}.resources.requests[{key}]",
                         f'must be less than or equal to {key} limit of {c.resources.limits[key]}'))
    for i, vm in enumerate(c.volumeMounts):
        if vm.name not in volumes:
            errs.append((f"{path}.volumeMounts[{i}].name", f'Not found: "{vm.name}"'))
        if not vm.mountPath:
            errs.append((f"{path}.volumeMounts[{i}].mountPath", "Required value"))
    for kind, pr in (("livenessProbe", c.livenessProbe), ("readinessProbe", c.readinessProbe),
                     ("startupProbe", c.startupProbe)):
        if pr is not None:
            probe(errs, f"{path}.{kind}", pr, liveness=kind != "readinessProbe")
    if c.lifecycle is not None:
        for hook in ("postStart", "preStop"):
            h = getattr(c.lifecycle, hook)
            if h is not None:
                _handlers(errs, f"{path}.lifecycle.{hook}", h, ("exec", "httpGet", "tcpSocket", "sleep"))


def volume(errs: Errors, path: str, v: Volume) -> None:
    for m in names.dns1123_label(v.name):
        errs.append((f"{path}.name", m))
    sources = [s for s in ("emptyDir", "hostPath", "configMap", "secret", "persistentVolumeClaim", "downwardAPI",
                           "projected") if getattr(v, s) is not None]
    if not sources:
        errs.append((path, "must specify a volume type"))
    elif len(sources) > 1:
        errs.append((f"{path}.{sources[1]}", "may not specify more than 1 volume type"))
    if v.emptyDir is not None and v.emptyDir.sizeLimit is not None:
        quantities(errs, f"{path}.emptyDir", {"sizeLimit": v.emptyDir.sizeLimit})
    if v.persistentVolumeClaim is not None and not v.persistentVolumeClaim.claimName:
        errs.append((f"{path}.persistentVolumeClaim.claimName", "Required value"))
    if v.hostPath is not None and not v.hostPath.path:
        errs.append((f"{path}.hostPath.path", "Required value"))
    volumechecks.volume_files(errs, path, v)


def pod_spec(errs: Errors, path: str, spec: PodSpec, restart_policies: tuple[str, ...] | None = None) -> None:
    vol_names: set[str] = set()
    for i, v in enumerate(spec.volumes):
        volume(errs, f"{path}.volumes[{i}]", v)
        if v.name in vol_names:
            errs.append((f"{path}.volumes[{i}].name", f'Duplicate value: "{v.name}"'))
        vol_names.add(v.name)
    if not spec.containers:
        errs.append((f"{path}.containers", "Required value"))
    seen: set[str] = set()
    port_names: set[str] = set()
    for group in ("initContainers", "containers"):
        for i, c in enumerate(getattr(spec, group)):
            cp = f"{path}.{group}[{i}]"
            container(errs, cp, c, vol_names)
            if c.restartPolicy is not None and group == "containers":
                errs.append((f"{cp}.restartPolicy", "Forbidden: may not be set for non-init containers"))
            if c.name in seen:
                errs.append((f"{cp}.name", f'Duplicate value: "{c.name}"'))
            seen.add(c.name)
            for j, port in enumerate(c.ports):
                if port.name and port.name in port_names:
                    errs.append((f"{cp}.ports[{j}].name", f'Duplicate value: "{port.name}"'))
                port_names.add(port.name)
    if restart_policies is not None and spec.restartPolicy not in restart_policies:
        allowed = ", ".join(f'"{p}"' for p in restart_policies)
        errs.append((f"{path}.restartPolicy", f'Unsupported value: "{spec.restartPolicy}": supported values: {allowed}'))
    if spec.terminationGracePeriodSeconds < 0:
        errs.append((f"{path}.terminationGracePeriodSeconds", "must be greater than or equal to 0"))
    if spec.activeDeadlineSeconds is not None and spec.activeDeadlineSeconds <= 0:
        errs.append((f"{path}.activeDeadlineSeconds", "must be greater than 0"))
    for key, value in spec.nodeSelector.items():
        for m in names.qualified_name(key) + names.label_value(value):
            errs.append((f"{path}.nodeSelector[{key}]", m))
    for i, t in enumerate(spec.tolerations):
        tp = f"{path}.tolerations[{i}]"
        if t.operator == "Exists" and t.value:
            errs.append((f"{tp}.operator", "value must be empty when `operator` is 'Exists'"))
        if t.operator == "Equal" and not t.key:
            errs.append((f"{tp}.operator", "operator must be Exists when `key` is empty, which means \"match all "
                         "values and all keys\""))
        if t.key:
            for m in names.qualified_name(t.key):
                errs.append((f"{tp}.key", m))
        if t.tolerationSeconds is not None and t.effect != "NoExecute":
            errs.append((f"{tp}.effect", "effect must be 'NoExecute' when `tolerationSeconds` is set"))
    _spread(errs, path, spec)
    _pod_resources(errs, path, spec)
    if spec.nodeName:
        for m in names.dns1123_subdomain(spec.nodeName):
            errs.append((f"{path}.nodeName", m))
    _dns(errs, path, spec)
    securitychecks.pod_spec(errs, path, spec)


def _pod_resources(errs: Errors, path: str, spec: PodSpec) -> None:
    """Pod-level ``resources`` as Kubernetes' validatePodResources: cpu and memory only,
    requests within limits, requests covering the containers' aggregate requests, limits
    covering each container's limit."""
    if spec.resources is None:
        return
    rp = f"{path}.resources"
    supported = ", ".join(f'"{r}"' for r in POD_LEVEL_RESOURCES)
    for kind in ("requests", "limits"):
        for key in getattr(spec.resources, kind):
            if key not in POD_LEVEL_RESOURCES:
                errs.append((f"{rp}.{kind}[{key}]", f'Unsupported value: "{key}": supported values: {supported}'))
    requests = quantities(errs, f"{rp}.requests", spec.resources.requests)
    limits = quantities(errs, f"{rp}.limits", spec.resources.limits)
    for key, req in requests.items():
        if key in limits and req > limits[key]:
            errs.append((f"{rp}.requests[{key}]", f'Invalid value: "{spec.resources.requests[key]}": must be less than '
                         f"or equal to {key} limit of {spec.resources.limits[key]}"))

    def parsed(values: dict[str, str]) -> dict[str, Fraction]:
        out = {}
        for k, q in values.items():
            try:
                out[k] = parse_quantity(q)
            except ValueError:
                continue  # reported with the container's own path
        return out

    aggregate = pod_resources(Pod(spec=spec), lambda r: parsed(r.requests), pod_level=False)
    for key, total in aggregate.items():
        if key in requests and requests[key] < total:
            errs.append((f"{rp}.requests[{key}]", f'Invalid value: "{spec.resources.requests[key]}": must be greater '
                         f"than or equal to aggregate container requests of {format_quantity(total)}"))
    for group in ("initContainers", "containers"):
        for i, c in enumerate(getattr(spec, group)):
            for key, lim in parsed(c.resources.limits).items():
                if key in limits and lim > limits[key]:
                    errs.append((f"{path}.{group}[{i}].resources.limits[{key}]",
                                 f'Invalid value: "{c.resources.limits[key]}": must be less than or equal to pod '
                                 f"limits of {spec.resources.limits[key]}"))


def _spread(errs: Errors, path: str, spec: PodSpec) -> None:
    """topologySpreadConstraints, as Kubernetes' validateTopologySpreadConstraints."""
    seen: set[tuple[str, str]] = set()
    for i, c in enumerate(spec.topologySpreadConstraints):
        cp = f"{path}.topologySpreadConstraints[{i}]"
        if c.maxSkew <= 0:
            errs.append((f"{cp}.maxSkew", f"Invalid value: {c.maxSkew}: must be greater than zero"))
        if c.minDomains is not None:
            if c.minDomains <= 0:
                errs.append((f"{cp}.minDomains", f"Invalid value: {c.minDomains}: must be greater than zero"))
            elif c.whenUnsatisfiable != "DoNotSchedule":
                errs.append((f"{cp}.minDomains", f"Invalid value: {c.minDomains}: can only use minDomains if "
                             "whenUnsatisfiable=DoNotSchedule"))
        if not c.topologyKey:
            errs.append((f"{cp}.topologyKey", "Required value: can not be empty"))
        else:
            for m in names.qualified_name(c.topologyKey):
                errs.append((f"{cp}.topologyKey", m))
        pair = (c.topologyKey, c.whenUnsatisfiable)
        if pair in seen:
            errs.append((f"{cp}.{{topologyKey, whenUnsatisfiable}}",
                         f'Duplicate value: {{"{c.topologyKey}", "{c.whenUnsatisfiable}"}}'))
        seen.add(pair)
        selector_keys: set[str] = set()
        if c.labelSelector is not None:
            try:
                from_label_selector(c.labelSelector)
            except SelectorError as e:
                errs.append((f"{cp}.labelSelector", str(e)))
            selector_keys = set(c.labelSelector.matchLabels) | {e.key for e in c.labelSelector.matchExpressions}
        if c.matchLabelKeys and c.labelSelector is None:
            errs.append((f"{cp}.matchLabelKeys", "Forbidden: must not be specified when labelSelector is not set"))
        for j, key in enumerate(c.matchLabelKeys):
            kp = f"{cp}.matchLabelKeys[{j}]"
            for m in names.qualified_name(key):
                errs.append((kp, m))
            if key in selector_keys:
                errs.append((kp, f'Invalid value: "{key}": exists in both matchLabelKeys and labelSelector'))
            elif key in c.matchLabelKeys[:j]:
                errs.append((kp, f'Duplicate value: "{key}"'))


MAX_DNS_NAMESERVERS = 3  # Kubernetes' validation limits (pkg/apis/core/validation)
MAX_DNS_SEARCH_PATHS = 32
MAX_DNS_SEARCH_LENGTH = 2048


def _ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _dns(errs: Errors, path: str, spec: PodSpec) -> None:
    """dnsPolicy ``None`` needs a dnsConfig with a nameserver; dnsConfig and hostAliases hold
    addresses, DNS names and option names, within Kubernetes' limits."""
    cfg = spec.dnsConfig
    if spec.dnsPolicy == "None":
        if cfg is None:
            errs.append((f"{path}.dnsConfig", "must provide `dnsConfig` when `dnsPolicy` is None"))
        elif not cfg.nameservers:
            errs.append((f"{path}.dnsConfig.nameservers", "must provide at least one DNS nameserver when `dnsPolicy` "
                         "is None"))
    if cfg is not None:
        cp = f"{path}.dnsConfig"
        if len(cfg.nameservers) > MAX_DNS_NAMESERVERS:
            errs.append((f"{cp}.nameservers", f"must not have more than {MAX_DNS_NAMESERVERS} nameservers"))
        for i, ns in enumerate(cfg.nameservers):
            if not _ip(ns):
                errs.append((f"{cp}.nameservers[{i}]", f'Invalid value: "{ns}": must be a valid IP address'))
        if len(cfg.searches) > MAX_DNS_SEARCH_PATHS:
            errs.append((f"{cp}.searches", f"must not have more than {MAX_DNS_SEARCH_PATHS} search paths"))
        if len(" ".join(cfg.searches)) > MAX_DNS_SEARCH_LENGTH:
            errs.append((f"{cp}.searches", f"must not have more than {MAX_DNS_SEARCH_LENGTH} characters (including "
                         "spaces) in the search list"))
        for i, domain in enumerate(cfg.searches):
            for m in names.dns1123_subdomain(domain.rstrip(".")):
                errs.append((f"{cp}.searches[{i}]", m))
        for i, opt in enumerate(cfg.options):
            if not opt.name:
                errs.append((f"{cp}.options[{i}].name", "Required value"))
    for i, alias in enumerate(spec.hostAliases):
        ap = f"{path}.hostAliases[{i}]"
        if not _ip(alias.ip):
            errs.append((f"{ap}.ip", f'Invalid value: "{alias.ip}": must be a valid IP address'))
        for j, host in enumerate(alias.hostnames):
            for m in names.dns1123_subdomain(host):
                errs.append((f"{ap}.hostnames[{j}]", m))
