"""Field ownership, as Kubernetes' server-side apply keeps it in ``metadata.managedFields``:
one entry per field manager and operation (``Apply`` or ``Update``) with the fields it set,
in the FieldsV1 form (``f:<field>``, ``k:{"<key>":<value>}`` for an element of a list merged
on a key, ``v:<value>`` for a member of a set, ``.`` for the element itself). Pure.

- **apply**: the applied configuration's fields become the applier's. Another manager owning
  one of them with a different value is a conflict (409, one cause per field, naming the
  manager) unless forced, which takes the field from it. Same values are owned together. A
  field the applier set before and no longer does is removed, unless someone else owns it.
  The object is the live one with the configuration merged in (lists on their merge keys).
- **update** (create, update, patch): the fields whose values changed become the writer's,
  and leave every other manager.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from services.apiserver import patch

Path = tuple[str, ...]
MISSING = object()
# Fields nobody owns: who the object is, what the system keeps, and the status subresource.
_SYSTEM_META = frozenset({"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
                          "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink",
                          "generateName"})


@dataclass(frozen=True)
class Conflict:
    path: Path
    manager: str
    api_version: str

    @property
    def field(self) -> str:
        return field_text(self.path)


class Conflicts(Exception):
    """The applied configuration sets fields other managers own with other values."""

    def __init__(self, conflicts: list[Conflict]) -> None:
        self.conflicts = conflicts
        super().__init__(message(conflicts))


def message(conflicts: list[Conflict]) -> str:
    n = len(conflicts)
    head = f"Apply failed with {n} conflict{'s' if n != 1 else ''}: "
    if n == 1:
        c = conflicts[0]
        return head + f'conflict with "{c.manager}" using {c.api_version}: {c.field}'
    return head + "; ".join(f'conflict with "{c.manager}" using {c.api_version}: {c.field}' for c in conflicts)


def field_text(path: Path) -> str:
    """``('f:spec', 'f:containers', 'k:{"name":"web"}', 'f:image')`` -> ``.spec.containers[name="web"].image``"""
    out = ""
    for el in path:
        kind, _, rest = el.partition(":")
        if kind == "f":
            out += f".{rest}"
        elif kind == "k":
            keys = json.loads(rest)
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in keys.items()) + "]"
        elif kind == "v":
            out += f"[={rest}]"
    return out


# -- the fields of an object ---------------------------------------------------------------------


def _trimmed(obj: dict[str, Any]) -> dict[str, Any]:
    """What field ownership covers: no apiVersion, kind, status or system metadata."""
    out = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status")}
    meta = out.get("metadata")
    if isinstance(meta, dict):
        kept = {k: v for k, v in meta.items() if k not in _SYSTEM_META}
        if kept:
            out["metadata"] = kept
        else:
            out.pop("metadata")
    return out


def _key_token(key: str, item: dict[str, Any]) -> str:
    return "k:" + json.dumps({key: item[key]}, separators=(",", ":"), sort_keys=True)


def paths_of(obj: dict[str, Any]) -> set[Path]:
    """Every field the object sets, as paths (leaves, and the elements of keyed lists)."""
    out: set[Path] = set()
    _walk(_trimmed(obj), (), None, out)
    return out


def _walk(value: Any, prefix: Path, name: str | None, out: set[Path]) -> None:
    if isinstance(value, dict):
        if not value and prefix:
            out.add(prefix)
        for k, v in value.items():
            _walk(v, (*prefix, f"f:{k}"), k, out)
    elif isinstance(value, list):
        key = patch.merge_key(name, value)
        if key is not None and value and all(isinstance(e, dict) and key in e for e in value):
            for item in value:
                item_path = (*prefix, _key_token(key, item))
                out.add(item_path)
                _walk(item, item_path, None, out)
        elif name in patch.SET_LISTS and value and all(not isinstance(e, dict | list) for e in value):
            for e in value:
                out.add((*prefix, "v:" + json.dumps(e)))
        else:
            out.add(prefix)  # an atomic list
    elif prefix:
        out.add(prefix)


def fields_of(obj: dict[str, Any]) -> dict[str, Any]:
    """``to_fields(paths_of(obj))`` in one walk, without the paths: what a create owns."""
    return _fields(_trimmed(obj), None)


def _fields(value: Any, name: str | None) -> dict[str, Any]:
    if isinstance(value, dict):
        return {f"f:{k}": _fields(v, k) for k, v in value.items()}
    if not isinstance(value, list) or not value:
        return {}
    key = patch.merge_key(name, value)
    if key is not None and all(isinstance(e, dict) and key in e for e in value):
        out: dict[str, Any] = {}
        for item in value:
            token = _key_token(key, item)
            out[token] = _merged(out.get(token), {".": {}, **_fields(item, None)})
        return out
    if name in patch.SET_LISTS and all(not isinstance(e, dict | list) for e in value):
        return {"v:" + json.dumps(e): {} for e in value}
    return {}  # an atomic list


def _merged(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    """Two FieldsV1 trees as one (elements of a keyed list that share their key)."""
    if not a:
        return b
    return {**a, **{k: _merged(a.get(k), v) for k, v in b.items()}}


def value_at(obj: Any, path: Path) -> Any:
    cur = obj
    for el in path:
        kind, _, rest = el.partition(":")
        if kind == "f":
            if not isinstance(cur, dict) or rest not in cur:
                return MISSING
            cur = cur[rest]
        elif kind == "k":
            want = json.loads(rest)
            if not isinstance(cur, list):
                return MISSING
            cur = next((e for e in cur if isinstance(e, dict) and all(e.get(k) == v for k, v in want.items())),
                       MISSING)
            if cur is MISSING:
                return MISSING
        elif kind == "v":
            member = json.loads(rest)
            if not isinstance(cur, list) or member not in cur:
                return MISSING
            cur = member
        else:
            return MISSING
    return cur


def remove(obj: dict[str, Any], path: Path) -> None:
    """Remove the field at ``path`` (and maps left empty by it) from ``obj`` in place."""
    if not path:
        return
    parent = value_at(obj, path[:-1])
    kind, _, rest = path[-1].partition(":")
    if kind == "f" and isinstance(parent, dict):
        parent.pop(rest, None)
    elif kind == "k" and isinstance(parent, list):
        want = json.loads(rest)
        parent[:] = [e for e in parent if not (isinstance(e, dict) and all(e.get(k) == v for k, v in want.items()))]
    elif kind == "v" and isinstance(parent, list):
        member = json.loads(rest)
        parent[:] = [e for e in parent if e != member]
    else:
        return
    if len(path) > 1 and parent in ({}, []) and path[-2].startswith("f:"):
        remove(obj, path[:-1])


# -- FieldsV1 --------------------------------------------------------------------------------------


def to_fields(paths: Iterable[Path]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    paths = set(paths)
    for path in sorted(paths):
        node = root
        for el in path:
            node = node.setdefault(el, {})
    for path in paths:  # an owned element that has owned fields too: "."
        node = root
        for el in path:
            node = node[el]
        if node and "." not in node:
            node["."] = {}
    return root


def from_fields(fields: Any, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    if not isinstance(fields, dict):
        return out
    if not fields and prefix:
        out.add(prefix)
    for k, v in fields.items():
        if k == ".":
            out.add(prefix)
        else:
            out |= from_fields(v, (*prefix, k))
    return out


# -- managedFields -------------------------------------------------------------------------------


def _entries(obj: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not obj:
        return []
    entries = (obj.get("metadata") or {}).get("managedFields") or []
    return [e for e in entries if isinstance(e, dict)]


def _entry(manager: str, operation: str, api_version: str, paths: set[Path], now: str,
           previous: dict[str, Any] | None) -> dict[str, Any]:
    fields = to_fields(paths)
    if previous is not None and previous.get("fieldsV1") == fields and previous.get("apiVersion") == api_version:
        return previous  # nothing changed hands: the time stays, and so does the object
    return {"manager": manager, "operation": operation, "apiVersion": api_version, "time": now,
            "fieldsType": "FieldsV1", "fieldsV1": fields}


def _same(a: dict[str, Any], manager: str, operation: str) -> bool:
    return a.get("manager") == manager and a.get("operation") == operation and not a.get("subresource")


def _with_entries(obj: dict[str, Any], entries: list[dict[str, Any]]) -> dict[str, Any]:
    meta = obj.setdefault("metadata", {})
    meta["managedFields"] = [e for e in entries if e.get("fieldsV1")]
    return obj


def apply(live: dict[str, Any] | None, config: dict[str, Any], manager: str, *, force: bool, now: str,
          ) -> dict[str, Any]:
    """The object after ``manager`` applies ``config`` to ``live`` (None: a new object), with
    its managedFields; :class:`Conflicts` when others own fields ``config`` changes."""
    api_version = str(config.get("apiVersion") or (live or {}).get("apiVersion") or "")
    applied = paths_of(config)
    entries = [copy.deepcopy(e) for e in _entries(live)]
    mine = next((e for e in entries if _same(e, manager, "Apply")), None)
    others = [e for e in entries if e is not mine]
    conflicts: list[Conflict] = []
    for e in others:
        owned = from_fields(e.get("fieldsV1"))
        clash = []
        for p in sorted(applied & owned):
            ours = value_at(config, p)
            if isinstance(ours, dict) or value_at(live, p) == ours:
                continue  # an element of a keyed list, or the same value: owned together
            clash.append(p)
        if clash and not force:
            conflicts += [Conflict(p, str(e.get("manager") or ""), str(e.get("apiVersion") or "")) for p in clash]
        elif clash:
            e["fieldsV1"] = to_fields(owned - set(clash))
    if conflicts:
        raise Conflicts(conflicts)
    base = copy.deepcopy(live) if live is not None else {}
    body = _trimmed(config)
    merged = patch.apply(patch.STRATEGIC, base, body) if base else copy.deepcopy(config)
    merged["apiVersion"] = config.get("apiVersion") or merged.get("apiVersion")
    merged["kind"] = config.get("kind") or merged.get("kind")
    meta = merged.setdefault("metadata", {})
    for k in ("name", "namespace"):
        if (config.get("metadata") or {}).get(k):
            meta[k] = config["metadata"][k]
    owned_by_others: set[Path] = set()
    for e in others:
        owned_by_others |= from_fields(e.get("fieldsV1"))
    previously = from_fields(mine.get("fieldsV1")) if mine else set()
    for p in sorted(previously - applied - owned_by_others, key=len, reverse=True):
        if not any(q[:len(p)] == p for q in applied):
            remove(merged, p)
    mine_now = _entry(manager, "Apply", api_version, applied, now, mine)
    at = entries.index(mine) if mine is not None else len(entries)
    out = [*others[:at], mine_now, *others[at:]]
    return _with_entries(merged, out)


def changed(old: dict[str, Any] | None, new: dict[str, Any], present: set[Path] | None = None) -> set[Path]:
    """The fields of ``new`` whose values differ from ``old`` (all of them for a new object);
    ``present``: ``paths_of(new)`` when the caller has it."""
    now = paths_of(new) if present is None else present
    if old is None:
        return set(now)
    return {p for p in now if value_at(new, p) != value_at(old, p) and not isinstance(value_at(new, p), dict)}


def update(old: dict[str, Any] | None, new: dict[str, Any], manager: str, *, now: str) -> dict[str, Any]:
    """``new`` (written by ``manager`` over ``old``) with its managedFields: the changed
    fields are the writer's and no one else's; fields that are gone are no one's. Neither
    argument is changed: the result shares everything but its metadata with ``new``."""
    meta = new.get("metadata")
    new = {**new, "metadata": dict(meta) if isinstance(meta, dict) else meta or {}}
    api_version = str(new.get("apiVersion") or "")
    if old is None:  # a create: every field is the writer's
        fields = fields_of(new)
        entry = {"manager": manager, "operation": "Update", "apiVersion": api_version, "time": now,
                 "fieldsType": "FieldsV1", "fieldsV1": fields}
        return _with_entries(new, [entry] if fields else [])
    present = paths_of(new)
    taken = changed(old, new, present)
    entries = [copy.deepcopy(e) for e in _entries(old)]
    mine = next((e for e in entries if _same(e, manager, "Update")), None)
    out = []
    for e in entries:
        owned = from_fields(e.get("fieldsV1"))
        if e is mine:
            e = _entry(manager, "Update", api_version, (owned | taken) & present, now, e)
        else:
            kept = (owned - taken) & present
            if kept != owned:
                e["fieldsV1"] = to_fields(kept)
        out.append(e)
    if mine is None and taken:
        out.append(_entry(manager, "Update", api_version, taken, now, None))
    return _with_entries(new, out)


def manager_of(query_value: str | None, user_agent: str) -> str:
    """The field manager a write names, or, as Kubernetes defaults it, its user agent's
    program name (``kubectl/v1.32.0 (linux/amd64)`` -> ``kubectl``)."""
    if query_value:
        return query_value
    return (user_agent.split("/", 1)[0] or "unknown")[:128]
