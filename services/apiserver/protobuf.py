"""Request bodies in Kubernetes' protobuf encoding (``application/vnd.kubernetes.protobuf``),
as ``kubectl create configmap|secret|namespace|serviceaccount``, ``kubectl auth can-i`` and ``kubectl drain`` send them, decoded to their JSON form. Pure.

The envelope is the magic ``k8s\\x00`` then a ``runtime.Unknown`` (typeMeta, raw); ``raw`` is
the object's message. Only the kinds in :data:`KINDS` are known (their field numbers are
those of k8s.io/api's generated.proto); any other is refused, and the client is told to
send JSON.
"""

from __future__ import annotations

import base64
import datetime as _dt
from typing import Any

MAGIC = b"k8s\x00"

Schema = dict[int, tuple[str, Any]]

TIME: Schema = {1: ("seconds", "int"), 2: ("nanos", "int")}
OWNER_REFERENCE: Schema = {1: ("kind", "string"), 3: ("name", "string"), 4: ("uid", "string"),
                           5: ("apiVersion", "string"), 6: ("controller", "bool"), 7: ("blockOwnerDeletion", "bool")}
OBJECT_META: Schema = {
    1: ("name", "string"), 2: ("generateName", "string"), 3: ("namespace", "string"), 5: ("uid", "string"),
    6: ("resourceVersion", "string"), 7: ("generation", "int"), 8: ("creationTimestamp", "time"),
    11: ("labels", "map"), 12: ("annotations", "map"), 13: ("ownerReferences", [OWNER_REFERENCE]),
    14: ("finalizers", ["string"]),
}
DELETE_OPTIONS: Schema = {1: ("gracePeriodSeconds", "int"),
                          2: ("preconditions", {1: ("uid", "string"), 2: ("resourceVersion", "string")}),
                          3: ("orphanDependents", "bool"), 4: ("propagationPolicy", "string"), 5: ("dryRun", ["string"])}
OBJECT_REFERENCE: Schema = {1: ("kind", "string"), 2: ("namespace", "string"), 3: ("name", "string"),
                            4: ("uid", "string"), 5: ("apiVersion", "string"), 6: ("resourceVersion", "string"),
                            7: ("fieldPath", "string")}
KINDS: dict[str, Schema] = {
    "ConfigMap": {1: ("metadata", OBJECT_META), 2: ("data", "map"), 3: ("binaryData", "map-bytes"),
                  4: ("immutable", "bool")},
    "Secret": {1: ("metadata", OBJECT_META), 2: ("data", "map-bytes"), 3: ("type", "string"),
               4: ("stringData", "map"), 5: ("immutable", "bool")},
    "Namespace": {1: ("metadata", OBJECT_META), 2: ("spec", {1: ("finalizers", ["string"])})},
    "ServiceAccount": {1: ("metadata", OBJECT_META), 2: ("secrets", [OBJECT_REFERENCE]),
                       3: ("imagePullSecrets", [{1: ("name", "string")}]), 4: ("automountServiceAccountToken", "bool")},
    # kubectl drain, and schedulers written with client-go
    "Eviction": {1: ("metadata", OBJECT_META), 2: ("deleteOptions", DELETE_OPTIONS)},
    "Binding": {1: ("metadata", OBJECT_META), 2: ("target", OBJECT_REFERENCE)},
    # kubectl auth can-i
    "SelfSubjectAccessReview": {1: ("metadata", OBJECT_META), 2: ("spec", {
        1: ("resourceAttributes", {1: ("namespace", "string"), 2: ("verb", "string"), 3: ("group", "string"),
                                   4: ("version", "string"), 5: ("resource", "string"),
                                   6: ("subresource", "string"), 7: ("name", "string")}),
        2: ("nonResourceAttributes", {1: ("path", "string"), 2: ("verb", "string")})})},
    "SelfSubjectRulesReview": {1: ("metadata", OBJECT_META), 2: ("spec", {1: ("namespace", "string")})},
}


class Unsupported(ValueError):
    """A body this decoder cannot read (another kind, or not protobuf at all)."""


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(data):
            raise Unsupported("truncated varint")
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 70:
            raise Unsupported("varint too long")


def fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) of each field of one message."""
    out = []
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 2:
            size, i = _varint(data, i)
            if i + size > len(data):
                raise Unsupported("truncated field")
            value, i = data[i:i + size], i + size
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise Unsupported(f"wire type {wire}")
        out.append((number, wire, value))
    return out


def _entry(raw: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for number, _, v in fields(raw):
        if number == 1:
            key = v.decode()
        elif number == 2:
            value = v
    return key, value


def _time(raw: bytes) -> str:
    seconds = message(raw, TIME).get("seconds", 0)
    return _dt.datetime.fromtimestamp(seconds, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def message(raw: bytes, schema: Schema) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, _, value in fields(raw):
        if number not in schema:
            continue
        name, kind = schema[number]
        if kind == "string":
            if value:  # Go writes unset strings as empty ones
                out[name] = value.decode()
        elif kind == "int":
            out[name] = value
        elif kind == "bool":
            out[name] = bool(value)
        elif kind == "time":
            if message(value, TIME).get("seconds"):
                out[name] = _time(value)
        elif kind == "map":
            k, v = _entry(value)
            out.setdefault(name, {})[k] = v.decode()
        elif kind == "map-bytes":
            k, v = _entry(value)
            out.setdefault(name, {})[k] = base64.b64encode(v).decode()
        elif isinstance(kind, list):
            item = kind[0]
            out.setdefault(name, []).append(value.decode() if item == "string" else message(value, item))
        elif isinstance(kind, dict):
            out[name] = message(value, kind)
    return out


def decode(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf-encoded object of one of :data:`KINDS`."""
    if not body.startswith(MAGIC):
        raise Unsupported("not a Kubernetes protobuf body")
    envelope = {n: v for n, _, v in fields(body[len(MAGIC):])}
    type_meta = message(envelope.get(1, b""), {1: ("apiVersion", "string"), 2: ("kind", "string")})
    kind = type_meta.get("kind", "")
    schema = KINDS.get(kind)
    if schema is None:
        raise Unsupported(f"protobuf bodies of kind {kind or '(none)'} are not served")
    return {"apiVersion": type_meta.get("apiVersion", "v1"), "kind": kind, **message(envelope.get(2, b""), schema)}
