"""What Helm charts put in pods, through the real kubectl against a real `kyb up` (process
runtime): securityContext with seccompProfile and friends is accepted, scheduling gates hold a
pod in SchedulingGated until `kubectl patch` removes them (adding one is refused naming the
field), and the kubelet says which fields its runtime cannot apply."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from tests.cluster import wait_until
from tests.test_apiserver_kubectl import KUBECTL, _kubectl, apiserver_up

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with apiserver_up(tmp_path_factory.mktemp("apiserver-pods") / "state") as up:
        yield up

HELM_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "chart", "labels": {"app.kubernetes.io/name": "chart"}},
    "spec": {
        "schedulingGates": [{"name": "example.com/quota"}],
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}, "runAsNonRoot": True, "runAsUser": 1000,
                            "fsGroup": 2000, "fsGroupChangePolicy": "OnRootMismatch",
                            "supplementalGroupsPolicy": "Merge"},
        "containers": [{
            "name": "app", "image": "busybox", "command": ["sleep", "3600"],
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
                                "appArmorProfile": {"type": "RuntimeDefault"}},
            "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"}],
        }],
        "terminationGracePeriodSeconds": 1,
    },
}


def test_a_helm_style_gated_pod_applies_waits_and_runs_once_ungated(cluster, tmp_path):
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(HELM_POD))
    assert _kubectl(cluster, "apply", "-f", str(path)).stdout.strip() == "pod/chart created"
    row = _kubectl(cluster, "get", "pod", "chart", "--no-headers").stdout.split()
    assert row[2] == "SchedulingGated"
    stored = json.loads(_kubectl(cluster, "get", "pod", "chart", "-o", "json").stdout)
    assert stored["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not stored["spec"].get("nodeName")

    added = _kubectl(cluster, "patch", "pod", "chart", "--type", "json", "-p",
                     '[{"op":"add","path":"/spec/schedulingGates/-","value":{"name":"example.com/more"}}]', check=False)
    assert added.returncode != 0
    assert "spec.schedulingGates[1].name" in added.stderr and "only deletion is allowed" in added.stderr

    _kubectl(cluster, "patch", "pod", "chart", "--type", "json", "-p", '[{"op":"remove","path":"/spec/schedulingGates"}]')

    def running() -> bool:
        return _kubectl(cluster, "get", "pod", "chart", "-o", "jsonpath={.status.phase}").stdout == "Running"

    wait_until(running, timeout=60, what="the ungated pod running")

    def warned() -> str | None:
        events = json.loads(_kubectl(cluster, "get", "events", "--field-selector", "involvedObject.name=chart",
                                     "-o", "json").stdout)["items"]
        noted = [e for e in events if e["reason"] == "FieldsNotEffective"]
        return noted[0]["message"] if noted else None

    message = wait_until(warned, timeout=30, what="the FieldsNotEffective event")
    assert "spec.containers[0].securityContext.seccompProfile" in message
    assert "spec.containers[0].resizePolicy" in message
    _kubectl(cluster, "delete", "pod", "chart", "--timeout=60s")


def test_a_bad_profile_is_refused_naming_its_field(cluster, tmp_path):
    bad = json.loads(json.dumps(HELM_POD))
    bad["metadata"]["name"] = "bad"
    bad["spec"]["securityContext"]["seccompProfile"] = {"type": "Localhost"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    refused = _kubectl(cluster, "apply", "-f", str(path), check=False)
    assert refused.returncode != 0
    assert "spec.securityContext.seccompProfile.localhostProfile" in refused.stderr
    assert "must be set when seccomp type is Localhost" in refused.stderr


def test_explain_knows_the_new_fields(cluster):
    gates = _kubectl(cluster, "explain", "pod.spec.schedulingGates").stdout
    assert "FIELD: schedulingGates" in gates and "name" in gates
    seccomp = _kubectl(cluster, "explain", "pod.spec.containers.securityContext.seccompProfile").stdout
    assert "localhostProfile" in seccomp and "type" in seccomp
