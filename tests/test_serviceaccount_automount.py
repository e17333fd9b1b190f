"""Kubernetes' ServiceAccount admission mounting the API credentials: every new pod gets the
kube-api-access-* volume (token, CA, namespace) at /var/run/secrets/kubernetes.io/serviceaccount
unless it or its account opts out, where the cluster issues tokens (its namespace holds
kube-root-ca.crt) -- the rule (schemas.serviceaccount), the store's admission on a real
nats-server, and a pod on a real `kyb up` reaching the apiserver with what it was given."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest

from schemas import serviceaccount
from schemas.core import ServiceAccount
from schemas.validation import decode
from tests.cluster import wait_until
from tests.images import BUSYBOX_TAG
from tests.test_serviceaccount_tokens import READS_PODS, SA, call, up  # noqa: F401  (fixture)

MOUNT = serviceaccount.MOUNT_PATH


def pod(**spec):
    return decode({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                   "spec": {"containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox",
                            "volumeMounts": [{"name": "mine", "mountPath": MOUNT + "/"}]}],
                            "initContainers": [{"name": "i", "image": "busybox"}],
                            "volumes": [{"name": "mine", "emptyDir": {}}], **spec}})


def account(automount: bool | None) -> ServiceAccount:
    return ServiceAccount(metadata={"name": "default"}, automountServiceAccountToken=automount)  # type: ignore[arg-type]


def test_the_volume_and_mounts_kubernetes_gives_a_pod():
    p = serviceaccount.with_api_access(pod(), "x2k9p")
    volume = p.spec.volumes[-1]
    assert volume.name == "kube-api-access-x2k9p" and volume.projected.defaultMode == 0o644
    sources = volume.projected.sources
    assert sources[0].serviceAccountToken.expirationSeconds == 3607 and sources[0].serviceAccountToken.path == "token"
    assert sources[1].configMap.name == "kube-root-ca.crt" and sources[1].configMap.items[0].path == "ca.crt"
    assert sources[2].downwardAPI.items[0].fieldRef.fieldPath == "metadata.namespace"
    mounts = {c.name: [(m.name, m.mountPath, m.readOnly) for m in c.volumeMounts]
              for c in [*p.spec.containers, *p.spec.initContainers]}
    assert mounts["a"] == [("kube-api-access-x2k9p", MOUNT, True)]
    assert mounts["i"] == [("kube-api-access-x2k9p", MOUNT, True)]
    assert mounts["b"] == [("mine", MOUNT + "/", False)]  # its own mount at the path is kept
    assert serviceaccount.with_api_access(p, "other") == p  # one such volume is enough


@pytest.mark.parametrize("pod_says,account_says,mounted", [
    (None, None, True), (None, True, True), (None, False, False),
    (True, False, True), (False, True, False), (False, None, False)])
def test_who_decides_to_mount(pod_says, account_says, mounted):
    p = pod(**({} if pod_says is None else {"automountServiceAccountToken": pod_says}))
    assert serviceaccount.wants_token(p, account(account_says)) is mounted


async def test_new_pods_get_the_credentials_where_the_cluster_issues_them(api):
    client, _ = api
    await client.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "issuing"}})
    await client.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "plain"}})
    await client.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt",
                        "namespace": "issuing"}, "data": {"ca.crt": "PEM"}})
    await client.apply({"apiVersion": "v1", "kind": "ServiceAccount",
                        "metadata": {"name": "quiet", "namespace": "issuing"}, "automountServiceAccountToken": False})

    def manifest(name: str, ns: str, **spec) -> dict:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
                "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}

    def volumes(p: dict) -> list[str]:
        return [v["name"] for v in p["spec"].get("volumes", [])]

    mounted, _ = await client.apply(manifest("auto", "issuing"))
    [name] = volumes(mounted)
    assert name.startswith("kube-api-access-") and len(name) == len("kube-api-access-") + 5
    [mount] = mounted["spec"]["containers"][0]["volumeMounts"]
    assert (mount["name"], mount["mountPath"], mount["readOnly"]) == (name, MOUNT, True)
    optout, _ = await client.apply(manifest("optout", "issuing", automountServiceAccountToken=False))
    assert volumes(optout) == []
    quiet, _ = await client.apply(manifest("quiet", "issuing", serviceAccountName="quiet"))
    assert volumes(quiet) == []
    nobody, _ = await client.apply(manifest("nobody", "issuing", serviceAccountName="missing"))
    assert volumes(nobody) == []
    plain, _ = await client.apply(manifest("plain", "plain"))
    assert volumes(plain) == []  # a cluster that issues no tokens mounts none


def test_a_pod_reaches_the_apiserver_with_the_credentials_it_was_given(up, tmp_path: Path):  # noqa: F811
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "incluster"}, "spec": {
        "containers": [{"name": "c", "image": BUSYBOX_TAG, "imagePullPolicy": "Never",
                        "command": ["sh", "-c", f"cp {SA}/ca.crt {SA}/namespace data/ && "
                                    f"cp {SA}/token data/token.tmp && mv data/token.tmp data/token; sleep 3600"],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        "volumes": [{"name": "data", "hostPath": {"path": str(data)}}]}}
    for manifest in (*READS_PODS, pod):
        done = up.kyb("apply", "-f", "-", input=json.dumps(manifest))
        assert done.returncode == 0, done.stderr
    token_file = data / "token"
    wait_until(token_file.exists, timeout=60, what="the token inside the pod")
    claims = jwt.decode(token_file.read_text(), options={"verify_signature": False})
    assert claims["sub"] == "system:serviceaccount:default:default"
    assert claims["kubernetes.io"]["pod"]["name"] == "incluster"
    assert (data / "namespace").read_text() == "default"
    assert call(up, "/api/v1/namespaces/default/pods", token_file.read_text(), cafile=data / "ca.crt") == 200
    shown = json.loads(up.kyb("get", "pod", "incluster", "-o", "json").stdout)
    assert any(v["name"].startswith("kube-api-access-") for v in shown["spec"]["volumes"])
