"""Kubernetes' validation of what a pod says about its security and its scheduling gates:
the pod's and each container's ``securityContext`` (user and group ids, seccomp and AppArmor
profiles, sysctls, procMount, privilege escalation), ``hostUsers``, ``shareProcessNamespace``,
``resizePolicy`` and ``schedulingGates``, with the field paths and wording of
``pkg/apis/core/validation``. Closed sets (profile types, policies) are ``Literal`` types in
``schemas.pod``, refused at decoding with their path.

Each check appends ``(field path, message)`` pairs, as ``schemas.podchecks`` does.
"""

from __future__ import annotations

import re

from schemas import names
from schemas.pod import (
    AppArmorProfile,
    Container,
    PodSchedulingGate,
    PodSecurityContext,
    PodSpec,
    SeccompProfile,
    SecurityContext,
    WindowsSecurityContextOptions,
)

Errors = list[tuple[str, str]]

MAX_ID = 2147483647  # user and group ids: 0 ..= 2^31 - 1 (IsValidUserID, IsValidGroupID)
SYSCTL_MAX_LENGTH = 253
_SYSCTL_SEGMENT = r"[a-z0-9]([-_a-z0-9]*[a-z0-9])?"
SYSCTL_PATTERN = rf"^({_SYSCTL_SEGMENT}[\./])*{_SYSCTL_SEGMENT}$"
_SYSCTL = re.compile(SYSCTL_PATTERN)
MAX_LOCALHOST_PROFILE_LENGTH = 4095  # PATH_MAX - 1
_WINDOWS_USER = 256


def _id(errs: Errors, path: str, value: int | None) -> None:
    if value is not None and not 0 <= value <= MAX_ID:
        errs.append((path, f"Invalid value: {value}: must be between 0 and {MAX_ID}, inclusive"))


def _seccomp(errs: Errors, path: str, sp: SeccompProfile | None) -> None:
    if sp is None:
        return
    lp = f"{path}.localhostProfile"
    if sp.type != "Localhost":
        if sp.localhostProfile is not None:
            errs.append((lp, "Invalid value: can only be set when seccomp type is Localhost"))
        return
    if sp.localhostProfile is None:
        errs.append((lp, "Required value: must be set when seccomp type is Localhost"))
        return
    profile = sp.localhostProfile
    if profile.startswith("/"):
        errs.append((lp, f'Invalid value: "{profile}": must be a relative path'))
    if ".." in profile.split("/"):
        errs.append((lp, f"Invalid value: \"{profile}\": must not contain '..'"))


def _apparmor(errs: Errors, path: str, ap: AppArmorProfile | None) -> None:
    if ap is None:
        return
    lp = f"{path}.localhostProfile"
    if ap.type != "Localhost":
        if ap.localhostProfile is not None:
            errs.append((lp, "Invalid value: can only be set when AppArmor type is Localhost"))
        return
    profile = ap.localhostProfile
    if profile is None or not profile.strip():
        errs.append((lp, "Required value: must be set when AppArmor type is Localhost"))
        return
    if profile.strip() != profile:
        errs.append((lp, f'Invalid value: "{profile}": must not be padded with whitespace'))
    if len(profile) > MAX_LOCALHOST_PROFILE_LENGTH:
        errs.append((lp, f"Too long: may not be more than {MAX_LOCALHOST_PROFILE_LENGTH} bytes"))


def _windows(errs: Errors, path: str, w: WindowsSecurityContextOptions | None) -> None:
    if w is None:
        return
    if w.gmsaCredentialSpecName is not None:
        for m in names.dns1123_subdomain(w.gmsaCredentialSpecName):
            errs.append((f"{path}.gmsaCredentialSpecName", m))
    if w.gmsaCredentialSpec is not None and not w.gmsaCredentialSpec:
        errs.append((f"{path}.gmsaCredentialSpec", "Required value: gmsaCredentialSpec cannot be an empty string"))
    if w.runAsUserName is not None:
        if not w.runAsUserName:
            errs.append((f"{path}.runAsUserName", "Invalid value: \"\": runAsUserName cannot be an empty string"))
        elif len(w.runAsUserName) > _WINDOWS_USER:
            errs.append((f"{path}.runAsUserName",
                         f"Invalid value: \"{w.runAsUserName}\": runAsUserName's length must not be longer than "
                         f"{_WINDOWS_USER} characters"))


def container_security(errs: Errors, path: str, sc: SecurityContext | None, host_users: bool) -> None:
    """One container's ``securityContext`` (ValidateSecurityContext); ``path`` ends in it."""
    if sc is None:
        return
    _id(errs, f"{path}.runAsUser", sc.runAsUser)
    _id(errs, f"{path}.runAsGroup", sc.runAsGroup)
    if sc.procMount == "Unmasked" and host_users:
        errs.append((f"{path}.procMount", 'Invalid value: "Unmasked": `hostUsers` must be false to use `Unmasked`'))
    _seccomp(errs, f"{path}.seccompProfile", sc.seccompProfile)
    _apparmor(errs, f"{path}.appArmorProfile", sc.appArmorProfile)
    if sc.allowPrivilegeEscalation is False:
        if sc.privileged:
            errs.append((path, "Invalid value: cannot set `allowPrivilegeEscalation` to false and `privileged` "
                         "to true"))
        if sc.capabilities is not None and "CAP_SYS_ADMIN" in sc.capabilities.add:
            errs.append((path, "Invalid value: cannot set `allowPrivilegeEscalation` to false and "
                         "`capabilities.Add` CAP_SYS_ADMIN"))
    _windows(errs, f"{path}.windowsOptions", sc.windowsOptions)


def _pod_security(errs: Errors, path: str, spec: PodSpec) -> None:
    """``spec.securityContext`` (validatePodSpecSecurityContext); ``path`` is the pod spec's."""
    sc: PodSecurityContext | None = spec.securityContext
    if spec.shareProcessNamespace and spec.hostPID:
        errs.append((f"{path}.shareProcessNamespace",
                     "Invalid value: true: ShareProcessNamespace and HostPID cannot both be enabled"))
    if sc is None:
        return
    sp = f"{path}.securityContext"
    _id(errs, f"{sp}.fsGroup", sc.fsGroup)
    _id(errs, f"{sp}.runAsUser", sc.runAsUser)
    _id(errs, f"{sp}.runAsGroup", sc.runAsGroup)
    for i, gid in enumerate(sc.supplementalGroups):
        _id(errs, f"{sp}.supplementalGroups[{i}]", gid)
    seen: set[str] = set()
    for i, s in enumerate(sc.sysctls):
        np = f"{sp}.sysctls[{i}].name"
        if not s.name:
            errs.append((np, "Required value"))
        elif len(s.name) > SYSCTL_MAX_LENGTH or not _SYSCTL.match(s.name):
            errs.append((np, f'Invalid value: "{s.name}": must have at most {SYSCTL_MAX_LENGTH} characters and '
                         f"match regex {SYSCTL_PATTERN}"))
        elif s.name in seen:
            errs.append((np, f'Duplicate value: "{s.name}"'))
        seen.add(s.name)
    _seccomp(errs, f"{sp}.seccompProfile", sc.seccompProfile)
    _apparmor(errs, f"{sp}.appArmorProfile", sc.appArmorProfile)
    _windows(errs, f"{sp}.windowsOptions", sc.windowsOptions)


def _host_users(errs: Errors, path: str, spec: PodSpec) -> None:
    """A pod in a user namespace of its own (``hostUsers: false``) shares no host namespace."""
    if spec.hostUsers is not False:
        return
    for name in ("hostNetwork", "hostPID", "hostIPC"):
        if getattr(spec, name):
            errs.append((f"{path}.{name}", "Forbidden: when `hostUsers` is false"))


def resize_policy(errs: Errors, path: str, c: Container, restart_policy: str, init: bool, sidecar: bool) -> None:
    """``resizePolicy`` (validateResizePolicy): one entry per resource; ``NotRequired`` only
    when the pod never restarts containers; not on an init container that is no sidecar."""
    if not c.resizePolicy:
        return
    rp = f"{path}.resizePolicy"
    if init and not sidecar:
        errs.append((rp, "Invalid value: must not be set for init containers"))
        return
    seen: set[str] = set()
    for i, p in enumerate(c.resizePolicy):
        if p.resourceName in seen:
            errs.append((f"{rp}[{i}]", f'Duplicate value: "{p.resourceName}"'))
        seen.add(p.resourceName)
        if restart_policy == "Never" and p.restartPolicy != "NotRequired":
            errs.append((rp, "Invalid value: must be 'NotRequired' when `restartPolicy` is 'Never'"))


def scheduling_gates(errs: Errors, path: str, gates: list[PodSchedulingGate]) -> None:
    """Gate names are qualified names (like label keys), each once."""
    seen: set[str] = set()
    for i, gate in enumerate(gates):
        gp = f"{path}.schedulingGates[{i}]"
        for m in names.qualified_name(gate.name):
            errs.append((f"{gp}.name", m))
        if gate.name in seen:
            errs.append((gp, f'Duplicate value: "{gate.name}"'))
        seen.add(gate.name)


def pod_spec(errs: Errors, path: str, spec: PodSpec) -> None:
    """Everything above for one pod spec (a Pod's or a template's)."""
    host_users = spec.hostUsers is not False
    _pod_security(errs, path, spec)
    _host_users(errs, path, spec)
    sidecars = {c.name for c in spec.initContainers if c.restartPolicy == "Always"}
    for group in ("initContainers", "containers"):
        for i, c in enumerate(getattr(spec, group)):
            cp = f"{path}.{group}[{i}]"
            container_security(errs, f"{cp}.securityContext", c.securityContext, host_users)
            resize_policy(errs, cp, c, spec.restartPolicy, group == "initContainers", c.name in sidecars)
    scheduling_gates(errs, path, spec.schedulingGates)


APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"  # deprecated, still honoured


def apparmor_annotations(errs: Errors, path: str, annotations: dict[str, str], spec: PodSpec) -> None:
    """The deprecated per-container AppArmor annotations (ValidateAppArmorPodAnnotations): each
    names a container of the pod and holds ``runtime/default``, ``unconfined`` or ``localhost/<name>``;
    ``path`` is the annotations' (``metadata.annotations``)."""
    containers = {c.name for c in [*spec.initContainers, *spec.containers]}
    for key, value in annotations.items():
        if not key.startswith(APPARMOR_ANNOTATION_PREFIX):
            continue
        name = key.removeprefix(APPARMOR_ANNOTATION_PREFIX)
        if name not in containers:
            errs.append((f"{path}[{key}]", f'Invalid value: "{name}": container not found'))
        if value not in ("", "runtime/default", "unconfined") and not value.startswith("localhost/"):
            errs.append((f"{path}[{key}]", f'Invalid value: "{value}": invalid AppArmor profile name: "{value}"'))


def gated_pod(errs: Errors, spec: PodSpec) -> None:
    """A Pod (not a template) bound to a node may not still be gated."""
    if spec.nodeName and spec.schedulingGates:
        errs.append(("spec.nodeName", "Forbidden: cannot be set until all schedulingGates have been cleared"))


def gates_update(errs: Errors, new: list[PodSchedulingGate], old: list[PodSchedulingGate]) -> None:
    """On update gates may only be removed (validateOnlyDeletedSchedulingGates)."""
    before = {g.name for g in old}
    for i, gate in enumerate(new):
        if gate.name not in before:
            errs.append((f"spec.schedulingGates[{i}].name",
                         f"Forbidden: only deletion is allowed, but found new scheduling gate '{gate.name}'"))
