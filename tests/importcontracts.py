"""An import-linter contract type that forbids submodules of an external package
(pyproject.toml's ``contract_types``), so `lint-imports` keeps services from importing
``nats.errors`` while they import ``nats`` for its client.

import-linter's own ``forbidden`` contract names an external package by its top level only
("subpackages of external packages are not valid"): grimp folds an external package into one
node. This one takes the graph's word for which modules import the package at all, then reads
their import statements (with ``ast``, so ``from nats.js import (errors)`` over several lines
counts too).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Any

from grimp import ImportGraph
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck
from importlinter.domain.helpers import module_expressions_to_modules


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) for every module an import statement names, the names imported from a
    package included (``from nats.js import errors`` names ``nats.js`` and ``nats.js.errors``)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def _source_file(module: str) -> Path:
    top, _, rest = module.partition(".")
    spec = importlib.util.find_spec(top)
    assert spec is not None and spec.submodule_search_locations, f"{top} is a package"
    base = Path(next(iter(spec.submodule_search_locations)))
    path = base.joinpath(*rest.split(".")) if rest else base
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


class ForbiddenSubmodulesContract(Contract):
    """``source_modules`` (and what is below them) never import any of ``forbidden_modules``,
    submodules of external packages, nor what is below those."""

    type_name = "forbidden_submodules"

    source_modules = fields.SetField(subfield=fields.ModuleExpressionField())
    forbidden_modules = fields.SetField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        forbidden = sorted(self.forbidden_modules)  # type: ignore[call-overload]
        packages = {name.split(".")[0] for name in forbidden}
        sources = module_expressions_to_modules(graph, self.source_modules, as_packages=True)  # type: ignore[arg-type]
        broken: list[dict[str, Any]] = []
        for module in sorted(m.name for m in sources):
            if not packages & graph.find_modules_directly_imported_by(module):
                continue
            for line, name in imported_modules(_source_file(module).read_text()):
                if any(name == f or name.startswith(f + ".") for f in forbidden):
                    broken.append({"importer": module, "imported": name, "line_number": line})
        return ContractCheck(kept=not broken, metadata={"imports": broken})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for imp in check.metadata["imports"]:
            output.print_error(f"{imp['importer']} -> {imp['imported']} (l.{imp['line_number']})", bold=False)
            output.new_line()
