"""The objects ``kyb up`` gives a new cluster, as k3s does: a default StorageClass
``local-path`` (volumes on the node's disk) and a default IngressClass ``kyb`` (the builtin
ingress controller), so the PersistentVolumeClaims and Ingresses people bring, which mostly
name no class, work out of the box.

Each default is made once. The names made are recorded in a file of the data directory, so a
user who deletes or edits a default keeps their change across restarts; ``kyb up --disable
local-path,ingressclass`` skips them (k3s' ``--disable``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kyb import errors
from schemas.classes import INGRESS_DEFAULT_ANNOTATION, STORAGE_DEFAULT_ANNOTATION

DEFAULTS: dict[str, dict[str, Any]] = {
    "local-path": {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": "local-path", "annotations": {STORAGE_DEFAULT_ANNOTATION: "true"}},
        "provisioner": "kybernetes.io/local-path",
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Delete",
    },
    "ingressclass": {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": "kyb", "annotations": {INGRESS_DEFAULT_ANNOTATION: "true"}},
        "spec": {"controller": "kybernetes.io/ingress"},
    },
}


def parse_disable(values: tuple[str, ...] | list[str] | str | None) -> frozenset[str]:
    """``--disable a,b --disable c`` as a set; an unknown name is an error naming the known ones."""
    if not values:
        return frozenset()
    if isinstance(values, str):
        values = [values]
    names = {n.strip() for v in values for n in v.split(",") if n.strip()}
    unknown = sorted(names - set(DEFAULTS))
    if unknown:
        raise ValueError(f"--disable: unknown default(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
    return frozenset(names)


def read_made(state_file: Path) -> set[str]:
    try:
        raw = json.loads(Path(state_file).read_text())
    except FileNotFoundError:
        return set()
    except (OSError, ValueError) as e:
        raise errors.Permanent(f"cannot read {state_file}: {e}") from e
    return {str(n) for n in raw.get("made", [])} if isinstance(raw, dict) else set()


def _write_made(state_file: Path, made: set[str]) -> None:
    state_file = Path(state_file)
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"made": sorted(made)}) + "\n")
    os.replace(tmp, state_file)


async def ensure(store: Any, state_file: Path, disabled: frozenset[str] = frozenset()) -> list[str]:
    """Create each default not yet made and not disabled; returns the names created now.
    A default whose name is already taken (the user made their own first) counts as made."""
    from schemas.validation import decode

    made = read_made(state_file)
    created = []
    for name, manifest in DEFAULTS.items():
        if name in made or name in disabled:
            continue
        try:
            await store.create(decode(manifest))
            created.append(name)
        except errors.AlreadyExists:
            pass
        made.add(name)
        _write_made(state_file, made)
    return created
