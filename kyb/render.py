"""The object as users see it: every set field, defaults included, nothing unset.

Structs omit fields equal to their defaults when encoded (compact storage; decoding restores
them). Users, like kubectl's, expect to read the defaults they got (``strategy.type:
RollingUpdate``), and never the unset ones (``generateName: null``). ``to_dict`` walks the
object once: values that are None or empty collections are left out, everything else kept.
"""

from __future__ import annotations

from typing import Any

import msgspec

_FIELDS: dict[type, tuple[tuple[str, str], ...]] = {}


def _fields(cls: type) -> tuple[tuple[str, str], ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = tuple((f.name, f.encode_name) for f in msgspec.structs.fields(cls))
        _FIELDS[cls] = names
    return names


_SCALARS = (str, int, float, bool)


def to_dict(value: Any) -> Any:
    if isinstance(value, msgspec.Struct):
        out: dict[str, Any] = {}
        for name, wire in _fields(type(value)):
            v = getattr(value, name)
            if v is None:
                continue
            if v.__class__ in _SCALARS:  # most fields: no call needed
                out[wire] = v
            elif not (isinstance(v, (list, dict)) and not v):
                out[wire] = to_dict(v)
        return out
    if isinstance(value, list):
        return [v if v.__class__ in _SCALARS else to_dict(v) for v in value]
    if isinstance(value, dict):
        return {k: v if v.__class__ in _SCALARS else to_dict(v) for k, v in value.items()}
    return value


_encoder = msgspec.json.Encoder()


def to_json(value: Any) -> bytes:
    return _encoder.encode(to_dict(value))
