"""Decoding manifests: examples from the Kubernetes docs decode cleanly, bad manifests name
their field, and defaults are filled in as Kubernetes fills them."""

from __future__ import annotations

import base64
from typing import Any

import msgspec
import pytest
import yaml

from schemas.apps import Deployment
from schemas.autoscaling import HorizontalPodAutoscaler, effective_metrics
from schemas.batch import Job
from schemas.core import ReplicationController, Secret, Service
from schemas.defaults import apply_defaults, image_pull_policy
from schemas.pod import Pod
from schemas.registry import UnknownKind
from schemas.validation import SchemaError, decode, validate

DOCS_DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
  labels:
    app: nginx
spec:
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.2
        ports:
        - containerPort: 80
"""

DOCS_SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  type: NodePort
  selector:
    app.kubernetes.io/name: MyApp
  ports:
    - port: 80
      # By default and for convenience, the `targetPort` is set to the same value as the `port` field.
      targetPort: 80
      # Optional field
      nodePort: 30007
"""

DOCS_POD = """
apiVersion: v1
kind: Pod
metadata:
  name: frontend
spec:
  initContainers:
  - name: init-myservice
    image: busybox:1.28
    command: ['sh', '-c', "until nslookup myservice; do echo waiting; sleep 2; done"]
  containers:
  - name: app
    image: images.my-company.example/app:v4
    env:
    - name: MY_NODE_NAME
      valueFrom:
        fieldRef:
          fieldPath: spec.nodeName
    - name: SPECIAL_LEVEL_KEY
      valueFrom:
        configMapKeyRef:
          name: special-config
          key: special.how
    envFrom:
    - secretRef:
        name: mysecret
    resources:
      requests:
        memory: "64Mi"
        cpu: "250m"
      limits:
        memory: "128Mi"
        cpu: 1
    livenessProbe:
      httpGet:
        path: /healthz
        port: 8080
        httpHeaders:
        - name: Custom-Header
          value: Awesome
      initialDelaySeconds: 3
      periodSeconds: 3
    readinessProbe:
      tcpSocket:
        port: http
    lifecycle:
      preStop:
        exec:
          command: ["/bin/sh", "-c", "nginx -s quit; while killall -0 nginx; do sleep 1; done"]
    ports:
    - name: http
      containerPort: 8080
    volumeMounts:
    - name: cache-volume
      mountPath: /cache
    - name: podinfo
      mountPath: /etc/podinfo
  - name: log-aggregator
    image: images.my-company.example/log-aggregator:v6
    imagePullPolicy: Never
  volumes:
  - name: cache-volume
    emptyDir:
      sizeLimit: 500Mi
      medium: Memory
  - name: podinfo
    downwardAPI:
      items:
        - path: "labels"
          fieldRef:
            fieldPath: metadata.labels
  nodeSelector:
    disktype: ssd
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions:
          - key: topology.kubernetes.io/zone
            operator: In
            values: [antarctica-east1]
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 1
        preference:
          matchExpressions:
          - key: another-node-label-key
            operator: In
            values: [another-node-label-value]
  tolerations:
  - key: "example-key"
    operator: "Exists"
    effect: "NoSchedule"
"""


def _load(text: str) -> dict[str, Any]:
    return yaml.safe_load(text)


def test_docs_deployment_decodes_with_defaults() -> None:
    d = decode(_load(DOCS_DEPLOYMENT))
    assert isinstance(d, Deployment)
    assert d.spec.replicas == 3
    assert d.spec.strategy.type == "RollingUpdate"
    assert d.spec.strategy.rollingUpdate is not None
    assert (d.spec.strategy.rollingUpdate.maxSurge, d.spec.strategy.rollingUpdate.maxUnavailable) == ("25%", "25%")
    assert (d.spec.revisionHistoryLimit, d.spec.progressDeadlineSeconds, d.spec.minReadySeconds) == (10, 600, 0)
    c = d.spec.template.spec.containers[0]
    assert c.imagePullPolicy == "IfNotPresent"
    assert c.ports[0].protocol == "TCP"
    assert c.terminationMessagePath == "/dev/termination-log"
    pod_spec = d.spec.template.spec
    assert (pod_spec.restartPolicy, pod_spec.terminationGracePeriodSeconds, pod_spec.dnsPolicy,
            pod_spec.schedulerName) == ("Always", 30, "ClusterFirst", "default-scheduler")


def test_docs_service_decodes() -> None:
    s = decode(_load(DOCS_SERVICE))
    assert isinstance(s, Service)
    assert s.spec.type == "NodePort" and s.spec.sessionAffinity == "None"
    assert (s.spec.ports[0].port, s.spec.ports[0].targetPort, s.spec.ports[0].nodePort) == (80, 80, 30007)
    assert s.spec.ports[0].protocol == "TCP"


def test_docs_pod_decodes() -> None:
    p = decode(_load(DOCS_POD))
    assert isinstance(p, Pod)
    app = p.spec.containers[0]
    assert app.imagePullPolicy == "IfNotPresent"
    assert p.spec.containers[1].imagePullPolicy == "Never"
    assert p.spec.initContainers[0].imagePullPolicy == "IfNotPresent"
    assert app.resources.limits == {"memory": "128Mi", "cpu": "1"}  # a YAML number becomes a quantity string
    assert app.livenessProbe is not None and app.livenessProbe.httpGet is not None
    assert (app.livenessProbe.periodSeconds, app.livenessProbe.timeoutSeconds,
            app.livenessProbe.failureThreshold) == (3, 1, 3)
    assert app.readinessProbe is not None and app.readinessProbe.periodSeconds == 10
    assert app.env[1].valueFrom is not None and app.env[1].valueFrom.configMapKeyRef is not None
    assert p.spec.volumes[0].emptyDir is not None and p.spec.volumes[0].emptyDir.medium == "Memory"
    assert p.spec.tolerations[0].operator == "Exists"


def test_decoded_objects_round_trip_through_json() -> None:
    for text in (DOCS_DEPLOYMENT, DOCS_SERVICE, DOCS_POD):
        obj = decode(_load(text))
        wire = msgspec.json.encode(obj)
        assert decode(wire) == obj
        assert b'"kind"' in wire and b'"apiVersion"' in wire


def test_yaml_and_json_bytes_are_accepted() -> None:
    assert decode(DOCS_SERVICE.encode()).metadata.name == "my-service"
    assert decode(msgspec.json.encode(_load(DOCS_SERVICE))).metadata.name == "my-service"


def test_yaml_timestamps_become_rfc3339_strings() -> None:
    raw = _load(DOCS_SERVICE)
    raw["metadata"]["creationTimestamp"] = yaml.safe_load("t: 2024-01-01T00:00:00Z")["t"]
    assert decode(raw).metadata.creationTimestamp == "2024-01-01T00:00:00Z"


def _pod(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"containers": [{"name": "app", "image": "busybox"}]}
    base.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": base}


def _deploy(template_labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    labels = {"app": "web"} if template_labels is None else template_labels
    body: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": labels},
                     "spec": {"containers": [{"name": "app", "image": "busybox"}]}},
    }
    body.update(spec)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": body}


def _with(raw: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    import copy

    out = copy.deepcopy(raw)
    cur = out
    for part in path[:-1]:
        cur = cur[part]
    cur[path[-1]] = value
    return out


def _job(restart: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox"}]}
    if restart:
        spec["restartPolicy"] = restart
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {"spec": spec}}}


def _svc(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"selector": {"app": "web"}, "ports": [{"port": 80}]}
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": body}


BAD = [
    pytest.param(_with(_pod(), ["spec", "containers", 0, "image"], 5), "spec.containers[0].image", "Expected `str`",
                 id="wrong-type"),
    pytest.param(_pod(containers=[{"image": "busybox"}]), "spec.containers[0].name", "Required value",
                 id="missing-required"),
    pytest.param(_pod(containers={"name": "a", "image": "b"}), "spec.containers", "Expected `array`",
                 id="object-where-list-belongs"),
    pytest.param(_pod(nodeSelector=["a"]), "spec.nodeSelector", "Expected `object`", id="list-where-object-belongs"),
    pytest.param(_with(_pod(), ["spec", "containers", 0, "imagee"], "x"), "spec.containers[0].imagee",
                 'unknown field "imagee"', id="unknown-field"),
    pytest.param(_with(_pod(), ["metadata"], {}), "metadata.name", "name or generateName is required",
                 id="no-name"),
    pytest.param(_with(_pod(), ["metadata", "name"], "Web_1"), "metadata.name", "RFC 1123 subdomain",
                 id="bad-name"),
    pytest.param(_with(_pod(), ["metadata", "namespace"], "a.b"), "metadata.namespace", "RFC 1123 label",
                 id="bad-namespace"),
    pytest.param(_with(_pod(), ["metadata", "labels"], {"a b": "x"}), "metadata.labels[a b]", "name part",
                 id="bad-label-key"),
    pytest.param(_with(_pod(), ["metadata", "labels"], {"app": "-x"}), "metadata.labels[app]", "valid label",
                 id="bad-label-value"),
    pytest.param(_pod(containers=[]), "spec.containers", "Required value", id="no-containers"),
    pytest.param(_pod(containers=[{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]),
                 "spec.containers[1].name", "Duplicate value", id="duplicate-container"),
    pytest.param(_pod(containers=[{"name": "a"}]), "spec.containers[0].image", "Required value", id="no-image"),
    pytest.param(_pod(containers=[{"name": "a", "image": "x", "ports": [{"containerPort": 70000}]}]),
                 "spec.containers[0].ports[0].containerPort", "between 1 and 65535", id="port-range"),
    pytest.param(_pod(containers=[{"name": "a", "image": "x", "ports": [{"containerPort": 80, "name": "h"},
                                                                       {"containerPort": 81, "name": "h"}]}]),
                 "spec.containers[0].ports[1].name", "Duplicate value", id="duplicate-port-name"),
    pytest.param(_pod(containers=[{"name": "a", "image": "x", "livenessProbe": {
        "exec": {"command": ["true"]}, "httpGet": {"port": 80}}}]),
                 "spec.containers[0].livenessProbe.httpGet", "more than 1 handler", id="two-probe-handlers"),
    pytest.param(_pod(containers=[{"name": "a", "image": "x", "readinessProbe": {"periodSeconds": 5}}]),
                 "spec.containers[0].readinessProbe", "must specify a handler", id="no-probe-handler"),
    pytest.param(_pod(containers=[{"name": "a", "image": "x", "resources": {"requests": {"cpu": "lots"}}}]),
                 "spec.containers[0].resources.requests[cpu]", "quantities must match", id="bad-quantity"),
    pytest.param(_pod(containers=[{"name": "a", "image": "x", "resources": {"requests": {"memory": "2Gi"},
                                                                            "limits": {"memory": "1Gi"}}}]),
                 "spec.containers[0].resources.requests[memory]", "less than or equal to memory limit",
                 id="requests-above-limits"),
    pytest.param(_pod(containers=[{"name": "a", "image": "x", "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]),
                 "spec.containers[0].volumeMounts[0].name", "Not found", id="mount-of-unknown-volume"),
    pytest.param(_pod(restartPolicy="Sometimes"), "spec.restartPolicy", "Invalid enum value", id="bad-enum"),
    pytest.param(_deploy({"app": "api"}), "spec.template.metadata.labels", "selector does not match template labels",
                 id="selector-mismatch"),
    pytest.param(_with(_deploy(), ["spec", "selector"], None), "spec.selector", "Required value",
                 id="apps-selector-required"),
    pytest.param(_deploy(replicas=-1), "spec.replicas", "greater than or equal to 0", id="negative-replicas"),
    pytest.param(_with(_deploy(), ["spec", "template", "spec", "restartPolicy"], "Never"),
                 "spec.template.spec.restartPolicy", 'Unsupported value: "Never"', id="deployment-restart-never"),
    pytest.param(_deploy(strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}),
                 "spec.strategy.rollingUpdate.maxUnavailable", "may not be 0", id="surge-and-unavailable-zero"),
    pytest.param(_job(None), "spec.template.spec.restartPolicy", 'Unsupported value: "Always"',
                 id="job-restart-always"),
    pytest.param(_svc(ports=[{"port": 0}]), "spec.ports[0].port", "between 1 and 65535", id="service-port"),
    pytest.param(_svc(type="NodePort", ports=[{"port": 80, "nodePort": 80}]), "spec.ports[0].nodePort",
                 "30000-32767", id="nodeport-range"),
    pytest.param(_svc(ports=[{"port": 80, "nodePort": 30080}]), "spec.ports[0].nodePort", "ClusterIP",
                 id="nodeport-on-clusterip"),
    pytest.param(_svc(ports=[{"port": 80}, {"port": 81}]), "spec.ports[0].name", "Required value",
                 id="multi-port-names"),
    pytest.param(_with(_svc(), ["metadata", "name"], "1web"), "metadata.name", "DNS-1035", id="service-name"),
    pytest.param({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}}, "metadata.name",
                 "RFC 1123 label", id="namespace-name-is-a-label"),
    pytest.param({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "not base64!"}},
                 "data[k]", "illegal base64", id="secret-base64"),
    pytest.param({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
                  "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 5,
                           "maxReplicas": 2}}, "spec.maxReplicas", "minReplicas", id="hpa-min-above-max"),
    pytest.param({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
                  "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 2,
                           "metrics": [{"type": "Resource"}]}}, "spec.metrics", "autoscaling/v1",
                 id="v2-field-in-v1-hpa"),
    pytest.param({"kind": "Pod", "metadata": {"name": "p"}}, "apiVersion", "Required value", id="no-apiversion"),
    pytest.param(_with(_pod(), ["metadata", "labels"], {"app": "web", "version": 2}), "metadata.labels[version]",
                 "Expected `str`, got `int`", id="number-as-label-value"),
    pytest.param({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": 2}},
                 "data[b]", "Expected `str`", id="configmap-number-value"),
    pytest.param(_deploy(selector={"matchLabels": {}}), "spec.selector", "empty selector", id="empty-selector"),
]


@pytest.mark.parametrize(("raw", "field", "fragment"), BAD)
def test_bad_manifests_name_their_field(raw: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(SchemaError) as err:
        decode(raw)
    fields = {f: m for f, m in err.value.details}
    assert field in fields, err.value.details
    assert fragment in fields[field]
    assert field in str(err.value)


def test_unknown_kinds_and_versions() -> None:
    with pytest.raises(UnknownKind, match="Deploymnet"):
        decode({"apiVersion": "apps/v1", "kind": "Deploymnet", "metadata": {"name": "x"}})
    with pytest.raises(UnknownKind, match="extensions/v1beta1"):
        decode(_with(_deploy(), ["apiVersion"], "extensions/v1beta1"))


def test_undecodable_payload() -> None:
    with pytest.raises(SchemaError, match="mapping"):
        decode(b"- just\n- a list\n")


def test_several_problems_are_all_reported() -> None:
    raw = _pod(containers=[{"name": "a"}, {"name": "a", "image": "x"}])
    with pytest.raises(SchemaError) as err:
        decode(raw)
    assert [f for f, _ in err.value.details] == ["spec.containers[0].image", "spec.containers[1].name"]


@pytest.mark.parametrize(
    ("image", "policy"),
    [("nginx", "Always"), ("nginx:latest", "Always"), ("nginx:1.25", "IfNotPresent"),
     ("localhost:5000/app", "Always"), ("localhost:5000/app:v1", "IfNotPresent"),
     ("busybox@sha256:" + "a" * 64, "IfNotPresent")],
)
def test_image_pull_policy_follows_the_tag(image: str, policy: str) -> None:
    assert image_pull_policy(image) == policy


def test_job_defaults() -> None:
    job = decode(_job("Never"))
    assert isinstance(job, Job)
    assert (job.spec.completions, job.spec.parallelism, job.spec.backoffLimit) == (1, 1, 6)
    assert (job.spec.completionMode, job.spec.suspend) == ("NonIndexed", False)
    parallel = decode(_with(_job("Never"), ["spec", "parallelism"], 3))
    assert (parallel.spec.completions, parallel.spec.parallelism) == (None, 3)  # work queue: no completions


def test_daemonset_defaults() -> None:
    raw = _with(_deploy(), ["kind"], "DaemonSet")
    ds = decode(raw)
    ru = ds.spec.updateStrategy.rollingUpdate
    assert ds.spec.updateStrategy.type == "RollingUpdate" and ru is not None
    assert (ru.maxUnavailable, ru.maxSurge, ds.spec.revisionHistoryLimit) == (1, 0, 10)


def test_replication_controller_selector_defaults_to_template_labels() -> None:
    rc = decode({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "rc"},
                 "spec": {"template": {"metadata": {"labels": {"app": "x"}},
                                       "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    assert isinstance(rc, ReplicationController)
    assert rc.spec.selector == {"app": "x"} and rc.metadata.labels == {"app": "x"} and rc.spec.replicas == 1


def test_service_and_namespace_and_storage_defaults() -> None:
    svc = decode(_svc(ports=[{"port": 8080}]))
    assert svc.spec.type == "ClusterIP" and svc.spec.sessionAffinity == "None"
    assert svc.spec.ports[0].targetPort == 8080 and svc.spec.ports[0].protocol == "TCP"
    ns = decode({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    assert ns.status.phase == "Active"
    pv = decode({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv1"},
                 "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                          "hostPath": {"path": "/data"}}})
    assert pv.spec.persistentVolumeReclaimPolicy == "Retain"
    pvc = decode({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"},
                  "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": 1}}}})
    assert pvc.spec.volumeMode == "Filesystem" and pvc.spec.resources.requests == {"storage": "1"}


def test_secret_string_data_is_merged_into_data() -> None:
    s = decode({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                "data": {"a": base64.b64encode(b"old").decode()}, "stringData": {"b": "héllo", "a": "new"}})
    assert isinstance(s, Secret)
    assert s.stringData == {} and s.type == "Opaque"
    assert {k: base64.b64decode(v).decode() for k, v in s.data.items()} == {"a": "new", "b": "héllo"}


def test_apply_defaults_returns_a_new_object_and_is_idempotent() -> None:
    pod = msgspec.convert(_pod(), Pod)
    defaulted = apply_defaults(pod)
    assert pod.spec.containers[0].imagePullPolicy is None
    assert defaulted.spec.containers[0].imagePullPolicy == "Always"
    assert apply_defaults(defaulted) == defaulted
    assert validate(defaulted) == []


def test_volume_without_source_defaults_to_empty_dir() -> None:
    pod = decode(_pod(volumes=[{"name": "scratch"}]))
    assert pod.spec.volumes[0].emptyDir is not None


def test_hpa_accepts_both_versions() -> None:
    v1 = decode({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
                 "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                          "maxReplicas": 10, "targetCPUUtilizationPercentage": 50}})
    v2 = decode({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
                 "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                          "maxReplicas": 10,
                          "metrics": [{"type": "Resource", "resource": {"name": "memory", "target": {
                              "type": "AverageValue", "averageValue": "500Mi"}}}],
                          "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300, "policies": [
                              {"type": "Percent", "value": 100, "periodSeconds": 15}]}}}})
    assert isinstance(v1, HorizontalPodAutoscaler) and isinstance(v2, HorizontalPodAutoscaler)
    assert v1.apiVersion == "autoscaling/v1" and v1.spec.minReplicas == 1
    m1 = effective_metrics(v1.spec)[0]
    assert m1.resource is not None and (m1.resource.name, m1.resource.target.averageUtilization) == ("cpu", 50)
    m2 = effective_metrics(v2.spec)[0]
    assert m2.resource is not None and m2.resource.target.averageValue == "500Mi"


def test_free_form_data_is_normalised_as_before():
    # A ControllerRevision's data is free-form: only normalising turns ``cpu: 1`` into the
    # quantity "1" there, so it is never decoded on the strict fast path alone.
    raw = yaml.safe_load(
        "apiVersion: apps/v1\nkind: ControllerRevision\nmetadata: {name: r1}\nrevision: 1\n"
        "data: {spec: {template: {spec: {containers: [{name: c, resources: {limits: {cpu: 1}}}]}}}}\n"
    )
    data = decode(raw).data
    assert data["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "1"}


def test_a_manifest_that_needs_no_normalising_decodes_the_same_either_way():
    as_json = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}},
               "spec": {"containers": [{"name": "c", "image": "i", "resources": {"limits": {"cpu": "1"}}}]}}
    as_yaml = yaml.safe_load(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {a: b}}\n"
        "spec: {containers: [{name: c, image: i, resources: {limits: {cpu: 1}}}]}\n"
    )
    assert decode(as_json) == decode(as_yaml)
