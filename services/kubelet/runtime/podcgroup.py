"""A cgroup of a pod's own, holding its pod-level limits (``spec.resources.limits``), under
which the Docker runtime puts the sandbox and every container of the pod (their cgroup
parent), so the limits bound the containers together as Kubernetes' pod cgroup does.

Only for Docker's ``cgroupfs`` driver (the parent is a path, ``/kyb-pods/pod<uid>``); cgroup
v1 (one directory per controller: ``cpu`` and ``memory``) and v2 (one directory, the
controllers enabled in the parents' ``cgroup.subtree_control``). :func:`settings` is the pure
part: which file gets which value.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PARENT = "kyb-pods"
CFS_PERIOD_US = 100_000


class CgroupUnavailable(Exception):
    """The pod's cgroup could not be made here (no write access, an unknown layout)."""


def parent_of(pod_uid: str) -> str:
    """The cgroup parent the pod's containers get (Docker's ``--cgroup-parent``)."""
    return f"/{PARENT}/pod{pod_uid}"


def version(root: Path = ROOT) -> int:
    return 2 if (root / "cgroup.controllers").exists() else 1


def settings(cgroup_version: int, cpu_millis: int | None, memory_bytes: int | None) -> dict[str, dict[str, str]]:
    """Controller (v1's directory; "" in v2) -> file -> value of the limits."""
    out: dict[str, dict[str, str]] = {}
    if cgroup_version == 2:
        files: dict[str, str] = {}
        if cpu_millis is not None:
            files["cpu.max"] = f"{cpu_millis * CFS_PERIOD_US // 1000} {CFS_PERIOD_US}"
        if memory_bytes is not None:
            files["memory.max"] = str(memory_bytes)
        return {"": files} if files else {}
    if cpu_millis is not None:
        out["cpu"] = {"cpu.cfs_period_us": str(CFS_PERIOD_US), "cpu.cfs_quota_us": str(cpu_millis * CFS_PERIOD_US // 1000)}
    if memory_bytes is not None:
        out["memory"] = {"memory.limit_in_bytes": str(memory_bytes)}
    return out


def ensure(pod_uid: str, cpu_millis: int | None, memory_bytes: int | None, root: Path = ROOT) -> str:
    """Make the pod's cgroup with its limits; returns the cgroup parent. CgroupUnavailable when
    the host does not let this process make it."""
    v = version(root)
    relative = parent_of(pod_uid).lstrip("/")
    try:
        if v == 2:
            for controller in ("cpu", "memory"):
                for parent in (root, root / PARENT):
                    parent.mkdir(exist_ok=True)
                    _enable(parent / "cgroup.subtree_control", controller)
        for controller, files in settings(v, cpu_millis, memory_bytes).items():
            directory = root / controller / relative if controller else root / relative
            directory.mkdir(parents=True, exist_ok=True)
            for name, value in files.items():
                (directory / name).write_text(value)
    except OSError as e:
        raise CgroupUnavailable(f"cannot make the pod's cgroup under {root}: {e}") from e
    return parent_of(pod_uid)


def _enable(subtree_control: Path, controller: str) -> None:
    enabled = subtree_control.read_text().split() if subtree_control.exists() else []
    if controller not in enabled:
        subtree_control.write_text(f"+{controller}")


def remove(pod_uid: str, root: Path = ROOT) -> None:
    """Remove the pod's cgroup once its containers are gone (nothing if it was never made)."""
    relative = parent_of(pod_uid).lstrip("/")
    # v1: runc made the parent in every controller's hierarchy, not only where limits are
    places = [root / relative] if version(root) == 2 else [d / relative for d in root.iterdir() if d.is_dir()]
    for place in places:
        with contextlib.suppress(FileNotFoundError, OSError):
            os.rmdir(place)
