"""How the CLI writes objects and tables: YAML (PyYAML, keys in the object's order), JSON,
``kind/name`` lines, and kubectl-like plain tables drawn by rich."""

from __future__ import annotations

import io
import json
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table


def to_yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, allow_unicode=True)


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=4, ensure_ascii=False) + "\n"


def as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}


def column_widths(headers: list[str], rows: list[list[str]]) -> list[int]:
    return [max([len(h)] + [len(r[i]) for r in rows if i < len(r)]) for i, h in enumerate(headers)]


def render_table(
    headers: list[str], rows: list[list[str]], *, header: bool = True, min_widths: list[int] | None = None
) -> str:
    """Columns separated by three spaces, no borders, no wrapping: what kubectl prints.
    ``min_widths`` keeps later rows (a watch) aligned under an earlier table."""
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="", padding=(0, 3, 0, 0),
                  show_header=header)
    for i, h in enumerate(headers):
        width = min_widths[i] if min_widths and i < len(min_widths) else None
        table.add_column(h, no_wrap=True, overflow="ignore", min_width=width)
    for r in rows:
        table.add_row(*r)
    buf = io.StringIO()
    Console(file=buf, width=1000, no_color=True, highlight=False, emoji=False, markup=False).print(table)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"
