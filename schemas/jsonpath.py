"""The JSONPath of kubectl's templates and of a CRD's ``additionalPrinterColumns``
(``.spec.replicas``, ``.status.conditions[?(@.type=="Ready")].status``,
``.spec.hostnames[*]``, ``.items[0]``), evaluated over decoded JSON. Pure: no I/O.

What is supported: fields (``.a``, ``['a.b']``), indexes and slices (``[0]``, ``[-1]``,
``[1:3]``), wildcards (``[*]``, ``.*``), recursive descent (``..name``) and filters comparing
a field with a literal (``[?(@.type=="Ready")]``, ``!=``, ``<``, ``>``, ``<=``, ``>=``) or
testing that it exists (``[?(@.ready)]``). An optional ``{...}`` around the path is allowed.
"""

from __future__ import annotations

import json
import re
from typing import Any

_TOKEN = re.compile(
    r"""\.\.(?P<desc>[A-Za-z0-9_\-]+|\*)"""
    r"""|\.(?P<field>[A-Za-z0-9_\-$]+|\*)"""
    r"""|\[\?\((?P<filter>[^\]]*)\)\]"""
    r"""|\[(?P<bracket>[^\]]*)\]"""
)
_FILTER = re.compile(r"""^\s*@(?P<path>(\.[A-Za-z0-9_\-]+)+)\s*(?:(?P<op>==|!=|<=|>=|<|>)\s*(?P<lit>.+?))?\s*$""")


class JsonPathError(ValueError):
    """A path this evaluator cannot read."""


def parse(path: str) -> list[tuple[str, Any]]:
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if text.startswith("$"):
        text = text[1:]
    if text and not text.startswith((".", "[")):
        text = "." + text
    steps: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise JsonPathError(f"unrecognized character in {path!r} at {pos}: {text[pos:pos + 10]!r}")
        pos = m.end()
        if m["desc"] is not None:
            steps.append(("desc", m["desc"]))
        elif m["field"] is not None:
            steps.append(("all", None) if m["field"] == "*" else ("field", m["field"]))
        elif m["filter"] is not None:
            f = _FILTER.match(m["filter"])
            if f is None:
                raise JsonPathError(f"unsupported filter in {path!r}: {m['filter']!r}")
            literal = f["lit"]
            value: Any = None
            if literal is not None:
                literal = literal.strip()
                if literal[:1] in "'\"" and literal[-1:] == literal[:1]:
                    value = literal[1:-1]
                else:
                    try:
                        value = json.loads(literal)
                    except ValueError:
                        raise JsonPathError(f"unsupported literal in {path!r}: {literal!r}") from None
            steps.append(("filter", (f["path"][1:].split("."), f["op"], value)))
        else:
            inner = m["bracket"].strip()
            if inner == "*":
                steps.append(("all", None))
            elif inner[:1] in "'\"":
                steps.append(("field", inner[1:-1]))
            elif ":" in inner:
                a, _, b = inner.partition(":")
                steps.append(("slice", (int(a) if a.strip() else None, int(b) if b.strip() else None)))
            else:
                try:
                    steps.append(("index", int(inner)))
                except ValueError:
                    raise JsonPathError(f"unsupported index in {path!r}: [{inner}]") from None
    return steps


def _get(value: Any, names: list[str]) -> tuple[bool, Any]:
    for name in names:
        if not isinstance(value, dict) or name not in value:
            return False, None
        value = value[name]
    return True, value


def _compare(have: Any, op: str, want: Any) -> bool:
    if op == "==":
        return bool(have == want)
    if op == "!=":
        return bool(have != want)
    try:
        if op == "<":
            return bool(have < want)
        if op == ">":
            return bool(have > want)
        if op == "<=":
            return bool(have <= want)
        return bool(have >= want)
    except TypeError:
        return False


def _descend(value: Any, name: str) -> list[Any]:
    out: list[Any] = []
    if isinstance(value, dict):
        if name == "*":
            out.extend(value.values())
        elif name in value:
            out.append(value[name])
        for v in value.values():
            out.extend(_descend(v, name))
    elif isinstance(value, list):
        for v in value:
            out.extend(_descend(v, name))
    return out


def find(path: str, data: Any) -> list[Any]:
    """Every value ``path`` selects in ``data`` (none when it leads nowhere)."""
    current = [data]
    for kind, arg in parse(path):
        nxt: list[Any] = []
        for value in current:
            if kind == "field":
                if isinstance(value, dict) and arg in value:
                    nxt.append(value[arg])
            elif kind == "index":
                if isinstance(value, list) and -len(value) <= arg < len(value):
                    nxt.append(value[arg])
            elif kind == "slice":
                if isinstance(value, list):
                    nxt.extend(value[arg[0]:arg[1]])
            elif kind == "all":
                if isinstance(value, list):
                    nxt.extend(value)
                elif isinstance(value, dict):
                    nxt.extend(value.values())
            elif kind == "desc":
                nxt.extend(_descend(value, arg))
            elif kind == "filter":
                names, op, want = arg
                items = value if isinstance(value, list) else [value]
                for item in items:
                    found, have = _get(item, names)
                    if found and (op is None or _compare(have, op, want)):
                        nxt.append(item)
        current = nxt
    return current
