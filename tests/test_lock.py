"""The lock files are the install: a virtual environment built from ``requirements.lock``
alone (hashes checked, no resolver) holds everything every module imports, and the locks
pin every dependency pyproject.toml names."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)", re.M)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: Path) -> dict[str, str]:
    return {_canonical(m.group(1)): m.group(3) for m in PIN.finditer(lock.read_text())}


def _requirement_names(specs: list[str]) -> set[str]:
    return {_canonical(re.split(r"[<>=!~\[; ]", s, maxsplit=1)[0]) for s in specs}


def test_locks_pin_every_declared_dependency_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = pins(ROOT / "requirements.lock")
    test = pins(ROOT / "requirements-test.lock")
    assert _requirement_names(project["dependencies"]) - set(runtime) == set()
    assert _requirement_names(project["optional-dependencies"]["test"]) - set(test) == set()
    assert "setuptools" in runtime  # the build backend: installs run without build isolation
    # The test lock is the runtime lock plus the test tools, never other versions of them.
    assert {n: v for n, v in test.items() if n in runtime} == runtime
    for lock in ("requirements.lock", "requirements-test.lock"):
        blocks = re.split(r"\n(?=[A-Za-z0-9])", (ROOT / lock).read_text())
        unhashed = [b.split()[0] for b in blocks if "==" in b.split("\n", 1)[0] and "--hash=sha256:" not in b]
        assert unhashed == [], f"{lock}: pins without hashes"


@pytest.mark.timeout(600)
def test_fresh_venv_from_the_lock_imports_every_module(tmp_path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)  # our pip installs into it (--python), sparing ensurepip
    py = env_dir / "bin" / "python"
    outer = [sys.executable, "-m", "pip", "--python", str(py), "--disable-pip-version-check"]
    pip = [*outer, "install", "-q", "--no-compile"]
    subprocess.run([*pip, "--require-hashes", "--no-deps", "-r", str(ROOT / "requirements.lock")], check=True)
    subprocess.run([*pip, "--no-deps", "--no-build-isolation", "-e", str(ROOT)], check=True, cwd=tmp_path)
    check = subprocess.run([*outer, "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    script = (
        "import importlib, pkgutil, sys\n"
        "failed = []\n"
        "for top in ('schemas', 'kyb', 'services'):\n"
        "    pkg = importlib.import_module(top)\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, top + '.'):\n"
        "        try:\n"
        "            importlib.import_module(m.name)\n"
        "        except Exception as e:\n"
        "            failed.append(f'{m.name}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    # Run from outside the repository so only what the venv holds can be imported.
    done = subprocess.run([str(py), "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    kyb = subprocess.run([str(env_dir / "bin" / "kyb"), "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert kyb.returncode == 0 and "apply" in kyb.stdout, kyb.stderr
