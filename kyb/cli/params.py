"""Parameter types the commands share, parsed as kubectl parses them."""

from __future__ import annotations

import re
from typing import Any

import click


class Duration(click.ParamType):
    """Seconds, or a Go-style duration as kubectl takes it: 90s, 2m, 1h30m, 0 (no limit)."""

    name = "duration"
    _part = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
    _scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        text = str(value).strip()
        try:
            return float(text)
        except ValueError:
            pass
        parts = self._part.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            self.fail(f"{value!r} is not a duration (e.g. 90s, 2m, 1h30m)", param, ctx)
        return sum(float(n) * self._scale[u] for n, u in parts)
