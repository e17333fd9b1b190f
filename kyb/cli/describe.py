"""What `kyb describe` prints: an object as indented ``Key:  value`` lines, as kubectl lays it
out (Name, Namespace, Labels, Annotations first), followed by the object's recent Events.

Pure: takes the object, its events and ``now``; returns text.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

from kyb.cli.describe_netpol import describe_network_policy
from kyb.cli.printers import age, parse_time

_FIRST = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
          "labels", "annotations", "ownerReferences", "finalizers")


def title(key: str) -> str:
    """``nodeName`` -> ``Node Name``, ``podIP`` -> ``Pod IP`` (kubectl's describe headings)."""
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+|[A-Z]+", key)
    return " ".join(w[:1].upper() + w[1:] for w in words) or key


def _scalar(v: Any) -> str:
    if v is None:
        return "<none>"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


# Fields holding user maps: their keys are data, shown as written.
_MAPS = frozenset({"labels", "matchLabels", "annotations", "data", "binaryData", "stringData", "nodeSelector",
                   "capacity", "allocatable", "requests", "limits", "selector", "hard", "used", "parameters"})


def _lines(value: Any, indent: int, verbatim: bool = False) -> list[str]:
    pad = "  " * indent
    out: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            label = k if verbatim else title(k)
            if v == "" or v is None:
                continue  # unset, as kubectl leaves it out
            if isinstance(v, dict | list) and v:
                out.append(f"{pad}{label}:")
                out.extend(_lines(v, indent + 1, verbatim=k in _MAPS and isinstance(v, dict)))
            else:
                out.append(f"{pad}{label}:  {_scalar(v) if v not in ({}, []) else '<none>'}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                sub = _lines(item, indent + 1)
                if sub:
                    out.append(f"{pad}- {sub[0].lstrip()}")
                    out.extend(sub[1:])
            else:
                out.append(f"{pad}- {_scalar(item)}")
    else:
        out.append(f"{pad}{_scalar(value)}")
    return out


def _pairs(mapping: dict[str, str] | None, label: str) -> list[str]:
    if not mapping:
        return [f"{label}<none>"]
    items = [f"{k}={v}" for k, v in mapping.items()]
    pad = " " * len(label)
    return [f"{label}{items[0]}"] + [f"{pad}{i}" for i in items[1:]]


def describe(obj: dict[str, Any], events: list[dict[str, Any]], now: _dt.datetime) -> str:
    if obj.get("kind") == "NetworkPolicy":
        return describe_network_policy(obj)  # kubectl's own layout, without events
    meta = obj.get("metadata") or {}
    lines = [f"Name:               {meta.get('name', '')}"]
    if meta.get("namespace"):
        lines.append(f"Namespace:          {meta['namespace']}")
    lines += _pairs(meta.get("labels"), "Labels:             ")
    lines += _pairs(meta.get("annotations"), "Annotations:        ")
    if meta.get("creationTimestamp"):
        lines.append(f"CreationTimestamp:  {meta['creationTimestamp']}")
    if meta.get("deletionTimestamp"):
        lines.append(f"DeletionTimestamp:  {meta['deletionTimestamp']}")
    for ref in meta.get("ownerReferences") or []:
        lines.append(f"Controlled By:      {ref.get('kind')}/{ref.get('name')}")
    if meta.get("finalizers"):
        lines.append(f"Finalizers:         {', '.join(meta['finalizers'])}")
    rest_meta = {k: v for k, v in meta.items() if k not in _FIRST}
    if rest_meta:
        lines += _lines(rest_meta, 0)
    for key, value in obj.items():
        if key in ("apiVersion", "kind", "metadata"):
            continue
        if isinstance(value, dict | list) and value:
            lines.append(f"{title(key)}:")
            lines += _lines(value, 1)
        else:
            lines.append(f"{title(key)}:  {_scalar(value)}")
    lines.append(events_section(events, now))
    return "\n".join(lines) + "\n"


def events_section(events: list[dict[str, Any]], now: _dt.datetime) -> str:
    if not events:
        return "Events:  <none>"
    rows = [["Type", "Reason", "Age", "From", "Message"], ["----", "------", "----", "----", "-------"]]
    epoch = _dt.datetime.min.replace(tzinfo=_dt.UTC)
    ordered = sorted(events, key=lambda e: parse_time(e.get("lastTimestamp") or e.get("eventTime")) or epoch)
    for ev in ordered:
        stamp = ev.get("lastTimestamp") or ev.get("eventTime") or (ev.get("metadata") or {}).get("creationTimestamp")
        when = age(stamp, now)
        count = int(ev.get("count") or 1)
        if count > 1:
            first = ev.get("firstTimestamp")
            when = f"{when} (x{count} over {age(first, now)})" if first else f"{when} (x{count})"
        source = (ev.get("source") or {}).get("component") or ev.get("reportingController") or ""
        rows.append([ev.get("type") or "Normal", ev.get("reason") or "", when, source,
                     ev.get("message") or ev.get("note") or ""])
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    text = ["Events:"]
    for r in rows:
        text.append("  " + "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    return "\n".join(line.rstrip() for line in text)
