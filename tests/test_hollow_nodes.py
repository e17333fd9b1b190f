"""`kyb hollow-nodes` against a real `kyb up`: hollow Nodes register Ready, a Deployment that
tolerates them runs there without containers, real workloads stay off them, and Ctrl-C takes
the Nodes away again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.cluster import wait_until

pytestmark = pytest.mark.timeout(180)

ON_HOLLOW = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: scale}
spec:
  replicas: 6
  selector: {matchLabels: {app: scale}}
  template:
    metadata: {labels: {app: scale}}
    spec:
      nodeSelector: {type: hollow}
      tolerations: [{key: kybernetes.io/hollow, operator: Exists, effect: NoSchedule}]
      containers: [{name: c, image: anything, command: [sleep, "3600"]}]
"""

PLAIN = """
apiVersion: v1
kind: Pod
metadata: {name: plain}
spec:
  containers: [{name: c, image: busybox, command: [sleep, "3600"]}]
"""


def test_hollow_nodes_run_pods_that_tolerate_them_and_leave_on_ctrl_c(up_factory) -> None:
    up = up_factory()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KYB_NATS_")}
    env["KYB_DATA_DIR"] = str(up.data)  # as a user after `kyb up`: the admin's file; system.creds beside it
    proc = subprocess.Popen([sys.executable, "-m", "kyb.cli.main", "--nats", up.url, "hollow-nodes", "--count", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        first = proc.stdout.readline().strip()
        assert first == "3 hollow nodes running (hollow-0 .. hollow-2); Ctrl-C stops them", first

        def nodes() -> dict[str, dict]:
            return {n["metadata"]["name"]: n for n in json.loads(up.kyb("get", "nodes", "-o", "json").stdout)["items"]}

        hollow = {n: v for n, v in nodes().items() if n.startswith("hollow-")}
        assert sorted(hollow) == ["hollow-0", "hollow-1", "hollow-2"]
        assert all(any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
                   for n in hollow.values())
        assert up.kyb("apply", "-f", "-", input=ON_HOLLOW + "---" + PLAIN).returncode == 0

        def placed() -> list[dict] | None:
            pods = json.loads(up.kyb("get", "pods", "-o", "json").stdout)["items"]
            scale = [p for p in pods if p["metadata"]["name"].startswith("scale-")]
            running = [p for p in scale if p["status"].get("phase") == "Running"
                       and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"]["conditions"])]
            plain = [p for p in pods if p["metadata"]["name"] == "plain" and p["status"].get("phase") == "Running"]
            return pods if len(running) == 6 and plain else None

        pods = wait_until(placed, timeout=60, what="6 pods Ready on hollow nodes and the plain pod running")
        by_name = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods}
        assert all(by_name[n].startswith("hollow-") for n in by_name if n.startswith("scale-"))
        assert by_name["plain"] == up.node  # the taint keeps pods that do not tolerate it off them
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    assert not [n for n in json.loads(up.kyb("get", "nodes", "-o", "json").stdout)["items"]
                if n["metadata"]["name"].startswith("hollow-")]
