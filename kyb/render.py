"""The object as users see it: every set field, defaults included, nothing unset.

Structs omit fields equal to their defaults when encoded (compact storage; decoding restores
them). Users, like kubectl's, expect to read the defaults they got (``strategy.type:
RollingUpdate``), and never the unset ones (``generateName: null``). ``to_dict`` walks the
object once: values that are None or empty collections are left out, everything else kept.
"""

from __future__ import annotations

import typing
from typing import Any

import msgspec

_FIELDS: dict[type, tuple[tuple[str, str, bool], ...]] = {}


def _opaque(t: Any) -> bool:
    """A field of free-form JSON (``dict[str, Any]``: managedFields' fieldsV1, a revision's
    data): no Struct can be in it, and it may be deep."""
    return t is Any or (typing.get_origin(t) in (dict, list) and Any in typing.get_args(t))


def _fields(cls: type) -> tuple[tuple[str, str, bool], ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = tuple((f.name, f.encode_name, _opaque(f.type)) for f in msgspec.structs.fields(cls))
        _FIELDS[cls] = names
    return names


_SCALARS = (str, int, float, bool)


def to_dict(value: Any) -> Any:
    if isinstance(value, msgspec.Struct):
        out: dict[str, Any] = {}
        for name, wire, opaque in _fields(type(value)):
            v = getattr(value, name)
            if v is None or v is msgspec.UNSET:
                continue
            if v.__class__ in _SCALARS:  # most fields: no call needed
                out[wire] = v
            elif not (isinstance(v, (list, dict)) and not v):
                # free-form JSON: the same tree, copied in C rather than walked
                out[wire] = _decoder.decode(_encoder.encode(v)) if opaque else to_dict(v)
        return out
    if isinstance(value, list):
        return [v if v.__class__ in _SCALARS else to_dict(v) for v in value]
    if isinstance(value, dict):
        return {k: v if v.__class__ in _SCALARS else to_dict(v) for k, v in value.items()}
    return value


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def to_json(value: Any) -> bytes:
    return _encoder.encode(to_dict(value))
