"""`kyb up` gives a new cluster k3s' defaults: the StorageClass ``local-path`` and the
IngressClass ``kyb``, both marked default, so a claim and an Ingress that name no class get
them at creation and work end to end. A default the user deleted stays deleted across
restarts, and ``--disable`` skips them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.cluster import wait_until

pytestmark = pytest.mark.timeout(240)


CLAIM_AND_WRITER = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  restartPolicy: Never
  containers:
  - name: w
    image: busybox
    command: [sh, -c, "echo written-by-pod > data/out.txt"]
    volumeMounts: [{name: d, mountPath: /data}]
  volumes:
  - name: d
    persistentVolumeClaim: {claimName: data}
"""

WEB = """
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers:
  - name: web
    image: python
    command: [sh, -c, "mkdir -p www && echo hello-from-web > www/index.html && exec %(py)s -m http.server --bind $POD_IP --directory www 8080"]
    ports: [{containerPort: 8080}]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  rules:
  - host: web.example.test
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: web, port: {number: 80}}}
"""


def test_claim_and_ingress_without_class_get_the_defaults_and_work(up_factory) -> None:
    up = up_factory()
    sc = up.get("storageclass", "local-path", ns="")
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert (sc["provisioner"], sc["volumeBindingMode"], sc["reclaimPolicy"]) == (
        "kybernetes.io/local-path", "WaitForFirstConsumer", "Delete")
    ic = up.get("ingressclass", "kyb", ns="")
    assert ic["spec"]["controller"] == "kybernetes.io/ingress"

    applied = up.kyb("apply", "-f", "-", input=CLAIM_AND_WRITER)
    assert applied.returncode == 0, applied.stderr
    # Written at creation, as the DefaultStorageClass admission plugin does.
    assert up.get("pvc", "data")["spec"]["storageClassName"] == "local-path"
    wait_until(lambda: (up.get("pod", "writer") or {}).get("status", {}).get("phase") == "Succeeded",
             timeout=60, what="the writer pod to succeed")
    claim = up.get("pvc", "data")
    assert claim["status"]["phase"] == "Bound"
    pv = up.get("pv", claim["spec"]["volumeName"], ns="")
    path = Path(pv["spec"]["hostPath"]["path"] if pv["spec"].get("hostPath") else pv["spec"]["local"]["path"])
    assert (path / "out.txt").read_text() == "written-by-pod\n"

    applied = up.kyb("apply", "-f", "-", input=WEB % {"py": sys.executable})
    assert applied.returncode == 0, applied.stderr
    assert up.get("ingress", "web")["spec"]["ingressClassName"] == "kyb"
    listed = up.kyb("get", "ing", "web")
    assert "kyb" in listed.stdout.splitlines()[1].split(), listed.stdout  # CLASS column

    def address() -> str | None:
        lb = (up.get("ingress", "web") or {}).get("status", {}).get("loadBalancer", {}).get("ingress") or []
        return lb[0].get("ip") if lb else None

    ip = wait_until(address, timeout=60, what="the Ingress to get an address")
    assert ip.startswith("127.")

    def routed() -> str | None:
        try:
            r = httpx.get(f"http://{ip}:{up.ingress_port}/", headers={"Host": "web.example.test"}, timeout=2)
        except httpx.HTTPError:
            return None
        return r.text if r.status_code == 200 else None

    assert wait_until(routed, timeout=60, what="the Ingress to route by Host") == "hello-from-web\n"
    other = httpx.get(f"http://{ip}:{up.ingress_port}/", headers={"Host": "other.example.test"}, timeout=5)
    assert other.status_code == 404

    # a default the user deleted stays deleted when kyb up starts again on the same data
    deleted = up.kyb("delete", "storageclass", "local-path")
    assert deleted.returncode == 0, deleted.stderr
    up.stop()
    again = up_factory(data=up.data)
    assert again.get("storageclass", "local-path", ns="") is None
    assert again.get("ingressclass", "kyb", ns="") is not None  # the other default is untouched


def test_disable_skips_the_defaults(up_factory, tmp_path) -> None:
    bare = up_factory("--disable", "local-path,ingressclass", data=tmp_path / "bare")
    assert bare.get("storageclass", "local-path", ns="") is None
    assert bare.get("ingressclass", "kyb", ns="") is None
    claim = bare.kyb("apply", "-f", "-", input=CLAIM_AND_WRITER.split("---")[0])
    assert claim.returncode == 0, claim.stderr
    assert bare.get("pvc", "data")["spec"].get("storageClassName") is None  # no default to write


def test_disable_names_unknown_defaults(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "kyb.cli.main", "up", "--data-dir", str(tmp_path),
                           "--disable", "traefik"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "traefik" in done.stderr and "local-path" in done.stderr and "--disable" in done.stderr
