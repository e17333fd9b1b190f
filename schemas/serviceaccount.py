"""Kubernetes' ServiceAccount admission, the part that mounts the API credentials: a new pod
gets the projected volume ``kube-api-access-<5 characters>`` (its account's token, the
cluster's CA from ConfigMap ``kube-root-ca.crt``, its namespace) mounted read-only at
``/var/run/secrets/kubernetes.io/serviceaccount`` in every container, unless the pod or its
ServiceAccount says ``automountServiceAccountToken: false``. Pure: the caller says whether the
cluster issues tokens and passes the account and the random suffix."""

from __future__ import annotations

from msgspec.structs import replace

from schemas.core import ServiceAccount
from schemas.pod import (
    ConfigMapProjection,
    Container,
    DownwardAPIProjection,
    DownwardAPIVolumeFile,
    KeyToPath,
    ObjectFieldSelector,
    Pod,
    ProjectedVolumeSource,
    ServiceAccountTokenProjection,
    Volume,
    VolumeMount,
    VolumeProjection,
)

MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
VOLUME_PREFIX = "kube-api-access-"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
TOKEN_SECONDS = 3607  # Kubernetes' warn-after-an-hour-and-7-seconds default
SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # utilrand.String's, as in generated names


def wants_token(pod: Pod, account: ServiceAccount | None) -> bool:
    """Whether admission mounts the API credentials: the pod's setting, else its account's."""
    if pod.spec.automountServiceAccountToken is not None:
        return pod.spec.automountServiceAccountToken
    return account is None or account.automountServiceAccountToken is not False


def api_access_volume(name: str) -> Volume:
    return Volume(name=name, projected=ProjectedVolumeSource(defaultMode=0o644, sources=[
        VolumeProjection(serviceAccountToken=ServiceAccountTokenProjection(expirationSeconds=TOKEN_SECONDS,
                                                                           path="token")),
        VolumeProjection(configMap=ConfigMapProjection(name=ROOT_CA_CONFIGMAP,
                                                       items=[KeyToPath(key="ca.crt", path="ca.crt")])),
        VolumeProjection(downwardAPI=DownwardAPIProjection(items=[DownwardAPIVolumeFile(
            path="namespace", fieldRef=ObjectFieldSelector(apiVersion="v1", fieldPath="metadata.namespace"))])),
    ]))


def _mounted(c: Container, name: str) -> Container:
    if any(m.mountPath.rstrip("/") == MOUNT_PATH for m in c.volumeMounts):
        return c  # the pod mounts something there itself
    return replace(c, volumeMounts=[*c.volumeMounts, VolumeMount(name=name, mountPath=MOUNT_PATH, readOnly=True)])


def with_api_access(pod: Pod, suffix: str) -> Pod:
    """``pod`` with the ``kube-api-access-<suffix>`` volume and its mount in each container
    (one that mounts something at the path already is left alone); a pod that has such a
    volume already is returned as it is."""
    if any(v.name.startswith(VOLUME_PREFIX) and v.projected is not None for v in pod.spec.volumes):
        return pod
    name = VOLUME_PREFIX + suffix
    spec = replace(pod.spec, volumes=[*pod.spec.volumes, api_access_volume(name)],
                   containers=[_mounted(c, name) for c in pod.spec.containers],
                   initContainers=[_mounted(c, name) for c in pod.spec.initContainers])
    return replace(pod, spec=spec)
