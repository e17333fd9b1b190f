"""ObjectMeta and the base every kind shares.

Conventions for every Struct in this package:
- attribute names are the Kubernetes field names exactly (camelCase), so ``pod.spec.nodeName``;
- ``kw_only=True, frozen=True, omit_defaults=True, forbid_unknown_fields=True``: build new
  objects with ``msgspec.structs.replace`` and never mutate one taken from a cache;
- ``None`` only where Kubernetes has "unset" semantics; collections default to empty.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import msgspec

# kubectl apply's record of the manifest it last applied (read by the api's three-way merge).
LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"


class Base(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """Base of every struct of the object model."""


class OwnerReference(Base, frozen=True):
    apiVersion: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    blockOwnerDeletion: bool | None = None


class ManagedFieldsEntry(Base, frozen=True):
    """Which fields a field manager set, and how (server-side apply's bookkeeping)."""

    manager: str = ""
    operation: Literal["Apply", "Update"] = "Update"
    apiVersion: str = ""
    time: str | None = None
    fieldsType: str = "FieldsV1"
    fieldsV1: dict[str, Any] = {}
    subresource: str = ""


class ObjectMeta(Base, frozen=True):
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
    managedFields: list[ManagedFieldsEntry] = []


class Object(Base, frozen=True, weakref=True):
    """A top-level object: apiVersion, kind, metadata (each kind adds spec/status/data).

    Weakly referable, so informers can share one decoded object (kyb.informer).

    Each kind names its preferred ``API_VERSION`` and ``KIND``; an object built without them
    gets them filled in, so encoded objects always say what they are.
    """

    apiVersion: str = ""
    kind: str = ""
    metadata: ObjectMeta = ObjectMeta()

    API_VERSION: ClassVar[str] = ""
    KIND: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if not self.apiVersion and self.API_VERSION:
            msgspec.structs.force_setattr(self, "apiVersion", self.API_VERSION)
        if not self.kind and self.KIND:
            msgspec.structs.force_setattr(self, "kind", self.KIND)


ConditionStatus = Literal["True", "False", "Unknown"]


class LabelSelectorRequirement(Base, kw_only=True, frozen=True):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = []


class LabelSelector(Base, kw_only=True, frozen=True):
    """matchLabels and matchExpressions are ANDed; an empty selector matches everything."""

    matchLabels: dict[str, str] = {}
    matchExpressions: list[LabelSelectorRequirement] = []


class Condition(Base, kw_only=True, frozen=True):
    """The generic condition most kinds report in ``status.conditions``."""

    type: str
    status: ConditionStatus
    observedGeneration: int | None = None
    lastTransitionTime: str | None = None
    lastUpdateTime: str | None = None
    lastProbeTime: str | None = None
    lastHeartbeatTime: str | None = None
    reason: str = ""
    message: str = ""


class LocalObjectReference(Base, kw_only=True, frozen=True):
    name: str = ""


class ObjectReference(Base, kw_only=True, frozen=True):
    kind: str = ""
    namespace: str = ""
    name: str = ""
    uid: str = ""
    apiVersion: str = ""
    resourceVersion: str = ""
    fieldPath: str = ""
