"""ObjectMeta and the base every kind shares.

Conventions for every Struct in this package:
- attribute names are the Kubernetes field names exactly (camelCase), so ``pod.spec.nodeName``;
- ``kw_only=True, frozen=True, omit_defaults=True, forbid_unknown_fields=True``: build new
  objects with ``msgspec.structs.replace`` and never mutate one taken from a cache;
- ``None`` only where Kubernetes has "unset" semantics; collections default to empty.
"""

from __future__ import annotations

import msgspec


class Base(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """Base of every struct of the object model."""


class OwnerReference(Base):
    apiVersion: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    blockOwnerDeletion: bool | None = None


class ObjectMeta(Base):
    name: str = ""
    generateName: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resourceVersion: str | None = None
    generation: int | None = None
    creationTimestamp: str | None = None
    deletionTimestamp: str | None = None
    deletionGracePeriodSeconds: int | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    ownerReferences: list[OwnerReference] = []
    finalizers: list[str] = []


class Object(Base):
    """A top-level object: apiVersion, kind, metadata (each kind adds spec/status/data)."""

    apiVersion: str = ""
    kind: str = ""
    metadata: ObjectMeta = ObjectMeta()
