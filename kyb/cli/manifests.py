"""Reading manifests the way `kubectl apply -f` does: a file, a directory of *.yaml/*.yml/*.json
(name order, optionally recursive) or stdin, each file possibly holding several YAML documents.

Pure apart from reading the files: a parse error becomes a ``ManifestError`` naming the file
and line, and the documents before it are still returned so the others can be applied.
Each document is decoded under ``schemas.limits`` (aliases, depth, decoded size), as the api
decodes it; a file may hold any number of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from schemas import limits

SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True, slots=True)
class Document:
    source: str            # file name, or "STDIN"
    index: int             # position in its file, from 0
    body: dict[str, Any]   # the manifest as parsed


@dataclass(frozen=True, slots=True)
class ManifestError:
    source: str
    message: str           # "error parsing web.yaml: line 4: mapping values are not allowed here"


def files_in(path: Path, recursive: bool = False) -> list[Path]:
    """The manifest files of a directory, in name order (sub-directories only when recursive)."""
    found: list[Path] = []
    for entry in sorted(path.iterdir(), key=lambda p: p.name):
        if entry.is_dir():
            if recursive:
                found.extend(files_in(entry, recursive))
        elif entry.suffix in SUFFIXES:
            found.append(entry)
    return found


def parse(text: str, source: str) -> Iterator[Document | ManifestError]:
    """The documents of one YAML stream; ``kind: List`` documents are expanded to their items."""
    index = 0
    try:
        for raw in limits.load_yaml(text, source, max_bytes=None):
            if raw is None:
                continue
            if not isinstance(raw, dict):
                yield ManifestError(source, f"error parsing {source}: document {index + 1} is not a mapping")
                index += 1
                continue
            items = raw.get("items") if str(raw.get("kind", "")).endswith("List") and "items" in raw else [raw]
            for item in items if isinstance(items, list) else [items]:
                if isinstance(item, dict):
                    yield Document(source, index, item)
                elif item is not None:
                    yield ManifestError(source, f"error parsing {source}: document {index + 1} is not a mapping")
                index += 1
    except yaml.YAMLError as e:
        yield ManifestError(source, f"error parsing {source}: {_describe(e)}")


def _describe(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    if mark is not None:
        return f"line {mark.line + 1}: {problem}"
    return problem


def load(
    filenames: list[str], *, recursive: bool = False, stdin: IO[str] | None = None
) -> Iterator[Document | ManifestError]:
    """Every document named by ``-f`` arguments ("-" reads stdin), in order."""
    for name in filenames:
        if name == "-":
            text = stdin.read() if stdin is not None else ""
            yield from parse(text, "STDIN")
            continue
        path = Path(name)
        if path.is_dir():
            files = files_in(path, recursive)
            if not files:
                yield ManifestError(name, f"error reading {name}: no manifest files (*.yaml, *.yml, *.json)")
            for f in files:
                yield from _read(f)
        elif path.exists():
            yield from _read(path)
        else:
            yield ManifestError(name, f'the path "{name}" does not exist')


def _read(path: Path) -> Iterator[Document | ManifestError]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        yield ManifestError(str(path), f"error reading {path}: {e}")
        return
    yield from parse(text, str(path))
