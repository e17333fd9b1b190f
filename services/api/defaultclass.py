"""Admission of default classes, as Kubernetes' DefaultStorageClass and DefaultIngressClass
plugins do it: at creation, a PersistentVolumeClaim whose ``spec.storageClassName`` is unset
gets the default StorageClass's name, and an Ingress whose ``spec.ingressClassName`` is unset
(and that carries no legacy ``kubernetes.io/ingress.class`` annotation) gets the default
IngressClass's name. With no default marked, the object is left as it is. Pure."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from schemas import classes
from schemas.core import PersistentVolumeClaim
from schemas.meta import Object
from schemas.networking import Ingress

CLASS_KIND = {"PersistentVolumeClaim": "StorageClass", "Ingress": "IngressClass"}
_ANNOTATION = {"PersistentVolumeClaim": classes.STORAGE_DEFAULT_ANNOTATION,
               "Ingress": classes.INGRESS_DEFAULT_ANNOTATION}
LEGACY_INGRESS_CLASS = "kubernetes.io/ingress.class"


def names_no_class(obj: Object) -> bool:
    if isinstance(obj, PersistentVolumeClaim):
        return obj.spec.storageClassName is None
    if isinstance(obj, Ingress):
        return obj.spec.ingressClassName is None and LEGACY_INGRESS_CLASS not in obj.metadata.annotations
    return False


def with_class(obj: Object, candidates: Iterable[Object]) -> Object:
    """``obj`` with the default class's name written in, when one is marked."""
    if not names_no_class(obj):
        return obj
    name = classes.default_class(candidates, _ANNOTATION[obj.kind])
    if name is None:
        return obj
    if isinstance(obj, PersistentVolumeClaim):
        return msgspec.structs.replace(obj, spec=msgspec.structs.replace(obj.spec, storageClassName=name))
    assert isinstance(obj, Ingress)
    return msgspec.structs.replace(obj, spec=msgspec.structs.replace(obj.spec, ingressClassName=name))
