"""Admission: turn a request body into a valid, defaulted object, and merge an applied
manifest into the stored object. Pure functions: no nats, no asyncio.

apply follows kubectl's three-way merge for the parts a user writes: the manifest's spec
(or data) replaces the stored one; labels and annotations merge — keys the previous apply
set and this one drops are removed, keys others set (controllers, `kyb edit`) stay — and the
last applied manifest is kept in the ``kubectl.kubernetes.io/last-applied-configuration``
annotation. A field the manifest never set (``spec.replicas`` under an autoscaler) keeps its
live value.
"""

from __future__ import annotations

from typing import Any

import msgspec
import yaml

from kyb import errors
from schemas import limits
from schemas.batch import GENERATED_TEMPLATE_LABELS, Job
from schemas.meta import LAST_APPLIED_ANNOTATION, Object
from schemas.rbac import ClusterRole
from schemas.registry import KindInfo, UnknownKind, for_manifest
from schemas.validation import SchemaError, decode, validate_update

MAX_PAYLOAD = limits.MAX_BYTES
_sorted_json = msgspec.json.Encoder(order="sorted").encode
LAST_APPLIED = LAST_APPLIED_ANNOTATION

class UnknownKindRequest(errors.BadRequest):
    """A manifest of a kind this process does not serve (BadRequest naming it)."""


def parse_manifest(body: bytes) -> dict[str, Any]:
    """One manifest (YAML or JSON) as a mapping, or BadRequest saying what is wrong with it
    (TooLarge past a size limit); the limits are ``schemas.limits``'."""
    try:
        if len(body) > limits.MAX_BYTES:
            limits.check_bytes(body)
        text = body.strip()
        if not text:
            raise errors.BadRequest("empty request body: expected one manifest (YAML or JSON)")
        if text[:1] == b"{":
            doc = limits.decode_json(text)
        else:
            docs = [d for d in limits.load_yaml(body) if d is not None]
            if len(docs) != 1:
                raise errors.BadRequest(f"expected exactly one manifest per request, got {len(docs)}")
            doc = docs[0]
    except limits.InputError as e:
        raise from_limit(e) from None
    except yaml.YAMLError as e:
        raise errors.BadRequest(f"invalid YAML: {_yaml_where(e)}") from None
    if not isinstance(doc, dict):
        raise errors.BadRequest(
            f"a manifest must be an object (mapping) with apiVersion, kind and metadata, not a {type(doc).__name__}"
        )
    return doc


def from_limit(e: limits.InputError) -> errors.KybError:
    """The api's error for a ``schemas.limits`` refusal: 413 for the size limits, else 400."""
    return (errors.TooLarge if isinstance(e, limits.InputTooLarge) else errors.BadRequest)(e.message)


def _yaml_where(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return str(problem)


def _text(doc: dict[str, Any], key: str) -> str:
    """A manifest's string field ("" when absent or not a string)."""
    value = doc.get(key)
    return value if isinstance(value, str) else ""


def _spec_of(doc: dict[str, Any]) -> dict[str, Any]:
    """A manifest's spec ({} when absent or not a mapping)."""
    spec = doc.get("spec")
    return spec if isinstance(spec, dict) else {}


def kind_of(doc: dict[str, Any]) -> KindInfo:
    details = []
    api_version, kind = _text(doc, "apiVersion"), _text(doc, "kind")
    if not api_version:
        details.append(errors.FieldError("apiVersion", "Required value"))
    if not kind:
        details.append(errors.FieldError("kind", "Required value"))
    if details:
        raise errors.BadRequest("the manifest must name its apiVersion and kind", details)
    try:
        return for_manifest(api_version, kind)
    except UnknownKind as e:
        raise UnknownKindRequest(str(e), [errors.FieldError("kind", str(e))]) from None


def admit(doc: dict[str, Any], default_namespace: str) -> tuple[KindInfo, Object]:
    """Validate and default one manifest; the namespace is filled for namespaced kinds."""
    info = kind_of(doc)
    meta = doc.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise errors.Invalid("metadata must be an object", [errors.FieldError("metadata", "must be an object")])
    if info.namespaced:
        meta = dict(meta or {})
        meta.setdefault("namespace", default_namespace)
        if meta.get("namespace") in (None, ""):
            meta["namespace"] = default_namespace
        doc = {**doc, "metadata": meta}
    elif meta and meta.get("namespace"):
        doc = {**doc, "metadata": {k: v for k, v in meta.items() if k != "namespace"}}
    try:
        obj = decode(doc)
    except SchemaError as e:
        details = [errors.FieldError(f, m) for f, m in e.details]
        name = (meta or {}).get("name") if isinstance(meta, dict) else None
        what = f'{info.kind} "{name}"' if name else info.kind
        summary = "; ".join(f"{d.field}: {d.message}" for d in details[:3])
        raise errors.Invalid(f"{what} is invalid: {summary}", details) from None
    except UnknownKind as e:
        raise errors.BadRequest(str(e)) from None
    return info, obj


def check_update(new: Object, current: Object) -> None:
    """Kubernetes' update validation (fields that may not change once set): Invalid naming each."""
    errs = validate_update(new, current)
    if errs:
        details = [errors.FieldError(f, m) for f, m in errs]
        summary = "; ".join(f"{d.field}: {d.message}" for d in details[:3])
        raise errors.Invalid(f'{new.KIND} "{new.metadata.name}" is invalid: {summary}', details)


_STATUS_DEFAULTS: dict[type, Any] = {}
_NO_STATUS = object()


def _status_default(cls: type) -> Any:
    found = _STATUS_DEFAULTS.get(cls)
    if found is None:
        found = _NO_STATUS
        for f in msgspec.structs.fields(cls):
            if f.name == "status":
                if f.default is not msgspec.NODEFAULT:
                    found = f.default
                elif f.default_factory is not msgspec.NODEFAULT:
                    found = f.default_factory
        _STATUS_DEFAULTS[cls] = found
    return found


def fresh_status(obj: Object) -> Object:
    """The object with the status a new object starts with (users do not write status)."""
    default = _status_default(type(obj))
    if default is _NO_STATUS:
        return obj
    status = default() if callable(default) and not isinstance(default, msgspec.Struct) else default
    if getattr(obj, "status", None) == status:
        return obj
    return msgspec.structs.replace(obj, status=status)


def with_last_applied(obj: Object, doc: dict[str, Any]) -> Object:
    applied = _sorted_json(_strip_last_applied(doc)).decode()
    annotations = {**obj.metadata.annotations, LAST_APPLIED: applied}
    return msgspec.structs.replace(obj, metadata=msgspec.structs.replace(obj.metadata, annotations=annotations))


def _strip_last_applied(doc: dict[str, Any]) -> dict[str, Any]:
    meta = doc.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("annotations"), dict) and LAST_APPLIED in meta["annotations"]:
        anns = {k: v for k, v in meta["annotations"].items() if k != LAST_APPLIED}
        doc = {**doc, "metadata": {**meta, "annotations": anns}}
    return doc


def _merge_map(live: dict[str, str], previous: dict[str, str], desired: dict[str, str]) -> dict[str, str]:
    out = {k: v for k, v in live.items() if k not in previous or k in desired}
    out.update(desired)
    return out


def _previous_applied(raw: str | None) -> dict[str, Any]:
    """The last applied manifest; {} when there is none or it is not one (anyone may write
    the annotation, so it is decoded under the same limits as a request)."""
    try:
        prev = limits.decode_json(raw, what="last-applied annotation") if raw else {}
    except limits.InputError:
        return {}
    return prev if isinstance(prev, dict) else {}


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def merge_apply(current: Object, desired: Object, doc: dict[str, Any]) -> Object:
    """The object to store when ``doc`` (admitted as ``desired``) is applied over ``current``."""
    prev_doc = _previous_applied(current.metadata.annotations.get(LAST_APPLIED))
    prev_meta = _mapping(prev_doc.get("metadata"))
    dm = desired.metadata
    labels = _merge_map(current.metadata.labels, _mapping(prev_meta.get("labels")), dm.labels)
    annotations = _merge_map(
        {k: v for k, v in current.metadata.annotations.items() if k != LAST_APPLIED},
        _mapping(prev_meta.get("annotations")),
        {k: v for k, v in dm.annotations.items() if k != LAST_APPLIED},
    )
    if LAST_APPLIED in dm.annotations:
        annotations[LAST_APPLIED] = dm.annotations[LAST_APPLIED]
    meta = msgspec.structs.replace(
        current.metadata,
        labels=labels,
        annotations=annotations,
        ownerReferences=dm.ownerReferences or current.metadata.ownerReferences,
        finalizers=_union(current.metadata.finalizers, dm.finalizers),
    )
    changes: dict[str, Any] = {"metadata": meta}
    for f in type(desired).__struct_fields__:
        if f in ("metadata", "status", "apiVersion", "kind"):
            continue
        changes[f] = getattr(desired, f)
    merged = msgspec.structs.replace(current, apiVersion=desired.apiVersion, **changes)
    merged = _keep_aggregated_rules(_keep_unset_replicas(merged, current, doc, prev_doc), current, doc, prev_doc)
    return _keep_generated_job_selector(merged, current, doc)


def _keep_aggregated_rules(merged: Object, current: Object, doc: dict[str, Any], prev_doc: dict[str, Any]) -> Object:
    """An aggregated ClusterRole's rules are the controller's: a manifest that never held
    ``rules`` leaves them as they are (as kubectl's three-way merge keeps a field neither the
    manifest nor the last applied one sets)."""
    if not isinstance(merged, ClusterRole) or not isinstance(current, ClusterRole) or merged.aggregationRule is None:
        return merged
    if "rules" in doc or "rules" in prev_doc or merged.rules == current.rules:
        return merged
    return msgspec.structs.replace(merged, rules=current.rules)


def _keep_generated_job_selector(merged: Object, current: Object, doc: dict[str, Any]) -> Object:
    """A Job's generated selector and pod-template labels stay: the manifest never set them
    (as kubectl's three-way merge keeps what the last applied manifest did not hold)."""
    if not isinstance(current, Job) or not isinstance(merged, Job) or current.spec.selector is None:
        return merged
    raw_spec = _spec_of(doc)
    if "selector" in raw_spec or merged.spec.manualSelector:
        return merged
    live = current.spec.template.metadata.labels
    generated = {k: live[k] for k in GENERATED_TEMPLATE_LABELS if k in live}
    tmpl = merged.spec.template
    labels = {**tmpl.metadata.labels, **generated}
    template = msgspec.structs.replace(tmpl, metadata=msgspec.structs.replace(tmpl.metadata, labels=labels))
    spec = msgspec.structs.replace(merged.spec, selector=current.spec.selector, template=template)
    return msgspec.structs.replace(merged, spec=spec)


def _keep_unset_replicas(merged: Object, current: Object, doc: dict[str, Any], prev_doc: dict[str, Any]) -> Object:
    spec = getattr(merged, "spec", None)
    if spec is None or not hasattr(spec, "replicas"):
        return merged
    raw_spec = _spec_of(doc)
    prev_spec = _spec_of(prev_doc)
    if "replicas" in raw_spec or "replicas" in prev_spec:
        return merged
    live = getattr(getattr(current, "spec", None), "replicas", None)
    if live is None:
        return merged
    return msgspec.structs.replace(merged, spec=msgspec.structs.replace(spec, replicas=live))


def _union(a: list[str], b: list[str]) -> list[str]:
    out = list(a)
    for x in b:
        if x not in out:
            out.append(x)
    return out


def same_content(a: Object, b: Object) -> bool:
    """Equal but for resourceVersion (what decides "unchanged")."""
    # By value: equal objects may encode differently (see kyb.store.spec_of).
    def strip(o: Object) -> Object:
        return msgspec.structs.replace(o, metadata=msgspec.structs.replace(o.metadata, resourceVersion=None))

    return strip(a) == strip(b)


def replace_onto(current: Object, desired: Object) -> Object:
    """`replace`: the user's object wholesale, system metadata and status from the live one
    (managedFields too, unless the user's object names them)."""
    dm = desired.metadata
    meta = msgspec.structs.replace(
        current.metadata,
        labels=dm.labels,
        annotations=dm.annotations,
        ownerReferences=dm.ownerReferences,
        finalizers=dm.finalizers,
        managedFields=dm.managedFields or current.metadata.managedFields,
    )
    changes = {f: getattr(desired, f) for f in type(desired).__struct_fields__ if f not in ("metadata", "status")}
    return msgspec.structs.replace(current, metadata=meta, **changes)
