"""kubectl's day-two commands against a real `kyb up` (process runtime): describe with Events,
drain through pods/eviction, rollouts, waits, edits, diffs, access reviews. Real kubectl v1.32,
no mocks."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.cluster import wait_until
from tests.test_apiserver_kubectl import KUBECTL, _kubectl, apiserver_up

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
    # pod traffic stays on 127/8
    with apiserver_up(tmp_path_factory.mktemp("apiserver-ops") / "state", "--network", "loopback") as up:
        yield up


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


def _node(cluster) -> dict:
    return json.loads(_kubectl(cluster, "get", "node", cluster.node, "-o", "json").stdout)


def test_cordon_drain_uncordon(cluster):
    _kubectl(cluster, "apply", "-f", "-", input=deployment("drained"))
    _kubectl(cluster, "apply", "-f", "-", input="""\
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: everywhere}
spec:
  selector: {matchLabels: {app: everywhere}}
  template:
    metadata: {labels: {app: everywhere}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{name: main, image: busybox, command: [sleep, "3600"]}]
""")
    wait_until(lambda: _running(cluster, "app=drained") and _running(cluster, "app=everywhere"), timeout=60,
               what="the deployment's and the daemon set's pods running")
    [before] = _pods(cluster, "app=drained")
    assert _kubectl(cluster, "cordon", cluster.node).stdout.strip() == f"node/{cluster.node} cordoned"
    assert _node(cluster)["spec"]["unschedulable"] is True
    # a PodDisruptionBudget that allows nothing: kubectl drain says so, retries, and gives up
    _kubectl(cluster, "apply", "-f", "-", input="""\
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: drained}
spec:
  maxUnavailable: 0
  selector: {matchLabels: {app: drained}}
""")
    def observed() -> bool:
        status = json.loads(_kubectl(cluster, "get", "pdb", "drained", "-o", "json").stdout).get("status") or {}
        return status.get("observedGeneration") == 1 and status.get("disruptionsAllowed", 0) == 0

    wait_until(observed, timeout=30, what="the budget observed, allowing no disruption")
    blocked = _kubectl(cluster, "drain", cluster.node, "--ignore-daemonsets", "--delete-emptydir-data",
                       "--timeout=2s", check=False, timeout=60)
    assert blocked.returncode != 0
    assert "Cannot evict pod as it would violate the pod's disruption budget." in blocked.stderr, blocked.stderr
    assert [p["metadata"]["uid"] for p in _pods(cluster, "app=drained")] == [before["metadata"]["uid"]]
    listed = _kubectl(cluster, "get", "pdb").stdout.splitlines()
    assert listed[0].split() == ["NAME", "MIN", "AVAILABLE", "MAX", "UNAVAILABLE", "ALLOWED", "DISRUPTIONS", "AGE"]
    assert listed[1].split()[:4] == ["drained", "N/A", "0", "0"]
    _kubectl(cluster, "delete", "pdb", "drained")
    done = _kubectl(cluster, "drain", cluster.node, "--ignore-daemonsets", "--delete-emptydir-data",
                    "--timeout=90s", timeout=120)
    assert f"evicting pod default/{before['metadata']['name']}" in done.stderr + done.stdout
    assert f"node/{cluster.node} drained" in done.stdout
    # the eviction deleted the pod; its replacement waits for a schedulable node
    pods = _pods(cluster, "app=drained")
    assert all(p["metadata"]["uid"] != before["metadata"]["uid"] for p in pods)
    assert all(not (p.get("spec") or {}).get("nodeName") for p in pods)
    assert _running(cluster, "app=everywhere"), "drain --ignore-daemonsets leaves daemon set pods"
    assert _kubectl(cluster, "uncordon", cluster.node).stdout.strip() == f"node/{cluster.node} uncordoned"
    assert not _node(cluster)["spec"].get("unschedulable")
    wait_until(lambda: _running(cluster, "app=drained"), timeout=60, what="the replacement running once uncordoned")
    _kubectl(cluster, "delete", "ds", "everywhere")
    _kubectl(cluster, "delete", "deploy", "drained")


def test_eviction_of_a_missing_pod_is_404(cluster):
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    core = client.CoreV1Api(api_client)
    with pytest.raises(client.ApiException) as e:
        core.create_namespaced_pod_eviction("nothere", "default", client.V1Eviction(
            metadata=client.V1ObjectMeta(name="nothere", namespace="default")))
    assert e.value.status == 404
    api_client.close()


def test_rollout_status_set_image_undo_and_wait(cluster):
    _kubectl(cluster, "apply", "-f", "-", input=deployment("roll"))
    out = _kubectl(cluster, "rollout", "status", "deploy/roll", "--timeout=90s", timeout=120).stdout
    assert 'deployment "roll" successfully rolled out' in out
    waited = _kubectl(cluster, "wait", "--for=condition=Available", "deploy/roll", "--timeout=60s", timeout=90)
    assert waited.stdout.strip() == "deployment.apps/roll condition met"
    assert _kubectl(cluster, "set", "image", "deploy/roll", "main=busybox:v2").stdout.strip() == \
        "deployment.apps/roll image updated"
    out = _kubectl(cluster, "rollout", "status", "deploy/roll", "--timeout=90s", timeout=120).stdout
    assert "successfully rolled out" in out
    image = "jsonpath={.spec.template.spec.containers[0].image}"
    assert _kubectl(cluster, "get", "deploy", "roll", "-o", image).stdout == "busybox:v2"
    history = _kubectl(cluster, "rollout", "history", "deploy/roll").stdout
    assert "REVISION" in history and "2" in history
    assert _kubectl(cluster, "rollout", "undo", "deploy/roll").stdout.strip() == "deployment.apps/roll rolled back"
    assert _kubectl(cluster, "get", "deploy", "roll", "-o", image).stdout == "busybox"
    _kubectl(cluster, "rollout", "status", "deploy/roll", "--timeout=90s", timeout=120)


def test_delete_cascade_foreground_waits_for_the_dependents(cluster):
    _kubectl(cluster, "apply", "-f", "-", input=deployment("fg"))
    wait_until(lambda: _running(cluster, "app=fg"), timeout=60, what="the pod running")
    done = _kubectl(cluster, "delete", "deploy", "fg", "--cascade=foreground", "--timeout=90s", timeout=120)
    assert done.stdout.strip() == 'deployment.apps "fg" deleted'
    assert _kubectl(cluster, "get", "deploy", "fg", check=False).returncode == 1
    assert not json.loads(_kubectl(cluster, "get", "rs", "-l", "app=fg", "-o", "json").stdout)["items"]


def test_edit_with_an_editor_script_and_diff(cluster, tmp_path):
    _kubectl(cluster, "apply", "-f", "-", input=deployment("edited"))
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/replicas: 1$/replicas: 2/' \"$1\"\n")
    editor.chmod(editor.stat().st_mode | stat.S_IXUSR)
    done = _kubectl_env(cluster, {"KUBE_EDITOR": str(editor)}, "edit", "deploy/edited")
    assert done.stdout.strip() == "deployment.apps/edited edited", done.stderr
    assert _kubectl(cluster, "get", "deploy", "edited", "-o", "jsonpath={.spec.replicas}").stdout == "2"

    manifest = tmp_path / "edited.yaml"
    manifest.write_text(deployment("edited", replicas=2))
    same = _kubectl(cluster, "diff", "-f", str(manifest), check=False)
    assert same.returncode == 0, same.stdout + same.stderr
    manifest.write_text(deployment("edited", replicas=3))
    changed = _kubectl(cluster, "diff", "-f", str(manifest), check=False)
    assert changed.returncode == 1, changed.stderr
    assert "-  replicas: 2" in changed.stdout and "+  replicas: 3" in changed.stdout
    assert _kubectl(cluster, "get", "deploy", "edited", "-o", "jsonpath={.spec.replicas}").stdout == "2"
    _kubectl(cluster, "delete", "deploy", "edited")


def _kubectl_env(cluster, extra: dict[str, str], *args: str):
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env |= {"KUBECONFIG": str(cluster.kubeconfig), "HOME": str(cluster.data), **extra}
    return subprocess.run([KUBECTL, *args], capture_output=True, text=True, timeout=60, env=env)


UNSCHEDULED = ("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  schedulerName: elsewhere\n"
               "  terminationGracePeriodSeconds: 1\n"
               "  containers: [{{name: c, image: busybox, command: [sleep, '600']}}]\n")


def test_status_subresource_writes_only_status(cluster):
    # no scheduler takes the pod, so nothing but this test writes its status
    _kubectl(cluster, "apply", "-f", "-", input=UNSCHEDULED.format(name="statused"))
    _kubectl(cluster, "patch", "pod", "statused", "--subresource=status", "--type=merge", "-p",
             '{"spec":{"activeDeadlineSeconds":5},"status":{"message":"written","reason":"Testing"}}')
    pod = json.loads(_kubectl(cluster, "get", "pod", "statused", "-o", "json").stdout)
    assert (pod["status"]["message"], pod["status"]["reason"]) == ("written", "Testing")
    assert "activeDeadlineSeconds" not in pod["spec"], "a status write leaves the spec"
    _kubectl(cluster, "patch", "pod", "statused", "--type=merge", "-p", '{"status":{"message":"main"}}')
    pod = json.loads(_kubectl(cluster, "get", "pod", "statused", "-o", "json").stdout)
    assert pod["status"]["message"] == "written", "a write of the main resource leaves status"

    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    core = client.CoreV1Api(api_client)
    read = core.read_namespaced_pod_status("statused", "default")
    read.status.message = "replaced"
    core.replace_namespaced_pod_status("statused", "default", read)
    assert core.read_namespaced_pod("statused", "default").status.message == "replaced"
    with pytest.raises(client.ApiException) as e:  # read's resourceVersion is stale now
        core.replace_namespaced_pod_status("statused", "default", read)
    assert e.value.status == 409
    api_client.close()
    _kubectl(cluster, "delete", "pod", "statused", "--timeout=60s")


def test_pods_binding_assigns_a_node_once(cluster):
    from kubernetes import client, config

    _kubectl(cluster, "apply", "-f", "-", input=UNSCHEDULED.format(name="bound"))
    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    core = client.CoreV1Api(api_client)
    assert not core.read_namespaced_pod("bound", "default").spec.node_name
    binding = client.V1Binding(metadata=client.V1ObjectMeta(name="bound"),
                               target=client.V1ObjectReference(kind="Node", name=cluster.node))
    core.create_namespaced_pod_binding("bound", "default", binding, _preload_content=False)
    assert core.read_namespaced_pod("bound", "default").spec.node_name == cluster.node
    with pytest.raises(client.ApiException) as e:
        core.create_namespaced_pod_binding("bound", "default", binding, _preload_content=False)
    assert e.value.status == 409
    wait_until(lambda: core.read_namespaced_pod("bound", "default").status.phase == "Running", timeout=60,
               what="the bound pod running on the node")
    api_client.close()
    _kubectl(cluster, "delete", "pod", "bound", "--timeout=60s")


def test_get_pods_all_namespaces(cluster):
    _kubectl(cluster, "create", "namespace", "other")
    _kubectl(cluster, "apply", "-n", "other", "-f", "-", input="apiVersion: v1\nkind: ConfigMap\n"
             "metadata: {name: here}\n")
    _kubectl(cluster, "apply", "-n", "other", "-f", "-", input="apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n"
             "spec:\n  terminationGracePeriodSeconds: 1\n"
             "  containers: [{name: c, image: busybox, command: [sleep, '600']}]\n")
    out = _kubectl(cluster, "get", "pods", "-A").stdout
    assert out.split("\n")[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert any(line.split()[:2] == ["other", "a"] for line in out.splitlines())
    _kubectl(cluster, "delete", "namespace", "other", "--timeout=90s", timeout=120)


def test_server_side_apply_and_a_conflict_between_managers(cluster, tmp_path):
    manifest = tmp_path / "ssa.yaml"
    manifest.write_text(deployment("ssa"))
    done = _kubectl(cluster, "apply", "--server-side", "-f", str(manifest))
    assert done.stdout.strip() == "deployment.apps/ssa serverside-applied"
    made = json.loads(_kubectl(cluster, "get", "deploy", "ssa", "-o", "json", "--show-managed-fields").stdout)
    [mine] = [e for e in made["metadata"]["managedFields"] if e["manager"] == "kubectl"]
    assert mine["operation"] == "Apply" and mine["fieldsV1"]["f:spec"]["f:replicas"] == {}
    again = _kubectl(cluster, "apply", "--server-side", "-f", str(manifest))
    assert again.stdout.strip() == "deployment.apps/ssa serverside-applied"
    same = json.loads(_kubectl(cluster, "get", "deploy", "ssa", "-o", "json", "--show-managed-fields").stdout)
    assert same["metadata"]["generation"] == made["metadata"]["generation"]
    assert same["metadata"]["managedFields"] == made["metadata"]["managedFields"], "the same apply changes no owner"

    other = tmp_path / "other.yaml"
    other.write_text(deployment("ssa", replicas=3))
    refused = _kubectl(cluster, "apply", "--server-side", "--field-manager=other", "-f", str(other), check=False)
    assert refused.returncode == 1
    assert 'conflict with "kubectl"' in refused.stderr and ".spec.replicas" in refused.stderr
    assert _kubectl(cluster, "get", "deploy", "ssa", "-o", "jsonpath={.spec.replicas}").stdout == "1"
    forced = _kubectl(cluster, "apply", "--server-side", "--field-manager=other", "--force-conflicts",
                      "-f", str(other))
    assert forced.stdout.strip() == "deployment.apps/ssa serverside-applied"
    now = json.loads(_kubectl(cluster, "get", "deploy", "ssa", "-o", "json", "--show-managed-fields").stdout)
    assert now["spec"]["replicas"] == 3
    owners = {e["manager"]: e["fieldsV1"] for e in now["metadata"]["managedFields"]}
    assert "f:replicas" in owners["other"]["f:spec"] and "f:replicas" not in owners["kubectl"]["f:spec"]

    # kubectl scale is an Update by its own manager; it takes spec.replicas from "other"
    _kubectl(cluster, "scale", "deploy", "ssa", "--replicas=2")
    refused = _kubectl(cluster, "apply", "--server-side", "--field-manager=other", "-f", str(other), check=False)
    assert refused.returncode == 1 and ".spec.replicas" in refused.stderr
    _kubectl(cluster, "delete", "deploy", "ssa")
