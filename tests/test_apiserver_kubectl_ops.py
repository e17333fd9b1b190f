"""kubectl's day-two commands against a real `kyb up` (process runtime): describe with Events,
drain through pods/eviction, rollouts, waits, edits, diffs, access reviews. Real kubectl v1.32,
no mocks."""

from __future__ import annotations

import json
import os

import pytest

from tests.cluster import wait_until
from tests.test_apiserver_kubectl import KUBECTL, _kubectl

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")


def deployment(name: str, image: str = "busybox", replicas: int = 1) -> str:
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {image}
        command: ["sleep", "3600"]
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from tests.kybup import Up

    up = Up(tmp_path_factory.mktemp("apiserver-ops") / "state")
    try:
        wait_until(lambda: _kubectl(up, "get", "--raw", "/version", check=False).returncode == 0, timeout=30,
                   what="the apiserver")
        yield up
    finally:
        up.stop()


def _pods(cluster, selector: str) -> list[dict]:
    return json.loads(_kubectl(cluster, "get", "pods", "-l", selector, "-o", "json").stdout)["items"]


def _running(cluster, selector: str, count: int = 1) -> bool:
    pods = _pods(cluster, selector)
    return len(pods) == count and all((p.get("status") or {}).get("phase") == "Running"
                                      and not p["metadata"].get("deletionTimestamp") for p in pods)


def test_describe_shows_events_and_get_events(cluster):
    _kubectl(cluster, "apply", "-f", "-", input=deployment("described"))
    wait_until(lambda: _running(cluster, "app=described"), timeout=60, what="the pod running")
    [pod] = _pods(cluster, "app=described")
    name = pod["metadata"]["name"]

    def described() -> str | None:
        out = _kubectl(cluster, "describe", "pod", name).stdout
        return out if "Scheduled" in out.split("Events:")[-1] else None

    text = wait_until(described, timeout=30, what="the pod's Scheduled event in kubectl describe")
    assert "Events:" in text and "<none>" not in text.split("Events:")[-1]
    events = json.loads(_kubectl(cluster, "get", "events", "-o", "json").stdout)["items"]
    assert any(e["involvedObject"]["name"] == name and e["reason"] == "Scheduled" for e in events)
    table = _kubectl(cluster, "get", "events").stdout
    assert table.split("\n")[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert f"pod/{name}" in table
    selected = json.loads(_kubectl(cluster, "get", "events", "--field-selector",
                                   f"involvedObject.name={name},reason=Scheduled", "-o", "json").stdout)["items"]
    assert selected and all(e["involvedObject"]["name"] == name for e in selected)
    v1 = json.loads(_kubectl(cluster, "get", "--raw", f"/apis/events.k8s.io/v1/namespaces/default/events"
                             f"?fieldSelector=regarding.name%3D{name}").stdout)["items"]
    assert v1 and v1[0]["regarding"]["name"] == name and v1[0]["apiVersion"] == "events.k8s.io/v1"
    assert "eventTime" in v1[0]
    listed = _kubectl(cluster, "events", "--for", f"pod/{name}").stdout
    assert "Scheduled" in listed
    _kubectl(cluster, "delete", "deploy", "described")


def test_auth_can_i(cluster):
    assert _kubectl(cluster, "auth", "can-i", "create", "pods").stdout.strip() == "yes"
    assert _kubectl(cluster, "auth", "can-i", "delete", "nodes", "--all-namespaces").stdout.strip() == "yes"
    listed = _kubectl(cluster, "auth", "can-i", "--list").stdout
    assert "*.*" in listed
