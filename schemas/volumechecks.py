"""Semantic checks of the files a volume projects (configMap, secret, downwardAPI and
projected volumes), as Kubernetes' validateKeyToPath, validateDownwardAPIVolumeFile and
validateProjectedVolumeSource make them, with paths in the form Kubernetes prints
(``spec.volumes[0].projected.sources[1].serviceAccountToken.expirationSeconds``).
"""

from __future__ import annotations

from schemas.pod import DownwardAPIVolumeFile, KeyToPath, ProjectedVolumeSource, ResourceFieldSelector, Volume
from schemas.quantity import parse_quantity

Errors = list[tuple[str, str]]

FILE_MODE_MESSAGE = "must be a number between 0 and 0777 (octal), both inclusive"
MIN_TOKEN_SECONDS = 10 * 60  # a projected token lives at least ten minutes
MAX_TOKEN_SECONDS = 1 << 32

# fieldRef paths a downwardAPI volume may project (env vars may use more, see services/kubelet/env.py)
VOLUME_FIELD_PATHS = ("metadata.name", "metadata.namespace", "metadata.uid", "metadata.labels",
                      "metadata.annotations")
SUBSCRIPTED_FIELD_PATHS = ("metadata.labels", "metadata.annotations")
RESOURCE_FIELDS = ("limits.cpu", "limits.memory", "limits.ephemeral-storage", "requests.cpu", "requests.memory",
                   "requests.ephemeral-storage")
CPU_DIVISORS = ("1m", "1")
MEMORY_DIVISORS = ("1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei")
PROJECTION_SOURCES = ("secret", "configMap", "downwardAPI", "serviceAccountToken", "clusterTrustBundle")


def local_path(errs: Errors, path: str, value: str) -> None:
    """A path inside the volume: relative, no ``..`` element, not starting with ``..``
    (Kubernetes' validateLocalNonReservedPath)."""
    if value.startswith("/"):
        errs.append((path, f'Invalid value: "{value}": must be a relative path'))
    parts = value.split("/")
    if ".." in parts:
        errs.append((path, f"Invalid value: \"{value}\": must not contain '..'"))
    elif value.startswith(".."):
        errs.append((path, f"Invalid value: \"{value}\": must not start with '..'"))


def mode(errs: Errors, path: str, value: int | None) -> None:
    if value is not None and not 0 <= value <= 0o777:
        errs.append((path, f"Invalid value: {value}: {FILE_MODE_MESSAGE}"))


def key_to_path(errs: Errors, path: str, kp: KeyToPath) -> None:
    if not kp.key:
        errs.append((f"{path}.key", "Required value"))
    if not kp.path:
        errs.append((f"{path}.path", "Required value"))
    local_path(errs, f"{path}.path", kp.path)
    mode(errs, f"{path}.mode", kp.mode)


def field_path_allowed(field_path: str, allowed: tuple[str, ...]) -> bool:
    """``metadata.labels['key']`` style subscripts are allowed for labels and annotations."""
    if field_path in allowed:
        return True
    for prefix in SUBSCRIPTED_FIELD_PATHS:
        if field_path.startswith(prefix + "['") and field_path.endswith("']") and len(field_path) > len(prefix) + 4:
            return True
    return False


def resource_field(errs: Errors, path: str, ref: ResourceFieldSelector, *, volume: bool) -> None:
    """Kubernetes' validateContainerResourceFieldSelector: a volume names its container."""
    if volume and not ref.containerName:
        errs.append((f"{path}.containerName", "Required value"))
    if not ref.resource:
        errs.append((f"{path}.resource", "Required value"))
        return
    if ref.resource not in RESOURCE_FIELDS:
        supported = ", ".join(f'"{r}"' for r in RESOURCE_FIELDS)
        errs.append((f"{path}.resource", f'Unsupported value: "{ref.resource}": supported values: {supported}'))
        return
    if ref.divisor is None:
        return
    try:
        value = parse_quantity(ref.divisor)
    except ValueError as e:
        errs.append((f"{path}.divisor", str(e)))
        return
    cpu = ref.resource.endswith(".cpu")
    allowed = CPU_DIVISORS if cpu else MEMORY_DIVISORS
    if value not in {parse_quantity(d) for d in allowed}:
        what = "1m and 1 are supported with the cpu resource" if cpu else (
            "1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi, 1Ei are supported with the "
            f"{ref.resource.split('.', 1)[1]} resource")
        errs.append((f"{path}.divisor", f'Invalid value: "{ref.divisor}": only divisor\'s values {what}'))


def downward_file(errs: Errors, path: str, f: DownwardAPIVolumeFile) -> None:
    if not f.path:
        errs.append((f"{path}.path", "Required value"))
    local_path(errs, f"{path}.path", f.path)
    if f.fieldRef is not None:
        if not field_path_allowed(f.fieldRef.fieldPath, VOLUME_FIELD_PATHS):
            supported = ", ".join(f'"{p}"' for p in VOLUME_FIELD_PATHS)
            errs.append((f"{path}.fieldRef.fieldPath",
                         f'Unsupported value: "{f.fieldRef.fieldPath}": supported values: {supported}'))
        if f.resourceFieldRef is not None:
            errs.append((path, 'Invalid value: "resource": fieldRef and resourceFieldRef can not be specified '
                         "simultaneously"))
    elif f.resourceFieldRef is not None:
        resource_field(errs, f"{path}.resourceFieldRef", f.resourceFieldRef, volume=True)
    else:
        errs.append((path, "Required value: one of fieldRef and resourceFieldRef is required"))
    mode(errs, f"{path}.mode", f.mode)


def projected(errs: Errors, path: str, src: ProjectedVolumeSource) -> None:
    """Exactly one source per entry, every file path local, no two sources writing one path,
    tokens living at least ten minutes."""
    mode(errs, f"{path}.defaultMode", src.defaultMode)
    written: set[str] = set()

    def claim(file_path: str) -> None:
        if not file_path:
            return
        if file_path in written:
            errs.append((path, f'Invalid value: "{file_path}": conflicting duplicate paths'))
        written.add(file_path)

    for i, s in enumerate(src.sources):
        sp = f"{path}.sources[{i}]"
        set_ = [name for name in PROJECTION_SOURCES if getattr(s, name) is not None]
        if not set_:
            errs.append((sp, "Required value: must specify one of: " + ", ".join(f"`{n}`" for n in PROJECTION_SOURCES)))
        elif len(set_) > 1:
            errs.append((sp, "Forbidden: may not specify more than 1 volume type per source"))
        for kind, ref in (("secret", s.secret), ("configMap", s.configMap)):
            if ref is None:
                continue
            if not ref.name:
                errs.append((f"{sp}.{kind}.name", "Required value"))
            for j, kp in enumerate(ref.items):
                key_to_path(errs, f"{sp}.{kind}.items[{j}]", kp)
                claim(kp.path)
        if s.downwardAPI is not None:
            for j, f in enumerate(s.downwardAPI.items):
                downward_file(errs, f"{sp}.downwardAPI.items[{j}]", f)
                claim(f.path)
        if s.serviceAccountToken is not None:
            tp = f"{sp}.serviceAccountToken"
            seconds = s.serviceAccountToken.expirationSeconds
            if seconds < MIN_TOKEN_SECONDS:
                errs.append((f"{tp}.expirationSeconds",
                             f"Invalid value: {seconds}: may not specify a duration less than 10 minutes"))
            elif seconds > MAX_TOKEN_SECONDS:
                errs.append((f"{tp}.expirationSeconds",
                             f"Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds"))
            if not s.serviceAccountToken.path:
                errs.append((f"{tp}.path", "Required value"))
            local_path(errs, f"{tp}.path", s.serviceAccountToken.path)
            claim(s.serviceAccountToken.path)
        if s.clusterTrustBundle is not None:
            bp = f"{sp}.clusterTrustBundle"
            b = s.clusterTrustBundle
            if b.name is not None and b.signerName is not None:
                errs.append((bp, "Invalid value: only one of name and signerName may be used"))
            elif b.name is not None:
                if not b.name:
                    errs.append((f"{bp}.name", "Required value: must be a valid object name"))
                if b.labelSelector is not None:
                    errs.append((f"{bp}.labelSelector", "Invalid value: labelSelector must be unset if name is "
                                 "specified"))
            elif b.signerName is not None:
                if not b.signerName:
                    errs.append((f"{bp}.signerName", "Required value: must be a valid signer name"))
            else:
                errs.append((bp, "Required value: either name or signerName must be specified"))
            if not b.path:
                errs.append((f"{bp}.path", "Required value"))
            local_path(errs, f"{bp}.path", b.path)
            claim(b.path)
            if not b.optional:  # the kubelet would wait for the bundle forever, as Kubernetes' does
                errs.append((bp, "Forbidden: ClusterTrustBundles (certificates.k8s.io) are not served, so no bundle "
                             "can be found and the pod could never start; set optional: true to mount an empty file"))


def volume_files(errs: Errors, path: str, v: Volume) -> None:
    """The file checks of a volume's source, whichever kind projects files."""
    if v.configMap is not None:
        mode(errs, f"{path}.configMap.defaultMode", v.configMap.defaultMode)
        for j, kp in enumerate(v.configMap.items):
            key_to_path(errs, f"{path}.configMap.items[{j}]", kp)
    if v.secret is not None:
        mode(errs, f"{path}.secret.defaultMode", v.secret.defaultMode)
        for j, kp in enumerate(v.secret.items):
            key_to_path(errs, f"{path}.secret.items[{j}]", kp)
    if v.downwardAPI is not None:
        mode(errs, f"{path}.downwardAPI.defaultMode", v.downwardAPI.defaultMode)
        for j, f in enumerate(v.downwardAPI.items):
            downward_file(errs, f"{path}.downwardAPI.items[{j}]", f)
    if v.projected is not None:
        projected(errs, f"{path}.projected", v.projected)
