"""Default classes: which StorageClass or IngressClass a claim or Ingress that names none gets.

Kubernetes marks a default with an annotation (``storageclass.kubernetes.io/is-default-class``,
``ingressclass.kubernetes.io/is-default-class``, value ``"true"``). When several are marked,
the newest wins (Kubernetes 1.28 and later), ties broken by name. One rule for the api's
admission (DefaultStorageClass, DefaultIngressClass), the volume binder and the ingress
controller.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.meta import Object

STORAGE_DEFAULT_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
INGRESS_DEFAULT_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
# Beta annotation Kubernetes still honours for StorageClasses.
STORAGE_DEFAULT_BETA_ANNOTATION = "storageclass.beta.kubernetes.io/is-default-class"


def is_default(obj: Object, annotation: str) -> bool:
    ann = obj.metadata.annotations
    if ann.get(annotation) == "true":
        return True
    return annotation == STORAGE_DEFAULT_ANNOTATION and ann.get(STORAGE_DEFAULT_BETA_ANNOTATION) == "true"


def default_class(classes: Iterable[Object], annotation: str) -> str | None:
    """The name of the default class among ``classes``, or None when none is marked.
    Classes being deleted are not candidates."""
    marked = [c for c in classes if is_default(c, annotation) and not c.metadata.deletionTimestamp]
    if not marked:
        return None
    return max(marked, key=lambda c: (c.metadata.creationTimestamp or "", c.metadata.name)).metadata.name
