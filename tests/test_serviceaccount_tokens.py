"""A pod's projected service account token, end to end on a real `kyb up`: the kubelet writes
the token the api signs, the cluster's CA (ConfigMap kube-root-ca.crt, in every namespace) and
the namespace into the running container, as the volume Kubernetes gives every pod; the
apiserver accepts the token as the pod's service account, and stops accepting it once the pod
it is bound to is gone (Kubernetes' bound tokens)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import jwt
import pytest

from tests.cluster import wait_until
from tests.images import BUSYBOX_TAG
from tests.kybup import Up

SA = "var/run/secrets/kubernetes.io/serviceaccount"


@pytest.fixture
def up(tmp_path):
    cluster = Up(tmp_path / "state")
    try:
        yield cluster
    finally:
        cluster.stop()


# What the default account of namespace default may do, RBAC being enforced: read its pods.
READS_PODS = (
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
     "metadata": {"name": "pod-reader", "namespace": "default"},
     "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
     "metadata": {"name": "default-reads-pods", "namespace": "default"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
     "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}]},
)


def call(up: Up, path: str, token: str, cafile: Path | None = None) -> int:
    ctx = ssl.create_default_context(cafile=str(cafile or up.data / "apiserver" / "ca.crt"))
    req = urllib.request.Request(f"https://127.0.0.1:{up.apiserver_port}{path}",
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            json.loads(resp.read())
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_the_token_in_a_pod_authenticates_to_the_apiserver_until_the_pod_goes(up: Up, tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "namespace": "default"},
        "spec": {
            "containers": [{"name": "c", "image": BUSYBOX_TAG, "imagePullPolicy": "Never",
                            "command": ["sh", "-c", f"cp {SA}/ca.crt {SA}/namespace data/ && "
                                        f"cp {SA}/token data/token.tmp && mv data/token.tmp data/token; sleep 3600"],
                            "volumeMounts": [{"name": "kube-api-access-x2k9p", "mountPath": f"/{SA}",
                                              "readOnly": True},
                                             {"name": "data", "mountPath": "/data"}]}],
            # the volume Kubernetes adds to every pod, as `kubectl get pod -o yaml` shows it
            "volumes": [{"name": "kube-api-access-x2k9p", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                                            "path": "namespace"}]}}]}},
                        {"name": "data", "hostPath": {"path": str(data)}}],
        },
    }
    for manifest in (*READS_PODS, pod):
        done = up.kyb("apply", "-f", "-", input=json.dumps(manifest))
        assert done.returncode == 0, done.stderr
    token_file = data / "token"
    wait_until(token_file.exists, timeout=60, what="the token inside the pod")
    token = token_file.read_text()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "system:serviceaccount:default:default"
    assert claims["kubernetes.io"]["pod"]["name"] == "client"
    assert claims["exp"] - claims["iat"] == 3607
    assert (data / "namespace").read_text() == "default"
    # an in-cluster client: the pod's token, the cluster's CA from kube-root-ca.crt
    assert (data / "ca.crt").read_text() == (up.data / "apiserver" / "ca.crt").read_text()
    assert call(up, "/api/v1/namespaces/default/pods", token, cafile=data / "ca.crt") == 200
    assert call(up, "/api/v1/namespaces/default/pods", token[:-3] + "abc") == 401  # tampered

    done = up.kyb("delete", "pod", "client")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: call(up, "/api/v1/namespaces/default/pods", token) == 401, timeout=60,
               what="the deleted pod's token refused")
