"""The kind registry, every kind's wire round trip, the generated JSON Schema files, and
the layering rule (schemas imports nothing of kyb or services)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import msgspec
import pytest

from schemas import generate
from schemas.registry import UnknownKind, all_kinds, by_kind, for_manifest, resolve

SCHEMAS_DIR = Path(generate.__file__).parent


@pytest.mark.parametrize(
    ("name", "kind"),
    [("po", "Pod"), ("pods", "Pod"), ("Pod", "Pod"), ("rc", "ReplicationController"), ("rs", "ReplicaSet"),
     ("deploy", "Deployment"), ("deployments.apps", "Deployment"), ("ds", "DaemonSet"), ("svc", "Service"),
     ("ep", "Endpoints"), ("ns", "Namespace"), ("no", "Node"), ("cm", "ConfigMap"), ("pv", "PersistentVolume"),
     ("pvc", "PersistentVolumeClaim"), ("sc", "StorageClass"), ("ing", "Ingress"),
     ("hpa", "HorizontalPodAutoscaler"), ("ev", "Event"), ("jobs", "Job"), ("job.batch", "Job"),
     ("leases", "Lease"), ("endpointslices", "EndpointSlice"), ("ingressclasses", "IngressClass"),
     ("secrets", "Secret"), ("pc", "PriorityClass"), ("priorityclasses.scheduling.k8s.io", "PriorityClass"),
     ("roles", "Role"), ("clusterrole", "ClusterRole"), ("rolebindings.rbac.authorization.k8s.io", "RoleBinding"),
     ("ClusterRoleBinding", "ClusterRoleBinding"), ("limits", "LimitRange"), ("limitranges", "LimitRange"),
     ("quota", "ResourceQuota"), ("resourcequotas", "ResourceQuota")],
)
def test_kubectl_names_resolve(name: str, kind: str) -> None:
    assert resolve(name).kind == kind


def test_scopes_and_versions() -> None:
    cluster = {k.kind for k in all_kinds() if not k.namespaced}
    assert cluster == {"Namespace", "Node", "PersistentVolume", "StorageClass", "IngressClass", "PriorityClass",
                       "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
    assert for_manifest("autoscaling/v1", "HorizontalPodAutoscaler").bucket == "kyb-horizontalpodautoscalers"
    assert by_kind("Deployment").api_version == "apps/v1"
    with pytest.raises(UnknownKind):
        resolve("widgets")


@pytest.mark.parametrize("info", all_kinds(), ids=lambda k: k.kind)
def test_every_kind_says_what_it_is_on_the_wire(info) -> None:
    fields = {f.name for f in msgspec.structs.fields(info.type) if f.required}
    minimal = {}
    if "spec" in fields:  # HPA
        minimal["spec"] = {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 1}
    if "provisioner" in fields:  # StorageClass
        minimal["provisioner"] = "kyb.io/hostpath"
    if "value" in fields:  # PriorityClass
        minimal["value"] = 1
    if "roleRef" in fields:  # RoleBinding, ClusterRoleBinding
        minimal["roleRef"] = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}
    obj = msgspec.convert({"metadata": {"name": "x"}, **minimal}, info.type)
    wire = json.loads(msgspec.json.encode(obj))
    assert wire["kind"] == info.kind and wire["apiVersion"] == info.api_version
    assert msgspec.json.decode(msgspec.json.encode(obj), type=info.type) == obj


def test_json_schema_files_are_current() -> None:
    expected = generate.expected_files()
    on_disk = {p.name: p.read_bytes() for p in (SCHEMAS_DIR / "jsonschema").glob("*.json")}
    stale = sorted(n for n in expected if on_disk.get(n) != expected[n])
    extra = sorted(set(on_disk) - set(expected))
    assert not stale and not extra, (
        f"schemas/jsonschema is out of date (stale or missing: {stale}, extra: {extra}); "
        "run `python -m schemas.generate` and commit the result"
    )


def test_json_schema_names_kind_and_rejects_unknown_fields() -> None:
    schema = json.loads((SCHEMAS_DIR / "jsonschema" / "deployments.json").read_text())
    top = schema["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    assert top["properties"]["kind"]["enum"] == ["Deployment"]
    assert top["additionalProperties"] is False
    assert {"apiVersion", "kind"} <= set(top["required"])


def test_schemas_imports_nothing_above_it() -> None:
    offenders = []
    for path in SCHEMAS_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module]
            offenders += [f"{path.name}: {m}" for m in mods
                          if m.split(".")[0] in {"kyb", "services", "nats", "docker", "asyncio"}]
    assert offenders == []


def _struct_with_doc(doc: str) -> type:
    return msgspec.defstruct("Widget", [("size", int)], kw_only=True, namespace={"__doc__": doc})


def test_generator_output_does_not_depend_on_docstring_indentation() -> None:
    # One docstring as the source holds it, one as a msgspec release that dedents leaves it.
    raw = _struct_with_doc("A widget.\n\n        Its size is in\n          whole units.\n        ")
    dedented = _struct_with_doc("A widget.\n\nIts size is in\n  whole units.")
    first, second = (generate.encode(generate.type_schema(t)) for t in (raw, dedented))
    assert first == second
    assert json.loads(first)["$defs"]["Widget"]["description"] == "A widget.\n\nIts size is in\n  whole units."
    assert generate.encode(generate.type_schema(raw)) == first  # and the same bytes every run
