"""The Kubernetes API of a real `kyb up`, driven by the real kubectl (v1.32) and the official
Kubernetes Python client, as a user drives a cluster with them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import ssl
import subprocess
import threading
import urllib.error
import urllib.request

import pytest
import yaml

from tests.cluster import wait_until

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

MANIFESTS = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox
        command: ["sleep", "3600"]
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: fast
"""


@contextlib.contextmanager
def apiserver_up(state, *args: str, runtime: str = "process"):
    """A `kyb up` of the test's own (``args`` added to its command line), once its apiserver answers."""
    from tests.kybup import Up

    up = Up(state, *args, runtime=runtime)
    try:
        wait_until(lambda: _kubectl(up, "get", "--raw", "/version", check=False).returncode == 0, timeout=30,
                   what="the apiserver")
        yield up
    finally:
        up.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with apiserver_up(tmp_path_factory.mktemp("apiserver") / "state") as up:
        yield up


def _kubectl(up, *args: str, input: str | None = None, check: bool = True, timeout: float = 60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env["KUBECONFIG"] = str(up.kubeconfig)
    env["HOME"] = str(up.data)  # kubectl's discovery cache of the test's own
    done = subprocess.run([KUBECTL, *args], input=input, capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done


def test_kubeconfig_is_private_and_names_kybernetes(cluster):
    assert cluster.kubeconfig.stat().st_mode & 0o777 == 0o600
    doc = yaml.safe_load(cluster.kubeconfig.read_text())
    assert doc["current-context"] == "kybernetes"
    assert [c["name"] for c in doc["clusters"]] == ["kybernetes"]
    assert [u["name"] for u in doc["users"]] == ["kybernetes"]
    assert doc["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{cluster.apiserver_port}"
    printed = cluster.kyb("kubeconfig", "--data-dir", str(cluster.data))
    assert printed.returncode == 0, printed.stderr
    assert yaml.safe_load(printed.stdout) == doc


def test_anonymous_request_is_401_status(cluster):
    ctx = ssl.create_default_context(cafile=str(cluster.data / "apiserver" / "ca.crt"))
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"https://127.0.0.1:{cluster.apiserver_port}/api/v1/pods", context=ctx, timeout=10)
    assert e.value.code == 401
    body = json.loads(e.value.read())
    assert body["kind"] == "Status" and body["reason"] == "Unauthorized" and body["code"] == 401


def test_version_and_api_resources(cluster):
    version = _kubectl(cluster, "version", "-o", "json")
    assert json.loads(version.stdout)["serverVersion"]["minor"] == "32"
    resources = _kubectl(cluster, "api-resources").stdout
    # keyed by name and group version: "pods" is also PodMetrics of metrics.k8s.io
    lines = {(line.split()[0], line.split()[-3]): line.split()  # NAME [SHORTNAMES] APIVERSION NAMESPACED KIND
             for line in resources.splitlines()[1:]}
    assert lines["pods", "v1"][1] == "po" and lines["deployments", "apps/v1"][1] == "deploy"
    assert lines["pods", "metrics.k8s.io/v1beta1"][-1] == "PodMetrics"
    assert lines["nodes", "metrics.k8s.io/v1beta1"][-1] == "NodeMetrics"
    assert _kubectl(cluster, "api-resources", "--categories", "all", "-o", "name").stdout.split() >= ["pods"]


def test_get_nodes_shows_the_node_ready(cluster):
    out = _kubectl(cluster, "get", "nodes").stdout
    assert out.split("\n")[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert cluster.node in out and "Ready" in out


def test_apply_get_describe_scale_label_patch_delete(cluster, tmp_path):
    manifest = tmp_path / "app.yaml"
    manifest.write_text(MANIFESTS)
    first = _kubectl(cluster, "apply", "-f", str(manifest)).stdout
    assert first.split("\n")[:3] == ["deployment.apps/web created", "service/web created", "configmap/settings created"]
    again = _kubectl(cluster, "apply", "-f", str(manifest)).stdout
    assert again.split("\n")[:3] == ["deployment.apps/web unchanged", "service/web unchanged",
                                     "configmap/settings unchanged"]

    def pod_running() -> bool:
        out = _kubectl(cluster, "get", "pods", "-l", "app=web", "-o", "wide").stdout
        return "Running" in out

    wait_until(pod_running, timeout=60, what="the web pod running")
    wide = _kubectl(cluster, "get", "pods", "-o", "wide").stdout
    assert wide.split("\n")[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert cluster.node in wide
    as_yaml = yaml.safe_load(_kubectl(cluster, "get", "pods", "-o", "yaml").stdout)
    assert as_yaml["items"][0]["metadata"]["labels"]["app"] == "web"
    image = _kubectl(cluster, "get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}")
    assert image.stdout == "busybox"

    everything = _kubectl(cluster, "get", "all").stdout
    for name in ("pod/web-", "service/web", "deployment.apps/web", "replicaset.apps/web-"):
        assert name in everything

    described = _kubectl(cluster, "describe", "deploy", "web").stdout
    assert "Name:" in described and "web" in described and "StrategyType:" in described

    assert _kubectl(cluster, "scale", "deploy", "web", "--replicas=2").stdout.strip() == "deployment.apps/web scaled"
    assert _kubectl(cluster, "get", "deploy", "web", "-o", "jsonpath={.spec.replicas}").stdout == "2"
    assert _kubectl(cluster, "label", "deploy", "web", "tier=front").stdout.strip() == "deployment.apps/web labeled"
    assert _kubectl(cluster, "annotate", "deploy", "web", "note=hi").stdout.strip() == "deployment.apps/web annotated"
    _kubectl(cluster, "patch", "deploy", "web", "--type", "merge", "-p", '{"metadata":{"labels":{"merged":"yes"}}}')
    _kubectl(cluster, "patch", "deploy", "web", "--type", "json", "-p",
             '[{"op":"add","path":"/metadata/labels/jsonpatch","value":"yes"}]')
    _kubectl(cluster, "patch", "deploy", "web", "-p",  # strategic: merges into the container named web
             '{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"MODE","value":"x"}]}]}}}}')
    deploy = json.loads(_kubectl(cluster, "get", "deploy", "web", "-o", "json").stdout)
    labels = deploy["metadata"]["labels"]
    assert (labels["tier"], labels["merged"], labels["jsonpatch"]) == ("front", "yes", "yes")
    assert deploy["metadata"]["annotations"]["note"] == "hi"
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "busybox" and container["env"] == [{"name": "MODE", "value": "x"}]

    gone = _kubectl(cluster, "delete", "-f", str(manifest), "--timeout=60s").stdout
    assert 'deployment.apps "web" deleted' in gone and 'configmap "settings" deleted' in gone
    missing = _kubectl(cluster, "get", "configmap", "settings", check=False)
    assert missing.returncode == 1 and 'configmaps "settings" not found' in missing.stderr


def test_create_configmap_from_literal(cluster):
    # kubectl's generators send protobuf bodies; ConfigMaps, Secrets and Namespaces are read
    done = _kubectl(cluster, "create", "configmap", "literal", "--from-literal=k=v", "--from-literal=x=y")
    assert done.stdout.strip() == "configmap/literal created"
    made = json.loads(_kubectl(cluster, "get", "cm", "literal", "-o", "json").stdout)
    assert made["data"] == {"k": "v", "x": "y"} and "generateName" not in made["metadata"]
    again = _kubectl(cluster, "create", "configmap", "literal", "--from-literal=k=v", check=False)
    assert again.returncode == 1 and 'configmaps "literal" already exists' in again.stderr
    _kubectl(cluster, "delete", "cm", "literal")


def test_kubectl_create_generators_for_workloads_services_and_ingresses(cluster):
    """kubectl create deployment|service|job|cronjob|ingress|pdb send protobuf bodies."""
    made = ["deployment/gen", "service/gen", "service/gen-np", "service/gen-headless", "cronjob/gen-cron",
            "job/gen-job", "job/gen-manual", "ingress/gen", "pdb/gen"]
    try:
        out = _kubectl(cluster, "create", "deployment", "gen", "--image=busybox", "--replicas=0", "--port=8080",
                       "--", "sleep", "3600").stdout
        assert out.strip() == "deployment.apps/gen created"
        d = json.loads(_kubectl(cluster, "get", "deploy", "gen", "-o", "json").stdout)
        assert d["spec"]["replicas"] == 0 and d["spec"]["selector"] == {"matchLabels": {"app": "gen"}}
        c = d["spec"]["template"]["spec"]["containers"][0]
        assert (c["image"], c["command"], c["ports"][0]["containerPort"]) == ("busybox", ["sleep", "3600"], 8080)
        _kubectl(cluster, "create", "service", "clusterip", "gen", "--tcp=80:8080")
        _kubectl(cluster, "create", "service", "nodeport", "gen-np", "--tcp=80:8080", "--node-port=30999")
        _kubectl(cluster, "create", "service", "clusterip", "gen-headless", "--clusterip=None")
        svc = json.loads(_kubectl(cluster, "get", "svc", "gen", "-o", "json").stdout)["spec"]
        assert svc["selector"] == {"app": "gen"} and svc["ports"][0]["targetPort"] == 8080 and svc["clusterIP"]
        np = json.loads(_kubectl(cluster, "get", "svc", "gen-np", "-o", "json").stdout)["spec"]
        assert (np["type"], np["ports"][0]["nodePort"]) == ("NodePort", 30999)
        headless = _kubectl(cluster, "get", "svc", "gen-headless", "-o", "jsonpath={.spec.clusterIP}").stdout
        assert headless == "None"
        _kubectl(cluster, "create", "cronjob", "gen-cron", "--image=busybox", "--schedule=*/5 * * * *", "--", "date")
        _kubectl(cluster, "create", "job", "gen-job", "--image=busybox", "--", "true")
        # --from copies the stored template, defaults included, and names the CronJob its owner
        _kubectl(cluster, "create", "job", "gen-manual", "--from=cronjob/gen-cron")
        manual = json.loads(_kubectl(cluster, "get", "job", "gen-manual", "-o", "json").stdout)
        assert manual["metadata"]["ownerReferences"][0]["name"] == "gen-cron"
        assert manual["spec"]["template"]["spec"]["containers"][0]["command"] == ["date"]
        _kubectl(cluster, "create", "ingress", "gen", "--rule=shop.example/api*=gen:80,tls=shop-cert")
        rule = json.loads(_kubectl(cluster, "get", "ing", "gen", "-o", "json").stdout)["spec"]["rules"][0]
        assert rule["host"] == "shop.example" and rule["http"]["paths"][0]["pathType"] == "Prefix"
        _kubectl(cluster, "create", "pdb", "gen", "--selector=app=gen", "--min-available=50%")
        pdb = json.loads(_kubectl(cluster, "get", "pdb", "gen", "-o", "json").stdout)["spec"]
        assert pdb["minAvailable"] == "50%"
    finally:
        _kubectl(cluster, "delete", "--ignore-not-found", "--wait=false", *made, check=False)


def test_kubectl_create_job_from_a_cronjob_with_a_sidecar(cluster):
    """--from copies the template with its init containers: a sidecar keeps restartPolicy Always."""
    cron = ("apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: gen-side}\nspec:\n  schedule: '0 * * * *'\n"
            "  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n"
            "          initContainers: [{name: proxy, image: busybox, restartPolicy: Always}]\n"
            "          containers: [{name: main, image: busybox}]\n")
    try:
        _kubectl(cluster, "apply", "-f", "-", input=cron)
        _kubectl(cluster, "create", "job", "gen-side-now", "--from=cronjob/gen-side")
        spec = json.loads(_kubectl(cluster, "get", "job", "gen-side-now", "-o", "json").stdout)["spec"]["template"]["spec"]
        assert [(c["name"], c.get("restartPolicy")) for c in spec["initContainers"]] == [("proxy", "Always")]
    finally:
        _kubectl(cluster, "delete", "--ignore-not-found", "--wait=false", "job/gen-side-now", "cronjob/gen-side",
                 check=False)


def test_kubectl_create_priorityclass(cluster):
    try:
        out = _kubectl(cluster, "create", "priorityclass", "gen-high", "--value=1234", "--description=batch",
                       "--preemption-policy=Never").stdout
        assert out.strip() == "priorityclass.scheduling.k8s.io/gen-high created"
        pc = json.loads(_kubectl(cluster, "get", "pc", "gen-high", "-o", "json").stdout)
        assert (pc["value"], pc["description"], pc["preemptionPolicy"]) == (1234, "batch", "Never")
    finally:
        _kubectl(cluster, "delete", "pc", "gen-high", "--ignore-not-found", check=False)


def test_kubectl_create_quota(cluster):
    try:
        out = _kubectl(cluster, "create", "quota", "gen-quota", "--hard=cpu=1,memory=1G,pods=2,count/deployments.apps=3")
        assert out.stdout.strip() == "resourcequota/gen-quota created"
        quota = json.loads(_kubectl(cluster, "get", "quota", "gen-quota", "-o", "json").stdout)
        assert quota["spec"]["hard"] == {"cpu": "1", "memory": "1G", "pods": "2", "count/deployments.apps": "3"}
        scoped = _kubectl(cluster, "create", "quota", "scoped", "--hard=pods=1", "--scopes=BestEffort", check=False)
        assert scoped.returncode == 1 and "scopes" in scoped.stderr  # quota scopes are not served: refused by name
    finally:
        _kubectl(cluster, "delete", "quota", "gen-quota", "scoped", "--ignore-not-found", check=False)


def test_kubectl_create_roles_and_bindings(cluster):
    """kubectl create role|clusterrole|rolebinding|clusterrolebinding send protobuf bodies."""
    made = ["role/gen-reader", "rolebinding/gen-reader", "clusterrole/gen-logs", "clusterrolebinding/gen-logs"]
    try:
        _kubectl(cluster, "create", "role", "gen-reader", "--verb=get,list", "--resource=pods,deployments.apps")
        rules = json.loads(_kubectl(cluster, "get", "role", "gen-reader", "-o", "json").stdout)["rules"]
        assert [(r["apiGroups"], r["resources"], r["verbs"]) for r in rules] == [
            ([""], ["pods"], ["get", "list"]), (["apps"], ["deployments"], ["get", "list"])]
        _kubectl(cluster, "create", "rolebinding", "gen-reader", "--role=gen-reader", "--user=ann",
                 "--serviceaccount=default:robot")
        rb = json.loads(_kubectl(cluster, "get", "rolebinding", "gen-reader", "-o", "json").stdout)
        assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "gen-reader"}
        assert [(s["kind"], s["name"]) for s in rb["subjects"]] == [("User", "ann"), ("ServiceAccount", "robot")]
        _kubectl(cluster, "create", "clusterrole", "gen-logs", "--verb=get", "--non-resource-url=/logs/*")
        _kubectl(cluster, "create", "clusterrolebinding", "gen-logs", "--clusterrole=gen-logs", "--group=ops")
        crb = _kubectl(cluster, "get", "clusterrolebinding", "gen-logs", "-o", "wide").stdout.splitlines()[1].split()
        assert crb[1] == "ClusterRole/gen-logs" and "ops" in crb
    finally:
        _kubectl(cluster, "delete", "--ignore-not-found", *made, check=False)


def test_service_accounts_apply_and_list(cluster, tmp_path):
    manifest = tmp_path / "sa.yaml"
    manifest.write_text("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: builder}\n"
                        "imagePullSecrets: [{name: registry}]\n")
    assert _kubectl(cluster, "apply", "-f", str(manifest)).stdout.strip() == "serviceaccount/builder created"
    names = _kubectl(cluster, "get", "sa", "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
    assert names == ["builder", "default"]
    _kubectl(cluster, "delete", "serviceaccount", "builder")
    # kubectl's generator sends protobuf
    assert _kubectl(cluster, "create", "serviceaccount", "robot").stdout.strip() == "serviceaccount/robot created"
    assert json.loads(_kubectl(cluster, "get", "sa", "robot", "-o", "json").stdout)["metadata"]["namespace"] == "default"
    _kubectl(cluster, "delete", "sa", "robot")


def test_priority_classes_and_pod_priority(cluster, tmp_path):
    lines = _kubectl(cluster, "get", "pc").stdout.splitlines()
    assert lines[0].split() == ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE"]
    assert [line.split()[:3] for line in lines[1:]] == [["system-cluster-critical", "2000000000", "false"],
                                                        ["system-node-critical", "2000001000", "false"]]
    manifest = tmp_path / "pc.yaml"
    manifest.write_text("apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: batch-high}\n"
                        "value: 1000\ndescription: batch work that goes first\n---\n"
                        "apiVersion: v1\nkind: Pod\nmetadata: {name: urgent}\n"
                        "spec: {priorityClassName: batch-high, containers: [{name: c, image: busybox}]}\n")
    _kubectl(cluster, "apply", "-f", str(manifest))
    assert _kubectl(cluster, "get", "pod", "urgent", "-o", "jsonpath={.spec.priority}").stdout == "1000"
    lost = tmp_path / "lost.yaml"
    lost.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: lost}\n"
                    "spec: {priorityClassName: nope, containers: [{name: c, image: busybox}]}\n")
    done = _kubectl(cluster, "apply", "-f", str(lost), check=False)
    assert done.returncode == 1 and "no PriorityClass with name nope was found" in done.stderr
    _kubectl(cluster, "delete", "-f", str(manifest), "--timeout=60s")


def test_a_job_success_policy_is_accepted_and_validated(cluster, tmp_path):
    job = ("apiVersion: batch/v1\nkind: Job\nmetadata: {name: leader-done}\nspec:\n  completions: 3\n"
           "  parallelism: 3\n  completionMode: Indexed\n  suspend: true\n"
           "  successPolicy: {rules: [{succeededIndexes: 'INDEXES', succeededCount: 1}]}\n"
           "  template: {spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}}\n")
    manifest = tmp_path / "job.yaml"
    manifest.write_text(job.replace("INDEXES", "0"))
    _kubectl(cluster, "apply", "-f", str(manifest))
    path = "jsonpath={.spec.successPolicy.rules[0].succeededIndexes}"
    assert _kubectl(cluster, "get", "job", "leader-done", "-o", path).stdout == "0"
    manifest.write_text(job.replace("INDEXES", "0-1"))  # valid, but the policy may not change
    done = _kubectl(cluster, "apply", "-f", str(manifest), check=False)
    assert done.returncode == 1 and "spec.successPolicy: field is immutable" in done.stderr, done.stderr
    manifest.write_text(job.replace("INDEXES", "0-3").replace("leader-done", "too-far"))
    done = _kubectl(cluster, "apply", "-f", str(manifest), check=False)
    assert done.returncode == 1 and "too large index" in done.stderr, done.stderr
    _kubectl(cluster, "delete", "job", "leader-done")


def test_a_helm_charts_rbac_applies_and_aggregates(cluster, tmp_path):
    from tests.test_rbac import HELM_RBAC

    first = _kubectl(cluster, "apply", "-f", str(HELM_RBAC)).stdout.splitlines()
    assert first == ["serviceaccount/demo-operator created",
                     "clusterrole.rbac.authorization.k8s.io/demo-operator created",
                     "clusterrole.rbac.authorization.k8s.io/demo-operator-view created",
                     "clusterrolebinding.rbac.authorization.k8s.io/demo-operator created",
                     "role.rbac.authorization.k8s.io/demo-operator-leader-election created",
                     "rolebinding.rbac.authorization.k8s.io/demo-operator-leader-election created"]
    again = _kubectl(cluster, "apply", "-f", str(HELM_RBAC)).stdout.splitlines()
    # As against Kubernetes: subjects is an atomic list and the User's apiGroup was defaulted, so
    # kubectl's patch names the list again (the stored object stays as it was); the rest is unchanged.
    assert again[-1] == "rolebinding.rbac.authorization.k8s.io/demo-operator-leader-election configured"
    assert [line.rsplit(" ", 1)[1] for line in again[:-1]] == ["unchanged"] * 5, again
    roles = _kubectl(cluster, "get", "roles").stdout.splitlines()
    assert roles[0].split() == ["NAME", "CREATED", "AT"] and roles[1].split()[0] == "demo-operator-leader-election"
    crb = _kubectl(cluster, "get", "clusterrolebinding", "demo-operator", "-o", "wide").stdout.splitlines()
    assert crb[0].split() == ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]
    assert crb[1].split()[:2] == ["demo-operator", "ClusterRole/demo-operator"]
    assert crb[1].split()[-1] == "default/demo-operator"
    rb = _kubectl(cluster, "get", "rolebindings").stdout.splitlines()
    assert rb[0].split() == ["NAME", "ROLE", "AGE"] and rb[1].split()[1] == "Role/demo-operator-leader-election"

    # an aggregated ClusterRole picks up the chart's aggregate-to-view role
    view = tmp_path / "view.yaml"
    view.write_text("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: demo-view-all}\n"
                    "aggregationRule:\n  clusterRoleSelectors:\n"
                    "  - matchLabels: {rbac.authorization.k8s.io/aggregate-to-view: 'true'}\nrules: []\n")
    _kubectl(cluster, "apply", "-f", str(view))
    wait_until(lambda: _kubectl(cluster, "get", "clusterrole", "demo-view-all", "-o",
                                "jsonpath={.rules[0].resources}").stdout == '["widgets","widgets/status"]',
               timeout=30, what="the aggregated rules")

    # refused, naming the field
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: bad}\n"
                   "roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}\n"
                   "subjects: [{kind: ServiceAccount, name: robot}]\n")
    done = _kubectl(cluster, "apply", "-f", str(bad), check=False)
    assert done.returncode == 1 and "subjects[0].namespace: Required value" in done.stderr, done.stderr
    moved = tmp_path / "moved.yaml"
    moved.write_text(HELM_RBAC.read_text().split("# Source: demo-operator/templates/rolebinding.yaml")[1]
                     .replace("kind: Role\n", "kind: ClusterRole\n").replace(
                         "name: demo-operator-leader-election\nsubjects", "name: demo-operator\nsubjects"))
    done = _kubectl(cluster, "apply", "-f", str(moved), check=False)
    assert done.returncode == 1 and "cannot change roleRef" in done.stderr, done.stderr
    _kubectl(cluster, "delete", "-f", str(HELM_RBAC), "-f", str(view), "--timeout=60s")


def test_explain_reads_the_openapi(cluster):
    out = _kubectl(cluster, "explain", "deployment.spec.strategy").stdout
    assert "KIND:       Deployment" in out and "rollingUpdate" in out and "Recreate" in out


def test_bad_manifest_is_refused_naming_the_field(cluster, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: bad}\nspec:\n  replicas: -1\n"
                   "  selector: {matchLabels: {app: bad}}\n  template:\n    metadata: {labels: {app: bad}}\n"
                   "    spec: {containers: [{name: c, image: busybox}]}\n")
    done = _kubectl(cluster, "apply", "-f", str(bad), check=False)
    assert done.returncode == 1
    assert "spec.replicas" in done.stderr and "invalid" in done.stderr.lower()
    assert _kubectl(cluster, "get", "deploy", "bad", check=False).returncode == 1


def test_get_pods_watch_sees_a_change(cluster):
    _kubectl(cluster, "apply", "-f", "-", input="apiVersion: v1\nkind: Pod\nmetadata: {name: watched}\nspec:\n"
             "  containers: [{name: c, image: busybox, command: [sleep, '600']}]\n")
    wait_until(lambda: _kubectl(cluster, "get", "pod", "watched", check=False).returncode == 0, timeout=30,
               what="the pod")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env |= {"KUBECONFIG": str(cluster.kubeconfig), "HOME": str(cluster.data)}
    proc = subprocess.Popen([KUBECTL, "get", "pods", "-w", "--output-watch-events"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    threading.Thread(target=lambda: [lines.append(line) for line in proc.stdout], daemon=True).start()
    try:
        wait_until(lambda: any("watched" in line for line in lines), timeout=30, what="the listing")
        _kubectl(cluster, "label", "pod", "watched", "seen=yes")
        wait_until(lambda: any(line.startswith("MODIFIED") and "watched" in line for line in lines), timeout=30,
                   what="the change in kubectl get -w")
    finally:
        proc.kill()
        proc.wait()
    _kubectl(cluster, "delete", "pod", "watched", "--now", "--timeout=60s")


def test_python_client_list_create_patch_delete_and_watch(cluster):
    from kubernetes import client, config, watch

    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    core = client.CoreV1Api(api_client)
    listed = core.list_namespace()
    assert {"default", "kube-system"} <= {ns.metadata.name for ns in listed.items}
    start = core.list_namespaced_config_map("default").metadata.resource_version

    core.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="py", labels={"made-by": "python"}), data={"a": "1"}))
    core.patch_namespaced_config_map("py", "default", {"data": {"b": "2"}})
    core.delete_namespaced_config_map("py", "default")

    seen = []
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_config_map, "default", resource_version=start, timeout_seconds=20):
        if event["object"].metadata.name == "py":
            seen.append((event["type"], dict(event["object"].data or {})))
        if len(seen) == 3:
            w.stop()
    assert seen == [("ADDED", {"a": "1"}), ("MODIFIED", {"a": "1", "b": "2"}), ("DELETED", {"a": "1", "b": "2"})]
    with pytest.raises(client.ApiException) as e:
        core.read_namespaced_config_map("py", "default")
    assert e.value.status == 404
    api_client.close()


def test_conflicting_update_and_dry_run(cluster):
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    core = client.CoreV1Api(api_client)
    made = core.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="cas"), data={"v": "1"}))
    stale = made.metadata.resource_version
    core.patch_namespaced_config_map("cas", "default", {"data": {"v": "2"}})
    with pytest.raises(client.ApiException) as e:
        core.replace_namespaced_config_map("cas", "default", client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="cas", resource_version=stale), data={"v": "3"}))
    assert e.value.status == 409 and json.loads(e.value.body)["reason"] == "Conflict"
    core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="dry")),
                                      dry_run="All")
    with pytest.raises(client.ApiException) as e:
        core.read_namespaced_config_map("dry", "default")
    assert e.value.status == 404
    core.delete_namespaced_config_map("cas", "default")
    api_client.close()


UNKNOWN_FIELDS = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
  colour: blue
data: {{a: b}}
bogus: 1
"""


def test_field_validation_strict_warn_and_ignore(cluster, tmp_path):
    """kubectl apply --validate=strict|warn|false sends fieldValidation=Strict|Warn|Ignore."""
    for name in ("fv-strict", "fv-warn", "fv-ignore"):
        (tmp_path / f"{name}.yaml").write_text(UNKNOWN_FIELDS.format(name=name))
    refused = _kubectl(cluster, "apply", "--validate=strict", "-f", str(tmp_path / "fv-strict.yaml"), check=False)
    assert refused.returncode == 1
    assert ('ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: '
            'unknown field "bogus", unknown field "metadata.colour"') in refused.stderr
    assert _kubectl(cluster, "get", "cm", "fv-strict", check=False).returncode == 1

    warned = _kubectl(cluster, "apply", "--validate=warn", "-f", str(tmp_path / "fv-warn.yaml"))
    assert 'Warning: unknown field "bogus"' in warned.stderr
    assert 'Warning: unknown field "metadata.colour"' in warned.stderr
    stored = json.loads(_kubectl(cluster, "get", "cm", "fv-warn", "-o", "json").stdout)
    assert "bogus" not in stored and "colour" not in stored["metadata"] and stored["data"] == {"a": "b"}

    ignored = _kubectl(cluster, "apply", "--validate=false", "-f", str(tmp_path / "fv-ignore.yaml"))
    assert "Warning" not in ignored.stderr
    assert json.loads(_kubectl(cluster, "get", "cm", "fv-ignore", "-o", "json").stdout)["data"] == {"a": "b"}

    # on an object that exists, apply patches it: the patch is checked the same way
    changed = UNKNOWN_FIELDS.format(name="fv-warn").replace("data: {a: b}", "data: {a: c, nested: d}")
    refused = _kubectl(cluster, "apply", "--validate=strict", "-f", "-", input=changed, check=False)
    assert refused.returncode == 1 and 'unknown field "bogus"' in refused.stderr
    _kubectl(cluster, "delete", "cm", "fv-warn", "fv-ignore")


def _raw(cluster, method: str, path: str, body: bytes | None = None, ctype: str = "application/json"):
    """(status, headers, body) of one request with the kubeconfig's token."""
    ctx = ssl.create_default_context(cafile=str(cluster.data / "apiserver" / "ca.crt"))
    token = (cluster.data / "apiserver" / "token").read_text().strip()
    req = urllib.request.Request(f"https://127.0.0.1:{cluster.apiserver_port}{path}", data=body, method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=20) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_a_field_given_twice_is_refused_or_warned_about(cluster):
    body = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dup"},"data":{"a":"1","a":"2"}}'
    code, _, refused = _raw(cluster, "POST", "/api/v1/namespaces/default/configmaps?fieldValidation=Strict", body)
    assert code == 400 and 'duplicate field "data.a"' in json.loads(refused)["message"]
    code, headers, made = _raw(cluster, "POST", "/api/v1/namespaces/default/configmaps", body)  # Warn: the default
    assert code == 201 and json.loads(made)["data"] == {"a": "2"}  # the last one, as Kubernetes keeps it
    assert headers.get_all("Warning") == ['299 - "duplicate field \\"data.a\\""']
    code, _, bad = _raw(cluster, "POST", "/api/v1/namespaces/default/configmaps?fieldValidation=Loose", body)
    assert code == 400 and "fieldValidation" in json.loads(bad)["message"]
    _kubectl(cluster, "delete", "cm", "dup")


def test_watch_list_sends_the_initial_objects_then_a_bookmark(cluster):
    """sendInitialEvents=true (client-go's WatchList): the current objects as ADDED, a BOOKMARK
    annotated k8s.io/initial-events-end, then the changes."""
    from kubernetes import client, config, watch

    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    core = client.CoreV1Api(api_client)
    for name in ("wl-1", "wl-2"):
        core.create_namespaced_config_map("default", client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=name, labels={"watch-list": "yes"})))
    seen: list[tuple[str, str | None, dict]] = []
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_config_map, "default", label_selector="watch-list=yes",
                          send_initial_events=True, resource_version_match="NotOlderThan",
                          allow_watch_bookmarks=True, timeout_seconds=20):
        if event["type"] == "BOOKMARK":  # the client hands a bookmark over as it came
            assert int(event["object"]["metadata"]["resourceVersion"]) > 0
            seen.append(("BOOKMARK", None, event["object"]["metadata"].get("annotations") or {}))
            core.create_namespaced_config_map("default", client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name="wl-3", labels={"watch-list": "yes"})))
            continue
        obj = event["object"]
        seen.append((event["type"], obj.metadata.name, dict(obj.metadata.annotations or {})))
        if obj.metadata.name == "wl-3":
            w.stop()
    assert seen == [("ADDED", "wl-1", {}), ("ADDED", "wl-2", {}),
                    ("BOOKMARK", None, {"k8s.io/initial-events-end": "true"}), ("ADDED", "wl-3", {})]
    with pytest.raises(client.ApiException) as e:  # the one needs the other, as Kubernetes checks them
        core.list_namespaced_config_map("default", watch=True, send_initial_events=True, _preload_content=False)
    assert e.value.status == 422 and "resourceVersionMatch" in e.value.body
    for name in ("wl-1", "wl-2", "wl-3"):
        core.delete_namespaced_config_map(name, "default")
    api_client.close()


def test_list_resource_version_match(cluster):
    path = "/api/v1/namespaces/default/configmaps"
    code, _, body = _raw(cluster, "GET", path)
    rv = json.loads(body)["metadata"]["resourceVersion"]
    code, _, body = _raw(cluster, "GET", f"{path}?resourceVersion={rv}&resourceVersionMatch=Exact")
    assert code == 200 and json.loads(body)["metadata"]["resourceVersion"] == rv
    _kubectl(cluster, "create", "configmap", "rvm", "--from-literal=a=b")
    code, _, body = _raw(cluster, "GET", f"{path}?resourceVersion={rv}&resourceVersionMatch=Exact")
    assert code == 410 and json.loads(body)["reason"] == "Expired"  # only the latest state is kept
    code, _, body = _raw(cluster, "GET", f"{path}?resourceVersion={rv}&resourceVersionMatch=NotOlderThan")
    assert code == 200 and "rvm" in [i["metadata"]["name"] for i in json.loads(body)["items"]]
    code, _, body = _raw(cluster, "GET", f"{path}?resourceVersionMatch=NotOlderThan")
    assert code == 422 and [c["field"] for c in json.loads(body)["details"]["causes"]] == ["resourceVersionMatch"]
    _kubectl(cluster, "delete", "cm", "rvm")


CRD_DIR = os.path.join(os.path.dirname(__file__), "manifests", "crd")
GATEWAY_API = os.path.join(os.path.dirname(__file__), "manifests", "gateway-api")


def test_a_crd_and_its_objects_through_kubectl(cluster, tmp_path):
    crd = os.path.join(CRD_DIR, "crontab-crd.yaml")
    out = _kubectl(cluster, "apply", "-f", crd).stdout
    assert out.strip() == "customresourcedefinition.apiextensions.k8s.io/crontabs.stable.example.com created"
    _kubectl(cluster, "wait", "--for", "condition=Established", "crd/crontabs.stable.example.com", "--timeout=20s")
    cr = tmp_path / "cr.yaml"
    cr.write_text("apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: my-new-cron-object}\n"
                  "spec: {cronSpec: '* * * * */5', image: my-awesome-cron-image}\n")
    assert _kubectl(cluster, "apply", "-f", str(cr)).stdout.strip() == \
        "crontab.stable.example.com/my-new-cron-object created"
    table = _kubectl(cluster, "get", "crontabs").stdout.splitlines()
    assert table[0].split() == ["NAME", "SPEC", "REPLICAS", "AGE"]
    assert table[1].split()[:7] == ["my-new-cron-object", "*", "*", "*", "*", "*/5", "1"]
    assert _kubectl(cluster, "get", "ct", "-o", "name").stdout.strip() == "crontab.stable.example.com/my-new-cron-object"
    resources = _kubectl(cluster, "api-resources", "--api-group", "stable.example.com").stdout
    assert resources.splitlines()[1].split() == ["crontabs", "ct", "stable.example.com/v1", "true", "CronTab"]

    _kubectl(cluster, "scale", "crontab/my-new-cron-object", "--replicas=3")
    got = json.loads(_kubectl(cluster, "get", "crontab", "my-new-cron-object", "-o", "json").stdout)
    assert got["spec"]["replicas"] == 3
    _kubectl(cluster, "patch", "crontab", "my-new-cron-object", "--subresource=status", "--type=merge",
             "-p", '{"status": {"replicas": 3}}')
    scale = json.loads(_kubectl(cluster, "get", "--raw",
                                "/apis/stable.example.com/v1/namespaces/default/crontabs/my-new-cron-object/scale").stdout)
    assert scale["spec"]["replicas"] == 3 and scale["status"]["replicas"] == 3
    strategic = _kubectl(cluster, "patch", "crontab", "my-new-cron-object", "--type=strategic",
                         "-p", '{"spec": {"image": "x"}}', check=False)
    assert strategic.returncode == 1 and "strategic merge patch is not supported" in strategic.stderr
    _kubectl(cluster, "patch", "crontab", "my-new-cron-object", "--type=json",
             "-p", '[{"op": "replace", "path": "/spec/image", "value": "patched-image"}]')
    assert json.loads(_kubectl(cluster, "get", "ct", "my-new-cron-object", "-o", "json").stdout)[
        "spec"]["image"] == "patched-image"
    explained = _kubectl(cluster, "explain", "crontab.spec").stdout
    assert "cronSpec" in explained and "replicas" in explained
    # kyb reads the cluster's CRDs to know the kind, and prints the same columns
    mine = cluster.kyb("get", "ct")
    assert mine.returncode == 0, mine.stderr
    assert mine.stdout.splitlines()[0].split() == ["NAME", "SPEC", "REPLICAS", "AGE"]
    assert mine.stdout.splitlines()[1].split()[:7] == ["my-new-cron-object", "*", "*", "*", "*", "*/5", "3"]
    listed = cluster.kyb("api-resources")
    assert "crontabs" in listed.stdout and "stable.example.com/v1" in listed.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: bad}\n"
                   "spec: {cronSpec: '* * * * */5', replicas: 15}\n")
    done = _kubectl(cluster, "apply", "-f", str(bad), check=False)
    assert done.returncode == 1 and "spec.replicas" in done.stderr and "less than or equal to 10" in done.stderr

    _kubectl(cluster, "delete", "crd", "crontabs.stable.example.com", timeout=60)
    # the CRD went with its objects, and the kind with it
    assert _kubectl(cluster, "get", "crd", "crontabs.stable.example.com", check=False).returncode == 1
    gone = _kubectl(cluster, "get", "--raw", "/apis/stable.example.com/v1/namespaces/default/crontabs", check=False)
    assert gone.returncode == 1 and "NotFound" in gone.stderr


def test_the_gateway_apis_crds_and_objects_apply(cluster):
    # The Gateway API's own installation instructions apply its CRDs server-side (the largest
    # is too big for client-side apply's annotation).
    out = _kubectl(cluster, "apply", "--server-side", "-f", GATEWAY_API, timeout=120).stdout
    assert "customresourcedefinition.apiextensions.k8s.io/httproutes.gateway.networking.k8s.io serverside-applied" in out
    _kubectl(cluster, "wait", "--for", "condition=Established", "crd", "--all", "--timeout=30s")
    out = _kubectl(cluster, "apply", "-f", os.path.join(CRD_DIR, "gateway-example.yaml")).stdout
    assert out.split("\n")[:3] == ["gatewayclass.gateway.networking.k8s.io/example created",
                                   "gateway.gateway.networking.k8s.io/example-gateway created",
                                   "httproute.gateway.networking.k8s.io/example-route created"]
    routes = _kubectl(cluster, "get", "httproutes").stdout.splitlines()
    assert routes[0].split() == ["NAME", "HOSTNAMES", "AGE"]
    assert routes[1].split()[:2] == ["example-route", '["www.example.com"]']
    route = json.loads(_kubectl(cluster, "get", "httproute", "example-route", "-o", "json").stdout)
    # the schema's defaults: a rule without matches matches every path; a parentRef is a Gateway
    assert route["spec"]["rules"][0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert route["spec"]["parentRefs"][0]["kind"] == "Gateway"
    assert _kubectl(cluster, "get", "gtw", "-o", "name").stdout.strip() == \
        "gateway.gateway.networking.k8s.io/example-gateway"
    # an object written at one served version reads at any other (stored at the storage version)
    _kubectl(cluster, "apply", "-f", "-", input=(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: grant}\n"
        "spec: {from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}],"
        " to: [{group: '', kind: Service}]}\n"))
    grant = json.loads(_kubectl(cluster, "get", "referencegrant", "grant", "-o", "json").stdout)
    assert grant["apiVersion"] == "gateway.networking.k8s.io/v1"
    old = json.loads(_kubectl(cluster, "get", "--raw", "/apis/gateway.networking.k8s.io/v1beta1/namespaces/default/"
                                                      "referencegrants/grant").stdout)
    assert old["apiVersion"] == "gateway.networking.k8s.io/v1beta1" and old["spec"] == grant["spec"]
    listed = json.loads(_kubectl(cluster, "get", "--raw",
                                 "/apis/gateway.networking.k8s.io/v1beta1/referencegrants").stdout)
    assert listed["kind"] == "ReferenceGrantList" and listed["items"][0]["apiVersion"].endswith("/v1beta1")
    bad = _kubectl(cluster, "apply", "-f", "-", check=False, input=(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: bad}\n"
        "spec: {rules: [{backendRefs: [{name: s, port: 70000}]}]}\n"))
    assert bad.returncode == 1 and "spec.rules[0].backendRefs[0].port" in bad.stderr
