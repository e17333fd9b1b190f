"""Label selectors and field selectors, as kubectl's ``-l`` / ``--field-selector`` and the
workload ``spec.selector`` fields express them.

A ``Selector`` is built from a ``LabelSelector`` struct (matchLabels + matchExpressions), from
a plain ``{key: value}`` map (Service, ReplicationController), or parsed from the string form
``app=web,tier!=db,env in (a,b),env notin (c),partition,!legacy``. ``str(selector)`` gives the
string form back, and parsing it again gives an equal selector.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from schemas import names
from schemas.meta import LabelSelector

Operator = Literal["=", "!=", "In", "NotIn", "Exists", "DoesNotExist"]


class SelectorError(ValueError):
    """A selector string (or struct) that is not valid; the message names the bad part."""


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op == "Exists":
            return self.key in labels
        if op == "DoesNotExist":
            return self.key not in labels
        if op in ("=", "In"):
            return self.key in labels and labels[self.key] in self.values
        # "!=" and NotIn also match objects without the label, as in Kubernetes
        return self.key not in labels or labels[self.key] not in self.values

    def __str__(self) -> str:
        op = self.operator
        if op == "Exists":
            return self.key
        if op == "DoesNotExist":
            return f"!{self.key}"
        if op in ("=", "!="):
            return f"{self.key}{op}{self.values[0]}"
        word = "in" if op == "In" else "notin"
        return f"{self.key} {word} ({','.join(self.values)})"


@dataclass(frozen=True, slots=True)
class Selector:
    """Requirements ANDed together. No requirements matches everything, unless ``nothing``
    is set (the selector of a nil LabelSelector, which matches no object)."""

    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False

    @property
    def empty(self) -> bool:
        """True when the selector matches every object."""
        return not self.requirements and not self.nothing

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.nothing:
            return False
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    @classmethod
    def everything(cls) -> Selector:
        return cls()

    @classmethod
    def none(cls) -> Selector:
        return cls(nothing=True)


def _check_key(key: str, part: str) -> None:
    errs = names.qualified_name(key)
    if errs:
        raise SelectorError(f'invalid label key "{key}" in "{part}": {"; ".join(errs)}')


def _check_value(value: str, part: str) -> None:
    errs = names.label_value(value)
    if errs:
        raise SelectorError(f'invalid label value "{value}" in "{part}": {"; ".join(errs)}')


def _requirement(key: str, operator: Operator, values: list[str] | tuple[str, ...], part: str) -> Requirement:
    _check_key(key, part)
    for v in values:
        _check_value(v, part)
    if operator in ("In", "NotIn") and not values:
        raise SelectorError(f'"{part}": for operator {operator} the values must be non-empty')
    if operator in ("Exists", "DoesNotExist") and values:
        raise SelectorError(f'"{part}": for operator {operator} the values must be empty')
    vals = tuple(sorted(set(values))) if operator in ("In", "NotIn") else tuple(values)
    return Requirement(key, operator, vals)


def from_labels(labels: Mapping[str, str]) -> Selector:
    """The selector ``{k: v}`` of a Service or ReplicationController (empty map: everything)."""
    return Selector(tuple(_requirement(k, "=", (v,), f"{k}={v}") for k, v in sorted(labels.items())))


def from_label_selector(sel: LabelSelector | None) -> Selector:
    """A workload selector. A nil selector matches nothing; an empty one matches everything."""
    if sel is None:
        return Selector.none()
    reqs = [_requirement(k, "=", (v,), f"{k}={v}") for k, v in sorted(sel.matchLabels.items())]
    for e in sel.matchExpressions:
        part = f"{e.key} {e.operator} {list(e.values)}"
        reqs.append(_requirement(e.key, e.operator, e.values, part))
    return Selector(tuple(reqs))


def _split_terms(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
            if depth > 1:
                raise SelectorError(f'unexpected "(" in "{text}"')
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f'unexpected ")" in "{text}"')
        elif ch == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    if depth:
        raise SelectorError(f'missing ")" in "{text}"')
    terms.append(text[start:])
    return terms


_SET_TERM = re.compile(r"\s*(?P<key>[^\s!=(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)\s*")
_EQ_TERM = re.compile(r"\s*(?P<key>[^\s!=(),]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s!=(),]*)\s*")
_EXISTS_TERM = re.compile(r"\s*(?P<not>!?)\s*(?P<key>[^\s!=(),]+)\s*")


def parse(text: str) -> Selector:
    """Parse the string form; the empty string selects everything."""
    if not text.strip():
        return Selector()
    reqs = []
    for part in _split_terms(text):
        if not part.strip():
            raise SelectorError(f'empty requirement in "{text}"')
        if m := _SET_TERM.fullmatch(part):
            values = [v.strip() for v in m["values"].split(",")] if m["values"].strip() else []
            if any(not v for v in values):
                raise SelectorError(f'empty value in "{part.strip()}"')
            op: Operator = "In" if m["op"] == "in" else "NotIn"
            reqs.append(_requirement(m["key"], op, values, part.strip()))
        elif m := _EQ_TERM.fullmatch(part):
            op = "!=" if m["op"] == "!=" else "="
            reqs.append(_requirement(m["key"], op, (m["value"],), part.strip()))
        elif m := _EXISTS_TERM.fullmatch(part):
            reqs.append(_requirement(m["key"], "DoesNotExist" if m["not"] else "Exists", (), part.strip()))
        else:
            raise SelectorError(f'unable to parse requirement "{part.strip()}" in "{text}"')
    return Selector(tuple(reqs))


# --- field selectors -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    field: str  # "metadata.name", "spec.nodeName", "status.phase"
    operator: Literal["=", "!="]
    value: str

    def __str__(self) -> str:
        return f"{self.field}{self.operator}{self.value}"


@dataclass(frozen=True, slots=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, obj: object) -> bool:
        for r in self.requirements:
            equal = field_value(obj, r.field) == r.value
            if equal != (r.operator == "="):
                return False
        return True

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def field_value(obj: object, path: str) -> str:
    """The string value of a dotted field path; a missing or unset field reads as ""."""
    cur: object = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, Mapping) else getattr(cur, part, None)
        if cur is None:
            return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


_FIELD_TERM = re.compile(r"\s*(?P<field>[A-Za-z0-9_.]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^,]*?)\s*")


def parse_fields(text: str) -> FieldSelector:
    """Parse ``metadata.name=x,spec.nodeName!=n`` (``==`` is accepted for ``=``)."""
    if not text.strip():
        return FieldSelector()
    reqs = []
    for part in text.split(","):
        m = _FIELD_TERM.fullmatch(part)
        if m is None:
            raise SelectorError(f'invalid field selector "{part.strip()}": expected <field>=<value> or <field>!=<value>')
        reqs.append(FieldRequirement(m["field"], "!=" if m["op"] == "!=" else "=", m["value"]))
    return FieldSelector(tuple(reqs))
