"""Server-side printing: objects as a meta.k8s.io/v1 Table with the columns `kyb get` prints
(kyb/cli/printers.py), so `kubectl get` shows what it shows against Kubernetes. The columns
`-o wide` adds have priority 1. Pure: the clock is an argument.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from kyb.cli import printers

TABLE_MEDIA = "application/json;as=Table;v=v1;g=meta.k8s.io"


def wants_table(accept: str) -> bool:
    for part in accept.split(","):
        params = {p.split("=", 1)[0].strip(): p.split("=", 1)[1].strip() for p in part.split(";")[1:] if "=" in p}
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1"):
            return True
        if part.strip().split(";")[0] in ("application/json", "*/*"):
            return False
    return False


def _column(name: str, priority: int) -> dict[str, Any]:
    fmt = "name" if name == "NAME" else ""
    return {"name": name.title() if name != "NAME" else "Name", "type": "string", "format": fmt, "description": "",
            "priority": priority}


def _partial(obj: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata") or {}}


def table(kind: str, objects: list[dict[str, Any]], now: _dt.datetime, *, resource_version: str | None = None,
          include_object: str = "Metadata", headers: bool = True) -> dict[str, Any]:
    narrow, _ = printers.columns_for(kind, wide=False)
    wide, _ = printers.columns_for(kind, wide=True)
    named = kind != "Event"
    columns = ([_column("NAME", 0)] if named else []) + [_column(h, 0) for h in narrow]
    columns += [_column(h, 1) for h in wide[len(narrow):]]
    rows = []
    for obj in objects:
        _, cells = printers.table(kind, [obj], now, wide=True)
        row: dict[str, Any] = {"cells": cells[0]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = _partial(obj)
        rows.append(row)
    out: dict[str, Any] = {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                           "metadata": {"resourceVersion": resource_version} if resource_version else {},
                           "columnDefinitions": columns if headers else [], "rows": rows}
    return out
