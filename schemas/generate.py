"""Write the JSON Schema of every kind to ``schemas/jsonschema/<plural>.json``.

Run ``python -m schemas.generate`` after changing a struct; a test fails while a checked-in
file differs from what this would write. Editors and CI linters can validate manifests
against these files.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

import msgspec

from schemas.registry import KindInfo, all_kinds

OUT_DIR = Path(__file__).parent / "jsonschema"


def normalise_descriptions(node: Any) -> Any:
    """Every ``description`` as :func:`inspect.cleandoc` leaves it.

    msgspec copies docstrings into ``description``, and how it trims them has changed between
    releases (0.23 dedents, earlier ones did not), so the committed files would depend on
    the version that wrote them. Cleaning them here makes the output the same for any."""
    if isinstance(node, dict):
        return {
            k: inspect.cleandoc(v) if k == "description" and isinstance(v, str) else normalise_descriptions(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [normalise_descriptions(v) for v in node]
    return node


def type_schema(tp: Any) -> dict[str, Any]:
    """The JSON Schema msgspec derives for ``tp``, descriptions normalised."""
    schema: dict[str, Any] = normalise_descriptions(msgspec.json.schema(tp))
    return schema


def schema_for(info: KindInfo) -> dict[str, Any]:
    schema: dict[str, Any] = type_schema(info.type)
    top = schema["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    top["properties"]["apiVersion"] = {"type": "string", "enum": list(info.api_versions)}
    top["properties"]["kind"] = {"type": "string", "enum": [info.kind]}
    top["required"] = sorted({*top.get("required", []), "apiVersion", "kind"})
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"{info.kind} ({', '.join(info.api_versions)})"
    return schema


def encode(schema: dict[str, Any]) -> bytes:
    return msgspec.json.format(msgspec.json.encode(schema, order="sorted"), indent=2) + b"\n"


def render(info: KindInfo) -> bytes:
    return encode(schema_for(info))


def expected_files() -> dict[str, bytes]:
    return {f"{info.plural}.json": render(info) for info in all_kinds()}


def main() -> int:
    OUT_DIR.mkdir(exist_ok=True)
    files = expected_files()
    for name, content in files.items():
        (OUT_DIR / name).write_bytes(content)
    for stale in OUT_DIR.glob("*.json"):
        if stale.name not in files:
            stale.unlink()
    print(f"wrote {len(files)} schemas to {OUT_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
