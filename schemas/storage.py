"""storage.k8s.io/v1 StorageClass: how the volume binder provisions volumes for claims."""

from __future__ import annotations

from typing import Literal

from schemas.meta import Object


class StorageClass(Object, kw_only=True, frozen=True):
    API_VERSION = "storage.k8s.io/v1"
    KIND = "StorageClass"

    provisioner: str
    parameters: dict[str, str] = {}
    reclaimPolicy: Literal["Retain", "Delete"] = "Delete"
    volumeBindingMode: Literal["Immediate", "WaitForFirstConsumer"] = "Immediate"
    allowVolumeExpansion: bool | None = None
    mountOptions: list[str] = []


DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"  # see schemas.classes
