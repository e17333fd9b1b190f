"""A pod's projected service account token, end to end on a real `kyb up`: the kubelet writes
the token the api signs into the running container, the apiserver accepts it as the pod's
service account, and stops accepting it once the pod it is bound to is gone (Kubernetes'
bound tokens)."""

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


@pytest.fixture
def up(tmp_path):
    cluster = Up(tmp_path / "state")
    try:
        yield cluster
    finally:
        cluster.stop()


def call(up: Up, path: str, token: str) -> int:
    ctx = ssl.create_default_context(cafile=str(up.data / "apiserver" / "ca.crt"))
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
                            "command": ["sh", "-c", "cp sa/token data/token.tmp && mv data/token.tmp data/token; "
                                        "sleep 3600"],
                            "volumeMounts": [{"name": "sa", "mountPath": "/sa"},
                                             {"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "sa", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
                        {"name": "data", "hostPath": {"path": str(data)}}],
        },
    }
    # what the account may do, should RBAC be enforced: list the namespace's pods
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "pod-reader", "namespace": "default"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "default-reads-pods", "namespace": "default"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
               "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}]}
    for manifest in (role, binding, pod):
        done = up.kyb("apply", "-f", "-", input=json.dumps(manifest))
        assert done.returncode == 0, done.stderr
    token_file = data / "token"
    wait_until(token_file.exists, timeout=60, what="the token inside the pod")
    token = token_file.read_text()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "system:serviceaccount:default:default"
    assert claims["kubernetes.io"]["pod"]["name"] == "client"
    assert claims["exp"] - claims["iat"] == 3600

    assert call(up, "/api/v1/namespaces/default/pods", token) == 200
    assert call(up, "/api/v1/namespaces/default/pods", token[:-3] + "abc") == 401  # tampered

    done = up.kyb("delete", "pod", "client")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: call(up, "/api/v1/namespaces/default/pods", token) == 401, timeout=60,
               what="the deleted pod's token refused")
