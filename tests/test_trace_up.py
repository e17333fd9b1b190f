"""`kyb trace` on `kyb up` as a user runs it (secured, every service in one process): one
trace from the apply through the api, the controllers and the scheduler's binding to the
kubelet starting the container, with the Docker and the process runtime."""

from __future__ import annotations

import pytest

from tests.cluster import wait_until

pytestmark = pytest.mark.timeout(180)

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: traced}
spec:
  replicas: 1
  selector: {matchLabels: {app: traced}}
  template:
    metadata: {labels: {app: traced}}
    spec:
      containers:
      - name: main
        image: %(image)s
        imagePullPolicy: Never
        command: [sleep, "3600"]
"""


def _trace_reaches_the_kubelet(up, image: str) -> None:
    applied = up.kyb("apply", "-f", "-", input=DEPLOYMENT % {"image": image})
    assert applied.returncode == 0, applied.stderr

    def complete() -> str | None:
        out = up.kyb("trace", "deploy/traced").stdout
        return out if "start container main" in out else None

    out = wait_until(complete, timeout=60, what="a trace of deploy/traced reaching the kubelet")
    lines = out.splitlines()
    assert lines[0].startswith("deployment/traced  trace ")
    steps = ["api.apply", "reconcile deployment default.traced", "kv.create replicasets", "kv.create pods",
             "schedule default.traced-", "reconcile kubelet default.traced-", "start container main"]
    positions = []
    for step in steps:
        found = [i for i, line in enumerate(lines) if step in line]
        assert found, f"{step!r} missing from the trace:\n{out}"
        positions.append(found[0])
    assert positions == sorted(positions), out  # each step below the one that caused it


def test_trace_on_kyb_up_process_runtime(up_factory) -> None:
    _trace_reaches_the_kubelet(up_factory(runtime="process"), "busybox")


@pytest.mark.docker
def test_trace_on_kyb_up_docker_runtime(up_factory, docker_engine) -> None:
    from tests.images import build_busybox_image

    _trace_reaches_the_kubelet(up_factory(runtime="docker"), build_busybox_image(docker_engine))
