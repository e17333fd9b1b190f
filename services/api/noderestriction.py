"""What a node's kubelet may do through the api: Kubernetes' NodeRestriction admission and
Node authorizer, as pure decisions.

A kubelet holding node credentials cannot write the pods bucket nor read the Secrets bucket;
it asks the api on ``kyb.api.node.<node>.<verb>`` (the bus lets only that node's user publish
there, so the subject names the caller). The api then allows:

- ``status``: replacing the ``status`` of a pod bound to that node (nothing else of it);
- ``delete``: the final removal of a terminating pod bound to that node;
- ``secret``: reading a Secret that a pod bound to that node refers to;
- ``token``: a service account token for a pod bound to that node, for that pod's account
  and bound to it (Kubernetes' TokenRequest as the NodeRestriction admission allows it).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from kyb import errors, satoken
from schemas.helpers import volume_references
from schemas.pod import Pod, PodStatus

NODE_VERBS = ("status", "delete", "secret", "token")
MIN_TOKEN_SECONDS = 600


class NodeRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The body of a node verb."""

    namespace: str = "default"
    name: str
    uid: str | None = None  # status and delete: the pod the kubelet ran
    resourceVersion: str | None = None  # delete: the revision the kubelet read
    status: PodStatus | None = None  # status: the new status
    audience: str = ""  # token: the audience ("" for the apiserver's own)
    expirationSeconds: int = 3600  # token: its lifetime


def referenced_secrets(pod: Pod) -> set[str]:
    """Names of the Secrets a pod's containers, volumes and image pulls refer to."""
    names: set[str] = set()
    for c in [*pod.spec.initContainers, *pod.spec.containers]:
        for s in c.envFrom:
            if s.secretRef is not None:
                names.add(s.secretRef.name)
        for v in c.env:
            if v.valueFrom is not None and v.valueFrom.secretKeyRef is not None:
                names.add(v.valueFrom.secretKeyRef.name)
    names |= volume_references(pod)[1]
    for ref in getattr(pod.spec, "imagePullSecrets", None) or ():
        name = getattr(ref, "name", None)
        if name:
            names.add(name)
    return names


def _forbidden(node: str, what: str) -> errors.Forbidden:
    return errors.Forbidden(f'node "{node}" is not allowed to {what}')


def check_pod(node: str, pod: Pod, uid: str | None, what: str) -> None:
    """The pod must be bound to ``node`` (and be the one the kubelet ran, when it says which)."""
    if pod.spec.nodeName != node:
        raise _forbidden(node, f'{what} pod "{pod.metadata.name}" bound to another node')
    if uid is not None and pod.metadata.uid != uid:
        raise errors.Conflict(f'pod "{pod.metadata.name}" was replaced (uid {pod.metadata.uid}, not {uid})')


def with_status(node: str, pod: Pod, req: NodeRequest) -> Pod | None:
    """``pod`` with the node's new status, None when it would change nothing."""
    check_pod(node, pod, req.uid, "modify")
    if req.status is None:
        raise errors.BadRequest("status is required", [errors.FieldError("status", "Required value")])
    if req.status == pod.status:
        return None
    return msgspec.structs.replace(pod, status=req.status)


def check_delete(node: str, pod: Pod, req: NodeRequest) -> None:
    check_pod(node, pod, req.uid, "delete")
    if not pod.metadata.deletionTimestamp:
        raise _forbidden(node, f'delete pod "{pod.metadata.name}", which is not terminating')


def check_secret(node: str, namespace: str, name: str, pods: Iterable[Pod]) -> None:
    """Some pod bound to ``node`` in ``namespace`` must refer to the Secret."""
    for pod in pods:
        if pod.spec.nodeName == node and (pod.metadata.namespace or "default") == namespace:
            if name in referenced_secrets(pod):
                return
    raise _forbidden(node, f'read secret "{namespace}/{name}": no pod bound to it refers to it')


def token_binding(node: str, pod: Pod, req: NodeRequest) -> satoken.Binding:
    """Whom the token asked for a pod bound to ``node`` is for: the pod's own service account."""
    check_pod(node, pod, req.uid, "request a token for")
    if req.expirationSeconds < MIN_TOKEN_SECONDS:
        raise errors.Invalid("may not specify a duration less than 10 minutes",
                             [errors.FieldError("spec.expirationSeconds", "may not specify a duration less than "
                                                "10 minutes")])
    account = pod.spec.serviceAccountName or pod.spec.serviceAccount or "default"
    return satoken.Binding(namespace=pod.metadata.namespace or "default", service_account=account,
                           pod=pod.metadata.name, pod_uid=pod.metadata.uid or "", node=node)
