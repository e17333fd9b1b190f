"""The columns `kyb get` prints: AGE as kubectl formats it, a pod's STATUS as kubectl derives it,
and the per-kind tables."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kyb.cli import describe, output, printers

NOW = dt.datetime(2026, 1, 10, 12, 0, 0, tzinfo=dt.UTC)


def ago(seconds: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0, "0s", id="now"),
        pytest.param(-1, "0s", id="clock-skew-tolerated"),
        pytest.param(-5, "<invalid>", id="future"),
        pytest.param(5, "5s", id="seconds"),
        pytest.param(119, "119s", id="seconds-up-to-two-minutes"),
        pytest.param(182, "3m2s", id="minutes-and-seconds"),
        pytest.param(300, "5m", id="whole-minutes"),
        pytest.param(15 * 60 + 7, "15m", id="minutes"),
        pytest.param(4 * 3600, "4h", id="hours"),
        pytest.param(4 * 3600 + 30 * 60, "4h30m", id="hours-and-minutes"),
        pytest.param(30 * 3600, "30h", id="hours-up-to-two-days"),
        pytest.param(2 * 86400, "2d", id="days"),
        pytest.param(2 * 86400 + 5 * 3600, "2d5h", id="days-and-hours"),
        pytest.param(40 * 86400, "40d", id="many-days"),
        pytest.param(3 * 365 * 86400 + 30 * 86400, "3y30d", id="years-and-days"),
    ],
)
def test_age_is_formatted_as_kubectl_does(seconds: float, text: str) -> None:
    assert printers.human_duration(seconds) == text
    if seconds >= 0:
        assert printers.age(ago(seconds), NOW) == text


@given(st.integers(min_value=0, max_value=20 * 365 * 86400))
def test_age_is_short_and_never_overstates(seconds: int) -> None:
    text = printers.human_duration(seconds)
    assert re.fullmatch(r"(\d+[ydhms]){1,2}", text), text
    units = {"y": 365 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
    shown = sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([ydhms])", text))
    assert shown <= seconds


def pod(phase="Running", statuses=None, deleting=False, init=None, containers=1, **status):
    meta = {"name": "p", "namespace": "default", "creationTimestamp": ago(65)}
    if deleting:
        meta["deletionTimestamp"] = ago(1)
    return {
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": f"c{i}"} for i in range(containers)],
                 "initContainers": [{"name": "i"}] * len(init or [])},
        "status": {"phase": phase, "containerStatuses": statuses or [], "initContainerStatuses": init or [],
                   **status},
    }


RUNNING = {"name": "c0", "ready": True, "restartCount": 0, "state": {"running": {"startedAt": ago(60)}}}


@pytest.mark.parametrize(
    ("obj", "status"),
    [
        pytest.param(pod("Pending"), "Pending", id="phase"),
        pytest.param(pod(statuses=[RUNNING]), "Running", id="running"),
        pytest.param(pod("Pending", [{"ready": False, "state": {"waiting": {"reason": "ContainerCreating"}}}]),
                     "ContainerCreating", id="waiting-reason"),
        pytest.param(pod(statuses=[{"ready": False, "restartCount": 4,
                                    "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]),
                     "CrashLoopBackOff", id="crash-loop"),
        pytest.param(pod("Pending", [{"state": {"waiting": {"reason": "ImagePullBackOff"}}}]),
                     "ImagePullBackOff", id="image-pull"),
        pytest.param(pod("Succeeded", [{"state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]),
                     "Completed", id="terminated-reason"),
        pytest.param(pod("Failed", [{"state": {"terminated": {"exitCode": 3}}}]), "ExitCode:3", id="exit-code"),
        pytest.param(pod("Failed", [{"state": {"terminated": {"exitCode": 137, "signal": 9}}}]),
                     "Signal:9", id="signal"),
        pytest.param(pod(statuses=[RUNNING], deleting=True), "Terminating", id="terminating"),
        pytest.param(pod("Pending", init=[{"state": {"running": {}}}]), "Init:0/1", id="init-running"),
        pytest.param(pod("Pending", init=[{"state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]),
                     "Init:Error", id="init-failed"),
        pytest.param(pod("Pending", init=[{"state": {"waiting": {"reason": "CrashLoopBackOff"}}}]),
                     "Init:CrashLoopBackOff", id="init-crash-loop"),
        pytest.param(pod("Running", [RUNNING, {"name": "c1", "state": {"terminated": {"exitCode": 0, "reason":
                     "Completed"}}}], containers=2, conditions=[{"type": "Ready", "status": "False"}]),
                     "NotReady", id="completed-sidecar-while-another-runs"),
        pytest.param(pod("Running", reason="Evicted"), "Evicted", id="pod-reason"),
    ],
)
def test_pod_status_is_derived_as_kubectl_does(obj: dict, status: str) -> None:
    assert printers.pod_status(obj) == status


def test_pod_table_shows_ready_restarts_and_wide_columns() -> None:
    crashed = dict(RUNNING, restartCount=3, lastState={"terminated": {"finishedAt": ago(120)}})
    p = pod(statuses=[crashed, dict(RUNNING, name="c1", ready=False)], containers=2, podIP="127.1.0.5")
    p["spec"]["nodeName"] = "n1"
    head, rows = printers.table("Pod", [p], NOW, wide=True)
    assert head == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
    assert rows == [["p", "1/2", "Running", "3 (2m ago)", "65s", "127.1.0.5", "n1", "<none>", "<none>"]]
    p["status"]["nominatedNodeName"] = "n2"
    p["spec"]["readinessGates"] = [{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]
    p["status"]["conditions"] = [{"type": "example.com/lb", "status": "True"}]
    _, rows = printers.table("Pod", [p], NOW, wide=True)
    assert rows[0][7:] == ["n2", "1/2"]


def test_a_started_sidecar_counts_in_ready_and_restarts_and_leaves_the_init_sequence() -> None:
    side = {"name": "proxy", "ready": True, "started": True, "restartCount": 2,
            "state": {"running": {"startedAt": ago(30)}}, "lastState": {"terminated": {"finishedAt": ago(31)}}}
    p = pod(statuses=[RUNNING], init=[side], conditions=[{"type": "Initialized", "status": "True"}])
    p["spec"]["initContainers"] = [{"name": "proxy", "restartPolicy": "Always"}]
    _, rows = printers.table("Pod", [p], NOW)
    assert rows == [["p", "2/2", "Running", "2 (31s ago)", "65s"]]
    starting = pod("Pending", init=[dict(side, started=False, ready=False, restartCount=0)])
    starting["spec"]["initContainers"] = [{"name": "proxy", "restartPolicy": "Always"}]
    assert printers.pod_status(starting) == "Init:0/1" and printers.pod_ready(starting) == "0/2"


def test_all_namespaces_adds_the_namespace_column_first() -> None:
    head, rows = printers.table("ConfigMap", [{"metadata": {"name": "c", "namespace": "team",
                                               "creationTimestamp": ago(5)}, "data": {"a": "1", "b": "2"}}],
                                NOW, all_namespaces=True)
    assert head == ["NAMESPACE", "NAME", "DATA", "AGE"]
    assert rows == [["team", "c", "2", "5s"]]


def test_workload_tables() -> None:
    deploy = {"metadata": {"name": "web", "creationTimestamp": ago(10)}, "spec": {"replicas": 3},
              "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    assert printers.table("Deployment", [deploy], NOW) == (
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], [["web", "2/3", "3", "2", "10s"]])
    rs = {"metadata": {"name": "web-1", "creationTimestamp": ago(10)}, "spec": {"replicas": 3},
          "status": {"replicas": 3, "readyReplicas": 1}}
    assert printers.table("ReplicaSet", [rs], NOW)[1] == [["web-1", "3", "3", "1", "10s"]]
    job = {"metadata": {"name": "j", "creationTimestamp": ago(100)}, "spec": {"completions": 5},
           "status": {"succeeded": 2, "startTime": ago(90)}}
    assert printers.table("Job", [job], NOW)[1] == [["j", "2/5", "90s", "100s"]]
    done = dict(job, status={"succeeded": 5, "startTime": ago(90), "completionTime": ago(30)})
    assert printers.table("Job", [done], NOW)[1] == [["j", "5/5", "60s", "100s"]]


def test_service_node_and_storage_tables() -> None:
    svc = {"metadata": {"name": "web", "creationTimestamp": ago(3)},
           "spec": {"type": "NodePort", "clusterIP": "127.200.0.4",
                    "ports": [{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP"}]}}
    assert printers.table("Service", [svc], NOW)[1] == [["web", "NodePort", "127.200.0.4", "<none>",
                                                          "80:30080/TCP,53/UDP", "3s"]]
    lb = dict(svc, spec={"type": "LoadBalancer", "clusterIP": "127.200.0.5", "ports": [{"port": 443}]})
    assert printers.table("Service", [lb], NOW)[1][0][3] == "<pending>"
    node = {"metadata": {"name": "n1", "creationTimestamp": ago(7200),
                         "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": True},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v0.1.0"}}}
    assert printers.table("Node", [node], NOW)[1] == [["n1", "Ready,SchedulingDisabled", "control-plane", "120m",
                                                        "v0.1.0"]]
    not_ready = dict(node, spec={}, status={"conditions": [{"type": "Ready", "status": "Unknown"}]})
    assert printers.node_status(not_ready) == "NotReady"
    pvc = {"metadata": {"name": "data", "creationTimestamp": ago(1)}, "spec": {"volumeName": "pv1",
           "storageClassName": "local"}, "status": {"phase": "Bound", "capacity": {"storage": "1Gi"},
                                                    "accessModes": ["ReadWriteOnce"]}}
    assert printers.table("PersistentVolumeClaim", [pvc], NOW)[1] == [["data", "Bound", "pv1", "1Gi", "RWO",
                                                                        "local", "1s"]]


def test_unknown_kinds_get_name_and_age_and_events_list_what_they_are_about() -> None:
    assert printers.table("Widget", [{"metadata": {"name": "w", "creationTimestamp": ago(1)}}], NOW) == (
        ["NAME", "AGE"], [["w", "1s"]])
    ev = {"metadata": {"name": "web.1"}, "involvedObject": {"kind": "Pod", "name": "web-x"},
          "reason": "Scheduled", "message": "assigned to n1", "type": "Normal", "lastTimestamp": ago(4)}
    assert printers.table("Event", [ev], NOW) == (["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
                                                  [["4s", "Normal", "Scheduled", "pod/web-x", "assigned to n1"]])


def test_rendered_table_is_aligned_plain_text() -> None:
    text = output.render_table(["NAME", "STATUS"], [["a-long-name", "[bold]Running"], ["b", "Pending"]])
    assert text.splitlines() == ["NAME          STATUS", "a-long-name   [bold]Running", "b             Pending"]


def test_describe_lists_metadata_fields_then_spec_then_events() -> None:
    obj = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "fe"}},
           "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
           "status": {"phase": "Running", "podIP": "127.1.0.2"}}
    ev = {"type": "Warning", "reason": "BackOff", "message": "restarting", "count": 3,
          "firstTimestamp": ago(300), "lastTimestamp": ago(10), "source": {"component": "kubelet"}}
    text = describe.describe(obj, [ev], NOW)
    lines = text.splitlines()
    assert lines[0].split() == ["Name:", "web"]
    assert lines[2].split() == ["Labels:", "app=web"] and lines[3].strip() == "tier=fe"
    assert "  Node Name:  n1" in lines and "  Pod IP:  127.1.0.2" in lines
    assert "    - Name:  c" in lines
    assert lines[-4] == "Events:" and lines[-3].split() == ["Type", "Reason", "Age", "From", "Message"]
    assert lines[-1].split()[:5] == ["Warning", "BackOff", "10s", "(x3", "over"]
    assert describe.describe(obj, [], NOW).splitlines()[-1] == "Events:  <none>"


def test_labels_column_is_sorted_by_key_and_says_none_when_empty():
    from kyb.cli.printers import labels_text

    assert labels_text({"tier": "db", "app": "web"}) == "app=web,tier=db"
    assert labels_text({}) == "<none>"
