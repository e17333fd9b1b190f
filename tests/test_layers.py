"""The layering rules of STYLE.md, checked by import-linter against pyproject.toml's contracts:
services -> kyb -> schemas only point down, and pure reconcile/plan modules import neither
nats, docker nor asyncio, and services never import NATS's exception modules."""

from __future__ import annotations

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



def test_the_forbidden_submodules_contract_finds_an_import_over_several_lines(tmp_path, monkeypatch):
    """The contract type that keeps services from importing nats.errors (tests/importcontracts.py)
    names the module and line, and lets ``import nats`` and ``nats.js.api`` through."""
    import grimp

    from tests.importcontracts import ForbiddenSubmodulesContract

    pkg = tmp_path / "fakesvc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "fine.py").write_text("import nats\nfrom nats.js import api\nfrom nats.aio.client import Client\n")
    (pkg / "bad.py").write_text("import msgspec\nfrom nats.js import (\n    api,\n    errors,\n)\n")
    (pkg / "worse.py").write_text("import nats.errors\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("fakesvc", include_external_packages=True, cache_dir=None)
    contract = ForbiddenSubmodulesContract(
        "no nats errors", {}, {"source_modules": ["fakesvc"], "forbidden_modules": ["nats.errors", "nats.js.errors"]}
    )
    check = contract.check(graph, verbose=False)
    assert not check.kept
    assert [(i["importer"], i["imported"], i["line_number"]) for i in check.metadata["imports"]] == [
        ("fakesvc.bad", "nats.js.errors", 2),
        ("fakesvc.worse", "nats.errors", 1),
    ]
