"""Bounded decoding of what users send: one home for the limits every entry point applies
(the api's apply/create/replace and queries, the kubelet's node requests, ``kyb apply``,
``kyb create`` and ``kyb edit``), so that no input can make a decoder take memory or time out
of proportion to its size, and bad input is always an ``InputError``, never a crash.

The limits:

- ``MAX_BYTES`` (1 MiB, NATS' default max_payload): the encoded input.
- ``MAX_DEPTH`` (100): nesting of mappings and sequences. Kubernetes' JSON decoder allows
  10,000, but the deepest built-in object is about 15 levels deep and Python code that walks
  a document recurses, so 100 leaves room without coming near the interpreter's 1,000 frames.
- YAML aliases, go-yaml's rule (``decode.go``, ``allowedAliasRatio``, the fix of Kubernetes'
  CVE-2019-11253): once a document has more than 1,000 nodes after expanding aliases, of which
  more than 100 come from alias expansion, at most 99% of them may come from aliases up to
  400,000 nodes, falling linearly to 10% at 4,000,000.
- ``MAX_NODES`` (400,000, where go-yaml starts tightening) and ``MAX_TEXT`` (2 MiB of
  scalar text): the size of the decoded document, aliases expanded. A decoded JSON document
  is never larger than its encoding, so ``MAX_BYTES`` bounds it; YAML is measured.

How YAML is bounded: PyYAML has no limit of its own. ``load_yaml`` composes each document
with libyaml's composer (C speed, memory proportional to the text, aliases are shared node
objects), walks that node graph once remembering what each node expands to (so the walk is
as long as the text, however large the expansion), refuses the document when a limit is
broken, and only then constructs the Python objects. A composer that counted while composing
would need the pure-Python composer, several times slower for every ordinary document. The
walk also refuses duplicate mapping keys (as go-yaml v3 and kubectl do) and recursive aliases.
JSON is decoded by msgspec; its own depth limit is Python's recursion limit (RecursionError),
so ``MAX_DEPTH`` is checked here, by a walk only when the text has more than ``MAX_DEPTH``
opening brackets (ordinary manifests have a few dozen: the fast path is one decode).

``InputError`` subclasses ``yaml.YAMLError`` so code that already reports YAML errors
reports these too; ``InputTooLarge`` is the size family (413 at the api).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgspec
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 100
MAX_NODES = 400_000
MAX_TEXT = 2 * 1024 * 1024

# go-yaml decode.go: alias_ratio_range_low / _high
ALIAS_RATIO_LOW = 400_000
ALIAS_RATIO_HIGH = 4_000_000

try:
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # PyYAML without libyaml
    _Loader = yaml.SafeLoader

_MERGE_TAG = "tag:yaml.org,2002:merge"


class InputError(yaml.YAMLError):
    """The input cannot be decoded or breaks a limit; the message names which (a 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InputTooLarge(InputError):
    """The input, or what it decodes to, is larger than a size limit (a 413)."""


def check_bytes(data: bytes | str, what: str = "request body", limit: int = MAX_BYTES) -> None:
    size = len(data) if isinstance(data, bytes) else len(data.encode())
    if size > limit:
        raise InputTooLarge(f"{what} of {size} bytes exceeds the limit of {limit} bytes")


def allowed_alias_ratio(nodes: int) -> float:
    """go-yaml's ``allowedAliasRatio``: the share of a document's nodes aliases may produce."""
    if nodes <= ALIAS_RATIO_LOW:
        return 0.99
    if nodes >= ALIAS_RATIO_HIGH:
        return 0.10
    return 0.99 - 0.89 * (nodes - ALIAS_RATIO_LOW) / (ALIAS_RATIO_HIGH - ALIAS_RATIO_LOW)


def check_aliases(nodes: int, written: int) -> None:
    """Refuse a document of ``nodes`` nodes once aliases are expanded, ``written`` in its text."""
    aliased = nodes - written
    if aliased > 100 and nodes > 1000 and aliased / nodes > allowed_alias_ratio(nodes):
        raise InputError(
            f"document contains excessive aliasing: {written} nodes expand to {nodes} through aliases; "
            f"at most {allowed_alias_ratio(nodes):.0%} of a document may come from aliases (go-yaml's limit)"
        )


def _depth_error(depth: int | None = None) -> InputError:
    found = f" ({depth} levels)" if depth else ""
    return InputError(f"document nested too deeply{found}: the limit is {MAX_DEPTH} levels of mappings and sequences")


# -- JSON -------------------------------------------------------------------------------------


def decode_json(data: bytes | str, type: Any = Any, what: str = "request body") -> Any:
    """The JSON document (converted to ``type`` when given), bounded; InputError otherwise."""
    raw = data if isinstance(data, bytes) else data.encode()
    if len(raw) > MAX_BYTES:
        check_bytes(raw, what)
    try:
        if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
            depth = _json_depth(msgspec.json.decode(raw))
            if depth > MAX_DEPTH:
                raise _depth_error(depth)
        return msgspec.json.decode(raw, type=type)
    except RecursionError:
        raise _depth_error() from None
    except msgspec.ValidationError as e:
        raise InputError(f"invalid {what}: {e}") from None
    except msgspec.DecodeError as e:
        raise InputError(f"invalid JSON: {e}") from None


def _json_depth(doc: Any) -> int:
    deepest = 0
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            return depth
        stack.extend((c, depth + 1) for c in children)
    return deepest


# -- YAML -------------------------------------------------------------------------------------


def load_yaml(text: bytes | str, what: str = "request body", max_bytes: int | None = MAX_BYTES) -> Iterator[Any]:
    """Each document of a YAML stream, checked against the limits before it is constructed.

    Raises ``yaml.YAMLError`` for bad YAML (with its mark) and ``InputError`` for a limit.
    ``max_bytes=None`` for a file of many documents (``kyb apply -f``), each still bounded.
    """
    if max_bytes is not None:
        check_bytes(text, what, max_bytes)
    loader = _Loader(text)
    try:
        while True:
            try:
                node = loader.get_node() if loader.check_node() else None
            except RecursionError:  # the pure-Python composer, before libyaml's 1,000 levels
                raise _depth_error() from None
            except yaml.MarkedYAMLError as e:
                if "nesting depth" in str(e.problem):  # libyaml's own limit, 1,000 levels
                    raise _depth_error() from None
                raise
            if node is None:
                return
            measure(node)
            try:
                data = loader.construct_document(node)
            except RecursionError:
                raise _depth_error() from None
            except (ValueError, OverflowError, TypeError) as e:  # e.g. an integer of 5,000 digits
                raise InputError(f"invalid value in YAML: {e}") from None
            yield data
    finally:
        loader.dispose()


def load_one_yaml(text: bytes | str, what: str = "request body", max_bytes: int | None = MAX_BYTES) -> Any:
    """The first document of a YAML text (None when empty), as ``yaml.safe_load`` but bounded."""
    for doc in load_yaml(text, what, max_bytes):
        return doc
    return None


def measure(root: Node) -> tuple[int, int, int]:
    """(nodes, scalar characters, depth) of a composed document with its aliases expanded,
    in one pass over the nodes as written; raises InputError when a limit is broken.

    Recursive, but never deeper than ``MAX_DEPTH`` frames: the depth is checked going down."""
    done: dict[int, tuple[int, int, int]] = {}
    active: set[int] = set()

    def walk(node: Node, depth: int) -> tuple[int, int, int]:
        key = id(node)
        found = done.get(key)
        if found is not None:  # an alias of a node already measured
            if depth + found[2] - 1 > MAX_DEPTH:
                raise _depth_error(depth + found[2] - 1)
            return found
        cls = node.__class__
        if cls is ScalarNode:
            done[key] = found = (1, len(node.value), 0)
            return found
        if depth > MAX_DEPTH:
            raise _depth_error(depth)
        if key in active:
            mark = node.start_mark
            raise InputError(f"recursive alias: the node at line {mark.line + 1}, column {mark.column + 1} contains itself")
        active.add(key)
        nodes, text, height = 1, 0, 0
        if isinstance(node, MappingNode):
            _check_unique_keys(node)
            children: Any = (n for pair in node.value for n in pair)
        else:
            children = node.value
        for child in children:
            n, t, h = walk(child, depth + 1)
            nodes += n
            text += t
            if h > height:
                height = h
        active.discard(key)
        if nodes > MAX_NODES:
            check_aliases(nodes, len(done) + 1)  # a bomb is named as one
            raise InputTooLarge(f"document too large: more than {MAX_NODES} nodes once aliases are expanded (the limit)")
        if text > MAX_TEXT:
            raise InputTooLarge(
                f"document too large: {text} characters of text once aliases are expanded; the limit is {MAX_TEXT}"
            )
        done[key] = found = (nodes, text, height + 1)
        return found

    total = walk(root, 1)
    check_aliases(total[0], len(done))
    return total


def _check_unique_keys(node: MappingNode) -> None:
    seen: set[tuple[str, str]] = set()
    for key, _ in node.value:
        if not isinstance(key, ScalarNode) or key.tag == _MERGE_TAG:
            continue
        k = (key.tag, key.value)
        if k in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f'found duplicate key "{key.value}"', key.start_mark
            )
        seen.add(k)
