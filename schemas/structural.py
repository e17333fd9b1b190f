"""Custom resources against their CustomResourceDefinition's ``openAPIV3Schema``: defaults,
then validation, as Kubernetes' apiextensions-apiserver does. Pure: no I/O.

The order is Kubernetes': ``null`` in a field that is not ``nullable`` is dropped, then each
``default`` fills a missing field (and a dropped null), then the value is validated. Unlike
Kubernetes, which prunes fields the schema does not know, an unknown field is refused naming
its path (as kybernetes refuses unknown fields of every kind, and as ``kubectl``'s default
``--validate=strict`` asks), unless ``x-kubernetes-preserve-unknown-fields`` keeps them.

Messages are Kubernetes' (``spec.replicas in body must be of type integer: "string"``).
``x-kubernetes-validations`` (CEL rules) are not evaluated.
"""

from __future__ import annotations

import base64
import copy
import datetime as _dt
import ipaddress
import math
import re
import uuid
from collections.abc import Callable
from typing import Any

Errors = list[tuple[str, str]]
Schema = dict[str, Any]

PRESERVE = "x-kubernetes-preserve-unknown-fields"
INT_OR_STRING = "x-kubernetes-int-or-string"
EMBEDDED = "x-kubernetes-embedded-resource"
TYPES = ("object", "array", "string", "integer", "number", "boolean")


def json_type(value: Any) -> str:
    """The JSON type of a decoded value, as Kubernetes names it in its messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return json_type(value)
    return str(value)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# -- defaulting -----------------------------------------------------------------------------


def default(schema: Schema, value: Any) -> Any:
    """``value`` with the schema's defaults filled in and nulls of non-nullable fields dropped
    (a new value; the one given is not changed)."""
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        out: dict[str, Any] = {}
        for k, v in value.items():
            sub = props.get(k) if k in props else (extra if isinstance(extra, dict) else None)
            if v is None and sub is not None and not sub.get("nullable"):
                continue  # dropped, then defaulted below if it has one
            out[k] = default(sub, v) if sub is not None else v
        for k, sub in props.items():
            if k not in out and isinstance(sub, dict) and "default" in sub:
                out[k] = default(sub, copy.deepcopy(sub["default"]))
        return out
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            return [default(items, v) for v in value]
    return value


# -- validation -----------------------------------------------------------------------------


def validate(schema: Schema, value: Any, path: str = "", *, root: bool = False) -> Errors:
    """Every problem of ``value`` against ``schema`` as (field path, message) pairs. At the
    ``root`` of an object, apiVersion, kind and metadata are left to the object's own checks."""
    errs: Errors = []
    _check(schema, value, path, errs, root=root)
    return errs


def _type_ok(schema: Schema, value: Any) -> bool:
    t = schema.get("type")
    if schema.get(INT_OR_STRING):
        return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
    if not t:
        return True
    if t == "integer":
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return bool(json_type(value) == t)


def _check(schema: Schema, value: Any, path: str, errs: Errors, *, root: bool = False) -> None:
    where = path or "<root>"
    if value is None:
        if not schema.get("nullable"):
            errs.append((path, f'Invalid value: "null": {where} in body must be of type {schema.get("type") or "object"}: "null"'))
        return
    if not _type_ok(schema, value):
        want = "integer,string" if schema.get(INT_OR_STRING) else schema.get("type")
        errs.append((path, f'Invalid value: "{json_type(value)}": {where} in body must be of type {want}: "{json_type(value)}"'))
        return
    before = len(errs)
    _enum(schema, value, path, errs)
    _scalar(schema, value, path, errs)
    if isinstance(value, dict):
        _object(schema, value, path, errs, root=root)
    elif isinstance(value, list):
        _array(schema, value, path, errs)
    if len(errs) == before:
        _combinators(schema, value, path, errs)


def _enum(schema: Schema, value: Any, path: str, errs: Errors) -> None:
    enum = schema.get("enum")
    if enum is not None and value not in enum:
        supported = ", ".join(_show(e) for e in enum)
        errs.append((path, f"Unsupported value: {_show(value)}: supported values: {supported}"))


def _parses(parse: Callable[[str], object]) -> Callable[[str], bool]:
    """A format check: whether ``parse`` reads the string without a ValueError."""
    def check(text: str) -> bool:
        try:
            parse(text)
        except ValueError:  # binascii.Error is one
            return False
        return True
    return check


_HOSTNAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$", re.I)
_DATE_TIME = _parses(lambda s: _dt.datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00")))
_UUID = _parses(uuid.UUID)
_CIDR = _parses(lambda s: ipaddress.ip_network(s, strict=False))

# The formats Kubernetes checks (others are accepted as any string, as there).
_FORMATS: dict[str, Callable[[str], bool]] = {
    "date-time": lambda s: "T" in s.upper() and _DATE_TIME(s),
    "date": _parses(_dt.date.fromisoformat),
    "byte": _parses(lambda s: base64.b64decode(s, validate=True)),
    "uuid": lambda s: len(s) == 36 and _UUID(s),
    "ipv4": _parses(ipaddress.IPv4Address),
    "ipv6": _parses(ipaddress.IPv6Address),
    "cidr": lambda s: "/" in s and _CIDR(s),
    "hostname": lambda s: len(s) <= 253 and bool(_HOSTNAME.match(s)),
}


def _scalar(schema: Schema, value: Any, path: str, errs: Errors) -> None:
    where = path or "<root>"
    if isinstance(value, str):
        n = len(value)
        if "maxLength" in schema and n > schema["maxLength"]:
            errs.append((path, f"Too long: may not be more than {schema['maxLength']} bytes"))
        if "minLength" in schema and n < schema["minLength"]:
            errs.append((path, f"Invalid value: {_show(value)}: {where} in body should be at least "
                               f"{schema['minLength']} chars long"))
        pattern = schema.get("pattern")
        if pattern:
            try:
                matched = re.search(pattern, value) is not None
            except re.error:
                matched = True  # a pattern Python's re cannot read is not held against the value
            if not matched:
                errs.append((path, f"Invalid value: {_show(value)}: {where} in body should match '{pattern}'"))
        fmt = schema.get("format")
        check = _FORMATS.get(fmt) if isinstance(fmt, str) and not schema.get(INT_OR_STRING) else None
        if check is not None and not check(value):
            errs.append((path, f"Invalid value: {_show(value)}: {where} in body must be of type {fmt}: {_show(value)}"))
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    fmt = schema.get("format")
    if fmt == "int32" and not -(2**31) <= value < 2**31:
        errs.append((path, f"Invalid value: {_show(value)}: {where} in body must be of type int32"))
    if "maximum" in schema:
        top = schema["maximum"]
        if value > top or (schema.get("exclusiveMaximum") and value == top):
            rel = "less than" if schema.get("exclusiveMaximum") else "less than or equal to"
            errs.append((path, f"Invalid value: {_show(value)}: {where} in body should be {rel} {top}"))
    if "minimum" in schema:
        bottom = schema["minimum"]
        if value < bottom or (schema.get("exclusiveMinimum") and value == bottom):
            rel = "greater than" if schema.get("exclusiveMinimum") else "greater than or equal to"
            errs.append((path, f"Invalid value: {_show(value)}: {where} in body should be {rel} {bottom}"))
    step = schema.get("multipleOf")
    if step and not math.isclose(math.remainder(value, step), 0.0, abs_tol=1e-9):
        errs.append((path, f"Invalid value: {_show(value)}: {where} in body should be a multiple of {step}"))


def _object(schema: Schema, value: dict[str, Any], path: str, errs: Errors, *, root: bool) -> None:
    props: dict[str, Any] = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    embedded = bool(schema.get(EMBEDDED))
    skip = {"apiVersion", "kind", "metadata"} if (root or embedded) else set()
    for name in schema.get("required") or ():
        if name not in value and name not in skip:
            errs.append((_join(path, name), "Required value"))
    if embedded:
        for name in ("apiVersion", "kind"):
            if not value.get(name):
                errs.append((_join(path, name), "Required value: must not be empty"))
    n = len(value)
    if "maxProperties" in schema and n > schema["maxProperties"]:
        errs.append((path, f"Too many: {n}: must have at most {schema['maxProperties']} items"))
    if "minProperties" in schema and n < schema["minProperties"]:
        errs.append((path, f"Invalid value: {n}: {path or '<root>'} in body should have at least "
                           f"{schema['minProperties']} properties"))
    for name, item in value.items():
        child = _join(path, name)
        if name in skip:
            continue
        sub = props.get(name)
        if sub is None and isinstance(extra, dict):
            sub = extra
        if sub is None:
            if schema.get(PRESERVE) or extra is True or (not props and extra is None and not schema.get("type")):
                continue
            errs.append((child, f'unknown field "{child}"'))
            continue
        _check(sub, item, child, errs)


def _array(schema: Schema, value: list[Any], path: str, errs: Errors) -> None:
    n = len(value)
    if "maxItems" in schema and n > schema["maxItems"]:
        errs.append((path, f"Too many: {n}: must have at most {schema['maxItems']} items"))
    if "minItems" in schema and n < schema["minItems"]:
        errs.append((path, f"Invalid value: {n}: {path or '<root>'} in body should have at least "
                           f"{schema['minItems']} items"))
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            _check(items, item, f"{path}[{i}]", errs)
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set" or schema.get("uniqueItems"):
        seen: list[Any] = []
        for i, item in enumerate(value):
            if item in seen:
                errs.append((f"{path}[{i}]", f"Duplicate value: {_show(item)}"))
            else:
                seen.append(item)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen_keys: set[str] = set()
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            key = repr([item.get(k) for k in keys])
            if key in seen_keys:
                shown = ", ".join(f'"{k}":{_show(item.get(k))}' for k in keys)
                errs.append((f"{path}[{i}]", f"Duplicate value: map[string]interface {{{shown}}}"))
            seen_keys.add(key)


def _combinators(schema: Schema, value: Any, path: str, errs: Errors) -> None:
    where = path or "<root>"
    for sub in schema.get("allOf") or ():
        _check_value(sub, value, path, errs)
    any_of = schema.get("anyOf")
    if any_of and not any(not _value_errors(s, value, path) for s in any_of):
        first = _value_errors(any_of[0], value, path)
        errs.extend(first or [(path, f"Invalid value: {_show(value)}: {where} in body must match at least one schema in anyOf")])
    one_of = schema.get("oneOf")
    if one_of:
        matching = sum(1 for s in one_of if not _value_errors(s, value, path))
        if matching != 1:
            errs.append((path, f"Invalid value: {_show(value)}: {where} in body must validate one and only one schema (oneOf)"
                               + ("" if matching == 0 else f". Found {matching} valid alternatives")))
    negated = schema.get("not")
    if isinstance(negated, dict) and not _value_errors(negated, value, path):
        errs.append((path, f"Invalid value: {_show(value)}: {where} in body must not validate the schema (not)"))


def _value_errors(schema: Schema, value: Any, path: str) -> Errors:
    """Problems of ``value`` under a value validation of allOf/anyOf/oneOf/not, which may
    name fields but not declare them (so unknown fields are no problem there)."""
    errs: Errors = []
    _check_value(schema, value, path, errs)
    return errs


def _check_value(schema: Schema, value: Any, path: str, errs: Errors) -> None:
    loose = {**schema, PRESERVE: True}
    if "type" in schema and value is not None and not _type_ok(schema, value):
        errs.append((path, f'Invalid value: "{json_type(value)}": {path or "<root>"} in body must be of type '
                           f'{schema["type"]}: "{json_type(value)}"'))
        return
    _enum(schema, value, path, errs)
    if value is None:
        return
    _scalar(schema, value, path, errs)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for name in schema.get("required") or ():
            if name not in value:
                errs.append((_join(path, name), "Required value"))
        for name, sub in props.items():
            if name in value and isinstance(sub, dict):
                _check_value(sub, value[name], _join(path, name), errs)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _check_value(schema["items"], item, f"{path}[{i}]", errs)
    _combinators(loose, value, path, errs)


# -- the schema itself ----------------------------------------------------------------------


def structural_problems(schema: Any, path: str) -> Errors:
    """Why ``schema`` is not a structural schema as Kubernetes requires of a CRD version
    (``path`` names it: ``spec.versions[0].schema.openAPIV3Schema``)."""
    errs: Errors = []
    if not isinstance(schema, dict):
        return [(path, "Required value: schemas are required")]
    if schema.get("type") != "object":
        errs.append((f"{path}.type", 'Unsupported value: must be "object" at the root'))
    _structural(schema, path, errs, root=True)
    return errs


def _structural(schema: dict[str, Any], path: str, errs: Errors, *, root: bool = False) -> None:
    t = schema.get("type")
    if t is not None and t not in TYPES:
        errs.append((f"{path}.type", f'Unsupported value: "{t}": supported values: ' + ", ".join(f'"{x}"' for x in TYPES)))
    if not t and not schema.get(INT_OR_STRING) and not schema.get(PRESERVE) and not root:
        errs.append((f"{path}.type", "Required value: must not be empty for specified object fields"))
    if schema.get(INT_OR_STRING) and t:
        errs.append((f"{path}.type", "Forbidden: must be empty if x-kubernetes-int-or-string is true"))
    if "$ref" in schema:
        errs.append((f"{path}.$ref", "Forbidden: $ref is not supported"))
    props = schema.get("properties")
    if props is not None:
        if not isinstance(props, dict):
            errs.append((f"{path}.properties", "Invalid value: must be a map of schemas"))
        else:
            if t and t != "object":
                errs.append((f"{path}.properties", f'Forbidden: only allowed for type "object", not "{t}"'))
            for name, sub in props.items():
                if isinstance(sub, dict):
                    if root and name == "metadata":
                        _metadata(sub, f"{path}.properties[metadata]", errs)
                        continue
                    _structural(sub, f"{path}.properties[{name}]", errs)
                else:
                    errs.append((f"{path}.properties[{name}]", "Invalid value: must be a schema"))
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        if props:
            errs.append((f"{path}.additionalProperties", "Forbidden: additionalProperties and properties are mutual exclusive"))
        _structural(extra, f"{path}.additionalProperties", errs)
    items = schema.get("items")
    if isinstance(items, dict):
        _structural(items, f"{path}.items", errs)
    elif t == "array" and not schema.get(PRESERVE):
        errs.append((f"{path}.items", "Required value: must be specified"))
    if "default" in schema and not root:
        problems = validate(schema, schema["default"], "default")
        for _, message in problems[:1]:
            errs.append((f"{path}.default", message))
    for word in ("allOf", "anyOf", "oneOf"):
        subs = schema.get(word)
        if subs is not None and not isinstance(subs, list):
            errs.append((f"{path}.{word}", "Invalid value: must be a list of schemas"))


def _metadata(schema: dict[str, Any], path: str, errs: Errors) -> None:
    """At the root, metadata may only restrict name and generateName."""
    if schema.get("type") not in (None, "object"):
        errs.append((f"{path}.type", 'Unsupported value: must be "object"'))
    extra = set(schema) - {"type", "properties", "description"}
    if extra:
        errs.append((path, f"Forbidden: must not specify anything other than name and generateName, "
                           f"but metadata is implicitly specified ({', '.join(sorted(extra))})"))
    for name in (schema.get("properties") or {}):
        if name not in ("name", "generateName"):
            errs.append((f"{path}.properties[{name}]", "Forbidden: must not specify anything other than name and generateName"))


def top_level_fields(schema: Schema) -> list[str]:
    """The fields an object of this schema may hold beside apiVersion, kind and metadata."""
    props = schema.get("properties") or {}
    return sorted(set(props) - {"apiVersion", "kind", "metadata"})
