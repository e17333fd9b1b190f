"""The fields a manifest sets that its kind does not have, and the ones it sets twice: what
Kubernetes' field validation (``fieldValidation=Strict|Warn|Ignore``) reports, refuses or
drops. Paths are written as Kubernetes writes them: ``spec.template.spec.containers[0].foo``.

``unknown_fields`` walks the manifest beside the kind's msgspec Struct, ``pruned`` returns it
without them; ``duplicate_fields`` reads a JSON text for keys an object repeats (msgspec, like
Go's decoder, keeps the last one silently; YAML with a repeated key is refused by
``schemas.limits`` already). Pure.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import msgspec
import msgspec.inspect as mi


@functools.cache
def _info(cls: type) -> mi.Type:
    return mi.type_info(cls)


def unknown_fields(cls: type[msgspec.Struct], doc: Any) -> list[str]:
    """The paths of the fields ``doc`` sets that ``cls`` (a kind's Struct) has no place for."""
    found: list[str] = []
    _walk(_node(_info(cls)), doc, "", found)
    return found


def pruned(cls: type[msgspec.Struct], doc: Any) -> tuple[Any, list[str]]:
    """``doc`` without the fields of :func:`unknown_fields` (a copy of what changes), and them."""
    try:
        # The Structs forbid unknown fields: a document they take whole has none (in C, where
        # the walk is Python; one they refuse for any reason is walked).
        msgspec.convert(doc, cls)
    except (msgspec.ValidationError, TypeError, ValueError):
        pass
    else:
        return doc, []
    found: list[str] = []
    return _walk(_node(_info(cls)), doc, "", found), found


# What the walk needs of a type, worked out once per type: a Struct's fields by wire name, a
# list's items, a map's values (only when Structs can be inside), a union's branches for an
# object and for a list; None for everything that holds no fields (scalars, Any, plain maps).
_Node = tuple[str, Any] | None
_NODES: dict[int, _Node] = {}  # by id: the types live as long as _info's cache
_LISTS = (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)


def _node(t: mi.Type) -> _Node:
    key = id(t)
    if key in _NODES:
        return _NODES[key]
    _NODES[key] = None  # a recursive type refers back to itself: holds nothing more below
    if isinstance(t, mi.Metadata):
        node = _node(t.type)
    elif isinstance(t, mi.StructType):
        node = ("struct", {f.encode_name: f.type for f in t.fields})
    elif isinstance(t, _LISTS):
        node = ("list", t.item_type) if _holds_structs(t.item_type) else None
    elif isinstance(t, mi.DictType):
        node = ("dict", t.value_type) if _holds_structs(t.value_type) else None
    elif isinstance(t, mi.UnionType):
        as_object = next((m for m in t.types if isinstance(_bare(m), mi.StructType | mi.DictType)), None)
        as_list = next((m for m in t.types if isinstance(_bare(m), _LISTS)), None)
        node = ("union", (as_object, as_list)) if as_object is not None or as_list is not None else None
    else:
        node = None
    _NODES[key] = node
    return node


def _bare(t: mi.Type) -> mi.Type:
    return t.type if isinstance(t, mi.Metadata) else t


def _walk(node: _Node, value: Any, path: str, found: list[str]) -> Any:
    """``value`` with every unknown field left out, each one's path added to ``found``."""
    if node is None:
        return value
    what, detail = node
    if what == "union":
        as_object, as_list = detail
        branch = as_object if isinstance(value, dict) else as_list if isinstance(value, list) else None
        return value if branch is None else _walk(_node(branch), value, path, found)
    if what == "struct" and isinstance(value, dict):
        out = {}
        for key, v in value.items():
            field = detail.get(key)
            if field is None:
                found.append(f"{path}.{key}" if path else str(key))
            elif v.__class__ is dict or v.__class__ is list:
                out[key] = _walk(_node(field), v, f"{path}.{key}" if path else key, found)
            else:
                out[key] = v
        return out
    if what == "list" and isinstance(value, list):
        item = _node(detail)
        return [_walk(item, v, f"{path}[{i}]", found) for i, v in enumerate(value)]
    if what == "dict" and isinstance(value, dict):
        item = _node(detail)
        return {k: _walk(item, v, f"{path}.{k}" if path else str(k), found) for k, v in value.items()}
    return value


def _holds_structs(t: mi.Type) -> bool:
    t = _bare(t)
    if isinstance(t, mi.UnionType):
        return any(_holds_structs(m) for m in t.types)
    if isinstance(t, _LISTS):
        return _holds_structs(t.item_type)
    if isinstance(t, mi.DictType):
        return _holds_structs(t.value_type)
    return isinstance(t, mi.StructType)


class _Object(dict[str, Any]):
    """A decoded JSON object that was given some of its keys more than once."""

    repeated: list[str]


_KEY_END = re.compile(rb'"\s*:')  # the end of every key, and of a string value holding '":'


def _keys(value: Any) -> int:
    if isinstance(value, dict):
        return len(value) + sum(_keys(v) for v in value.values())
    if isinstance(value, list):
        return sum(_keys(v) for v in value)
    return 0


def duplicate_fields(raw: bytes) -> list[str]:
    """The paths of the keys a JSON text repeats within one object (empty for other text).
    Call it on text ``schemas.limits`` has already bounded. Text whose every key-end (``"``,
    spaces, ``:``) is a key of the decoded document repeats none (a repeat leaves the document
    fewer keys than the text has; a string holding ``":`` only adds key-ends), so only the
    rest is parsed again, slowly, to say which keys."""
    try:
        if len(_KEY_END.findall(raw)) == _keys(msgspec.json.decode(raw)):
            return []
    except (msgspec.DecodeError, RecursionError):
        return []
    repeats: list[_Object] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(items)
        if len(obj) == len(items):  # the usual case: nothing repeated, a plain dict
            return obj
        marked = _Object(obj)
        seen: set[str] = set()
        repeated: dict[str, None] = {}  # in the order of their first repetition
        for k, _ in items:
            if k in seen:
                repeated[k] = None
            seen.add(k)
        marked.repeated = list(repeated)
        repeats.append(marked)
        return marked

    try:
        doc = json.loads(raw, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return []
    if not repeats:
        return []
    found: list[str] = []
    stack: list[tuple[Any, str]] = [(doc, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            if isinstance(value, _Object):
                found += [f"{path}.{k}" if path else k for k in value.repeated]
            stack += [(v, f"{path}.{k}" if path else k) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return sorted(found)
