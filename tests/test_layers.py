"""The layering rules of STYLE.md, checked by import-linter against pyproject.toml's contracts:
services -> kyb -> schemas only point down, and pure reconcile/plan modules import neither
nats, docker nor asyncio; and, by reading their imports, that services never import NATS's
exception modules."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter (lint-imports) is part of the test extras"
    result = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_type_checker_passes_on_the_strict_modules():
    """mypy --strict (pyproject's [tool.mypy]) on the object model and the pure modules, as
    `make lint` runs it."""
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert "Success: no issues found" in result.stdout


def test_the_type_checker_covers_every_module_of_the_purity_contract():
    """A module that joins the contract of pure modules (wildcards expanded) is type-checked too."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    pure = next(c for c in contracts if c.get("forbidden_modules") == ["nats", "docker", "asyncio"])
    checked = config["tool"]["mypy"]["files"]
    missing = []
    for module in pure["source_modules"]:
        base = module.replace(".", "/")
        paths = [*ROOT.glob(f"{base}.py"), *(p for p in ROOT.glob(base) if p.is_dir())]
        assert paths, f"{module} names no module"
        for path in (p.relative_to(ROOT).as_posix() for p in paths):
            if not any(path == f or path.startswith(f"{f}/") for f in checked):
                missing.append(path)
    assert missing == []


def test_every_cli_module_but_the_entry_point_is_bound_by_the_cli_contract():
    """A new command module must join the contract that keeps it from importing kyb.cli.main."""
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    cli = next(c for c in contracts if c.get("forbidden_modules") == ["kyb.cli.main"])
    modules = {f"kyb.cli.{p.stem}" for p in (ROOT / "kyb" / "cli").glob("*.py") if p.stem not in ("main", "__init__")}
    assert set(cli["source_modules"]) == modules


# NATS's exceptions become kyb.errors in kyb (kyb.bus, kyb.buckets, kyb.store, ...) and nowhere
# else. import-linter cannot say so: with include_external_packages it forbids an external
# package only by its top-level name ("nats"), and services do import nats for its client.
NATS_ERROR_MODULES = ("nats.errors", "nats.js.errors")


def _imported_modules(tree: ast.AST) -> set[str]:
    """Every module an ``import`` or ``from ... import`` names, the names imported from a
    package included (``from nats.js import errors`` names ``nats.js.errors``)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_services_never_import_nats_errors():
    offenders = []
    for path in sorted((ROOT / "services").rglob("*.py")):
        imported = _imported_modules(ast.parse(path.read_text(), filename=str(path)))
        bad = sorted(m for m in imported if any(m == e or m.startswith(e + ".") for e in NATS_ERROR_MODULES))
        if bad:
            offenders.append(f"{path.relative_to(ROOT)}: {', '.join(bad)}")
    assert not offenders, "services handle kyb.errors (kyb.bus translates NATS's): " + "; ".join(offenders)
