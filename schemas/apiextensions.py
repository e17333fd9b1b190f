"""apiextensions.k8s.io/v1 CustomResourceDefinition: its schema, defaults and validation as
Kubernetes' apiextensions-apiserver has them, and the kind a CRD makes exist (``custom_kind``:
a ``KindInfo`` whose objects are checked against the version's ``openAPIV3Schema``). Pure: no I/O.

Every served version is reachable; one is the storage version. As conversion is ``None``
(the only strategy served: a ``Webhook`` one is accepted and treated as ``None``), the
versions differ only in ``apiVersion``, each checked against its own schema.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from msgspec.structs import replace

from schemas import jsonpath, structural
from schemas.meta import Base, Object
from schemas.registry import KindInfo

GROUP = "apiextensions.k8s.io"
API_VERSION = f"{GROUP}/v1"
CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"

Errors = list[tuple[str, str]]


class CustomResourceDefinitionNames(Base, kw_only=True, frozen=True):
    plural: str = ""
    singular: str = ""
    shortNames: list[str] = []
    kind: str = ""
    listKind: str = ""
    categories: list[str] = []


class CustomResourceValidation(Base, kw_only=True, frozen=True):
    openAPIV3Schema: dict[str, Any] | None = None


class CustomResourceSubresourceScale(Base, kw_only=True, frozen=True):
    specReplicasPath: str = ""
    statusReplicasPath: str = ""
    labelSelectorPath: str | None = None


class CustomResourceSubresources(Base, kw_only=True, frozen=True):
    status: dict[str, Any] | None = None  # {} enables it
    scale: CustomResourceSubresourceScale | None = None


class CustomResourceColumnDefinition(Base, kw_only=True, frozen=True):
    name: str = ""
    type: str = ""
    format: str = ""
    description: str = ""
    priority: int = 0
    jsonPath: str = ""


class SelectableField(Base, kw_only=True, frozen=True):
    jsonPath: str = ""


class CustomResourceDefinitionVersion(Base, kw_only=True, frozen=True):
    name: str = ""
    served: bool = False
    storage: bool = False
    deprecated: bool = False
    deprecationWarning: str | None = None
    schema: CustomResourceValidation | None = None
    subresources: CustomResourceSubresources | None = None
    additionalPrinterColumns: list[CustomResourceColumnDefinition] = []
    selectableFields: list[SelectableField] = []


class WebhookClientConfig(Base, kw_only=True, frozen=True):
    url: str | None = None
    service: dict[str, Any] | None = None
    caBundle: str | None = None


class WebhookConversion(Base, kw_only=True, frozen=True):
    clientConfig: WebhookClientConfig | None = None
    conversionReviewVersions: list[str] = []


class CustomResourceConversion(Base, kw_only=True, frozen=True):
    strategy: Literal["None", "Webhook"] = "None"
    webhook: WebhookConversion | None = None


class CustomResourceDefinitionSpec(Base, kw_only=True, frozen=True):
    group: str = ""
    names: CustomResourceDefinitionNames = CustomResourceDefinitionNames()
    scope: str = ""
    versions: list[CustomResourceDefinitionVersion] = []
    conversion: CustomResourceConversion | None = None
    preserveUnknownFields: bool = False


class CustomResourceDefinitionCondition(Base, kw_only=True, frozen=True):
    type: str
    status: Literal["True", "False", "Unknown"]
    lastTransitionTime: str | None = None
    reason: str = ""
    message: str = ""


class CustomResourceDefinitionStatus(Base, kw_only=True, frozen=True):
    conditions: list[CustomResourceDefinitionCondition] = []
    acceptedNames: CustomResourceDefinitionNames = CustomResourceDefinitionNames()
    storedVersions: list[str] = []


class CustomResourceDefinition(Object, kw_only=True, frozen=True):
    API_VERSION = API_VERSION
    KIND = "CustomResourceDefinition"

    spec: CustomResourceDefinitionSpec = CustomResourceDefinitionSpec()
    status: CustomResourceDefinitionStatus = CustomResourceDefinitionStatus()


# -- defaults -------------------------------------------------------------------------------


def default_crd(crd: CustomResourceDefinition) -> CustomResourceDefinition:
    """Kubernetes' defaults: singular from the kind, listKind ``<Kind>List``, conversion None."""
    spec = crd.spec
    names = spec.names
    if names.kind and not names.singular:
        names = replace(names, singular=names.kind.lower())
    if names.kind and not names.listKind:
        names = replace(names, listKind=f"{names.kind}List")
    conversion = spec.conversion or CustomResourceConversion()
    if names is spec.names and conversion is spec.conversion:
        return crd
    return replace(crd, spec=replace(spec, names=names, conversion=conversion))


# -- validation -----------------------------------------------------------------------------


_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_KIND = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
COLUMN_TYPES = ("integer", "number", "string", "boolean", "date")


def validate_crd(crd: CustomResourceDefinition) -> Errors:
    errs: Errors = []
    spec = crd.spec
    names = spec.names
    if not spec.group:
        errs.append(("spec.group", "Required value"))
    elif not _DNS_SUBDOMAIN.match(spec.group) or len(spec.group) > 253:
        errs.append(("spec.group", f'Invalid value: "{spec.group}": a lowercase RFC 1123 subdomain'))
    elif "." not in spec.group:
        errs.append(("spec.group", f'Invalid value: "{spec.group}": should be a domain with at least one dot'))
    for field_name in ("plural", "singular"):
        value = getattr(names, field_name)
        if not value:
            errs.append((f"spec.names.{field_name}", "Required value"))
        elif not _DNS_LABEL.match(value) or len(value) > 63:
            errs.append((f"spec.names.{field_name}", f'Invalid value: "{value}": a lowercase RFC 1035 label'))
    for i, short in enumerate(names.shortNames):
        if not _DNS_LABEL.match(short):
            errs.append((f"spec.names.shortNames[{i}]", f'Invalid value: "{short}": a lowercase RFC 1035 label'))
    for field_name in ("kind", "listKind"):
        value = getattr(names, field_name)
        if not value:
            errs.append((f"spec.names.{field_name}", "Required value"))
        elif not _KIND.match(value):
            errs.append((f"spec.names.{field_name}", f'Invalid value: "{value}": may have mixed case, but should '
                                                     "otherwise match: ^[a-z]([-a-z0-9]*[a-z0-9])?$"))
    if names.kind and names.kind == names.listKind:
        errs.append(("spec.names.listKind", f'Invalid value: "{names.listKind}": kind and listKind may not be the same'))
    if names.plural and spec.group and crd.metadata.name != f"{names.plural}.{spec.group}":
        errs.append(("metadata.name", f'Invalid value: "{crd.metadata.name}": must be spec.names.plural+"."+spec.group'))
    if spec.scope not in ("Namespaced", "Cluster"):
        errs.append(("spec.scope", f'Unsupported value: "{spec.scope}": supported values: "Cluster", "Namespaced"'
                     if spec.scope else "Required value"))
    if not spec.versions:
        errs.append(("spec.versions", "Invalid value: must have exactly one version marked as storage version"))
    seen: set[str] = set()
    for i, v in enumerate(spec.versions):
        path = f"spec.versions[{i}]"
        if not v.name:
            errs.append((f"{path}.name", "Required value"))
        elif not _DNS_LABEL.match(v.name):
            errs.append((f"{path}.name", f'Invalid value: "{v.name}": a DNS-1035 label'))
        elif v.name in seen:
            errs.append((f"{path}.name", f'Invalid value: "{v.name}": must appear only once'))
        seen.add(v.name)
        schema = v.schema.openAPIV3Schema if v.schema is not None else None
        errs.extend(structural.structural_problems(schema, f"{path}.schema.openAPIV3Schema"))
        for j, col in enumerate(v.additionalPrinterColumns):
            cpath = f"{path}.additionalPrinterColumns[{j}]"
            if not col.name:
                errs.append((f"{cpath}.name", "Required value"))
            if col.type not in COLUMN_TYPES:
                errs.append((f"{cpath}.type", f'Unsupported value: "{col.type}": supported values: '
                             + ", ".join(f'"{t}"' for t in COLUMN_TYPES)))
            if not col.jsonPath:
                errs.append((f"{cpath}.jsonPath", "Required value"))
            else:
                try:
                    jsonpath.parse(col.jsonPath)
                except jsonpath.JsonPathError as e:
                    errs.append((f"{cpath}.jsonPath", f'Invalid value: "{col.jsonPath}": {e}'))
        scale = v.subresources.scale if v.subresources is not None else None
        if scale is not None:
            for name in ("specReplicasPath", "statusReplicasPath"):
                value = getattr(scale, name)
                if not value:
                    errs.append((f"{path}.subresources.scale.{name}", "Required value"))
                elif not value.startswith("."):
                    errs.append((f"{path}.subresources.scale.{name}", f'Invalid value: "{value}": should be a json path '
                                                                      "under .spec or .status"))
    storage = [v for v in spec.versions if v.storage]
    if spec.versions and len(storage) != 1:
        errs.append(("spec.versions", "Invalid value: must have exactly one version marked as storage version"))
    if spec.versions and not any(v.served for v in spec.versions):
        errs.append(("spec.versions", "Invalid value: must have at least one served version"))
    if spec.preserveUnknownFields:
        errs.append(("spec.preserveUnknownFields", "Invalid value: true: must be false in order to use defaults in the "
                                                   "schema"))
    return errs


def validate_crd_update(errs: Errors, new: CustomResourceDefinition, old: CustomResourceDefinition) -> None:
    if new.spec.group != old.spec.group:
        errs.append(("spec.group", "Invalid value: field is immutable"))
    if new.spec.names.plural != old.spec.names.plural:
        errs.append(("spec.names.plural", "Invalid value: field is immutable"))
    if new.spec.scope != old.spec.scope:
        errs.append(("spec.scope", "Invalid value: field is immutable"))
    if old.spec.names.kind and new.spec.names.kind != old.spec.names.kind:
        errs.append(("spec.names.kind", "Invalid value: field is immutable"))
    stored = set(old.status.storedVersions)
    missing = sorted(stored - {v.name for v in new.spec.versions})
    if missing:
        errs.append(("status.storedVersions", f"Invalid value: must have the storage versions {missing} in spec.versions"))


# -- the kind a CRD makes -------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    jsonPath: str
    priority: int = 0
    format: str = ""
    description: str = ""


@dataclass(frozen=True)
class Version:
    name: str
    schema: dict[str, Any]
    status: bool = False           # the status subresource
    scale: CustomResourceSubresourceScale | None = None
    columns: tuple[Column, ...] = ()
    deprecated: bool = False
    deprecation_warning: str | None = None


@dataclass(frozen=True)
class CustomKind:
    """What a KindInfo of a custom resource carries beside the built-in kinds' fields."""

    crd: str                                   # the CRD's name: <plural>.<group>
    group: str
    versions: dict[str, Version]               # served versions by name
    storage: str
    list_kind: str
    categories: tuple[str, ...] = ()
    uid: str = ""
    generation: int = 0
    top_fields: tuple[str, ...] = field(default=())

    def version(self, api_version: str) -> Version:
        return self.versions[api_version.rpartition("/")[2]]


_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(name: str) -> tuple[int, int, int, str]:
    """Kubernetes' version order, highest first when sorted: GA by number, then beta, then
    alpha, then anything else by name."""
    m = _VERSION.match(name)
    if m is None:
        return (3, 0, 0, name)
    level = {None: 0, "beta": 1, "alpha": 2}[m[2]]
    return (level, -int(m[1]), -int(m[3] or 0), name)


def bucket_for(plural: str, group: str) -> str:
    """The KV bucket of a custom kind: ``kyb-<plural>_<group, dots as underscores>`` (neither
    holds an underscore, so the name maps back to one kind and never meets a built-in's)."""
    return f"kyb-{plural}_{group.replace('.', '_')}"


@functools.lru_cache(maxsize=256)
def _struct(kind: str, fields: tuple[str, ...], api_version: str) -> type[Object]:
    made = msgspec.defstruct(
        kind,
        [(f, Any, msgspec.UNSET) for f in fields],
        bases=(Object,),
        kw_only=True,
        frozen=True,
        omit_defaults=True,
        forbid_unknown_fields=True,
        namespace={"API_VERSION": api_version, "KIND": kind, "__module__": "schemas.custom"},
    )
    return made  # type: ignore[return-value]


def custom_kind(crd: CustomResourceDefinition) -> KindInfo:
    """The kind a valid CRD makes: its served versions (preferred first), names, scope, bucket
    and the Struct of its objects (one field per top-level property of its schemas)."""
    spec = crd.spec
    served = sorted((v for v in spec.versions if v.served), key=lambda v: version_priority(v.name))
    versions: dict[str, Version] = {}
    fields: set[str] = set()
    for v in served:
        schema = (v.schema.openAPIV3Schema if v.schema else None) or {"type": "object"}
        status = v.subresources is not None and v.subresources.status is not None
        fields.update(structural.top_level_fields(schema))
        if status:
            fields.add("status")
        columns = tuple(Column(c.name, c.type, c.jsonPath, c.priority, c.format, c.description)
                        for c in v.additionalPrinterColumns)
        versions[v.name] = Version(v.name, schema, status, v.subresources.scale if v.subresources else None,
                                   columns, v.deprecated, v.deprecationWarning)
    storage = next((v.name for v in spec.versions if v.storage), served[0].name if served else "")
    api_versions = tuple(f"{spec.group}/{v.name}" for v in served)
    top = tuple(sorted(fields))
    custom = CustomKind(crd.metadata.name, spec.group, versions, storage, spec.names.listKind or f"{spec.names.kind}List",
                        tuple(spec.names.categories), crd.metadata.uid or "", crd.metadata.generation or 0, top)
    return KindInfo(
        spec.names.kind,
        api_versions,
        spec.names.plural,
        _struct(spec.names.kind, top, api_versions[0] if api_versions else ""),
        namespaced=spec.scope == "Namespaced",
        short_names=tuple(spec.names.shortNames),
        singular_name=spec.names.singular or spec.names.kind.lower(),
        custom=custom,
        bucket_name=bucket_for(spec.names.plural, spec.group),
    )


def admit(info: KindInfo, data: dict[str, Any]) -> tuple[dict[str, Any], Errors]:
    """A custom resource's manifest defaulted by its version's schema, and what is wrong with it."""
    custom: CustomKind = info.custom
    version = custom.version(str(data.get("apiVersion", "")))
    defaulted = structural.default(version.schema, data)
    return defaulted, structural.validate(version.schema, defaulted, root=True)


def established(crd: CustomResourceDefinition) -> bool:
    return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions)


def with_condition(status: CustomResourceDefinitionStatus, type_: str, value: Literal["True", "False", "Unknown"],
                   reason: str, message: str, now: str) -> CustomResourceDefinitionStatus:
    """``status`` with condition ``type_`` set (its transition time kept when unchanged)."""
    out: list[CustomResourceDefinitionCondition] = []
    found = False
    for c in status.conditions:
        if c.type == type_:
            found = True
            keep = c.status == value
            c = CustomResourceDefinitionCondition(type=type_, status=value, reason=reason, message=message,
                                                  lastTransitionTime=c.lastTransitionTime if keep else now)
        out.append(c)
    if not found:
        out.append(CustomResourceDefinitionCondition(type=type_, status=value, reason=reason, message=message,
                                                     lastTransitionTime=now))
    return replace(status, conditions=out)


def cell(column: Column, obj: dict[str, Any]) -> Any:
    """A printer column's value for one object, as Kubernetes' table convertor gives it
    (``None`` when the path finds nothing)."""
    try:
        found = jsonpath.find(column.jsonPath, obj)
    except jsonpath.JsonPathError:
        return None
    if not found:
        return None
    value = found[0] if len(found) == 1 else found
    if column.type == "integer" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    return value  # a list or an object is printed as its JSON, as kubectl prints it
