"""The apiserver's pure parts: patches, discovery, protobuf bodies, Status."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kyb import errors
from services.apiserver import discovery, patch, protobuf, status

POD = {"spec": {"containers": [
    {"name": "a", "image": "x", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}],
     "volumeMounts": [{"name": "v", "mountPath": "/data"}]},
    {"name": "b", "image": "y"},
], "volumes": [{"name": "v", "emptyDir": {}}]}}


@pytest.mark.parametrize(("body", "expected"), [
    pytest.param({"spec": {"containers": [{"name": "b", "image": "z"}]}},
                 [("a", "x"), ("b", "z")], id="merges-by-name"),
    pytest.param({"spec": {"containers": [{"name": "c", "image": "w"}]}},
                 [("a", "x"), ("b", "y"), ("c", "w")], id="appends-new-key"),
    pytest.param({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}, [("b", "y")], id="patch-delete"),
    pytest.param({"spec": {"containers": [{"name": "q", "image": "r"}, {"$patch": "replace"}]}}, [("q", "r")],
                 id="patch-replace-list"),
    pytest.param({"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}], "spec": {}},
                 [("a", "x"), ("b", "y")], id="order-at-other-level-ignored"),
    pytest.param({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                           "containers": [{"name": "a", "image": "n"}]}}, [("b", "y"), ("a", "n")], id="set-order"),
])
def test_strategic_merge_on_containers(body, expected):
    out = patch.strategic_merge_patch(POD, body)
    assert [(c["name"], c["image"]) for c in out["spec"]["containers"]] == expected


def test_strategic_merge_nested_lists_by_their_keys():
    body = {"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 81}],
                                     "env": [{"name": "A", "value": "2"}, {"name": "B", "value": "3"}],
                                     "volumeMounts": [{"mountPath": "/data", "$patch": "delete"}]}]}}
    [a, _] = patch.strategic_merge_patch(POD, body)["spec"]["containers"]
    assert a["ports"] == [{"containerPort": 80}, {"containerPort": 81}]
    assert a["env"] == [{"name": "A", "value": "2"}, {"name": "B", "value": "3"}]
    assert a["volumeMounts"] == []
    assert POD["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]  # the input is not changed


def test_strategic_map_directives_and_unkeyed_lists_replace():
    doc = {"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]}, "spec": {"args": ["1", "2"]}}
    out = patch.strategic_merge_patch(doc, {"metadata": {"labels": {"$patch": "replace", "c": "3"},
                                                         "finalizers": ["y"]}, "spec": {"args": ["3"]}})
    assert out["metadata"] == {"labels": {"c": "3"}, "finalizers": ["x", "y"]}
    assert out["spec"]["args"] == ["3"]
    assert patch.strategic_merge_patch(doc, {"metadata": {"labels": {"a": None}}})["metadata"]["labels"] == {"b": "2"}


def test_merge_and_json_patch():
    assert patch.apply(patch.MERGE_PATCH, {"a": {"b": 1, "c": 2}, "l": [1, 2]}, {"a": {"b": None}, "l": [3]}) == {
        "a": {"c": 2}, "l": [3]}
    assert patch.apply(patch.JSON_PATCH, {"a": [1]}, [{"op": "add", "path": "/a/-", "value": 2}]) == {"a": [1, 2]}
    with pytest.raises(patch.PatchError):
        patch.apply(patch.JSON_PATCH, {"a": 1}, [{"op": "remove", "path": "/b"}])


json_values = st.recursive(st.none() | st.integers() | st.text(max_size=3),
                           lambda inner: st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=10)


@given(json_values.filter(lambda v: isinstance(v, dict)), json_values.filter(lambda v: isinstance(v, dict)))
def test_merge_patch_is_idempotent(target, body):
    once = patch.merge_patch(target, body)
    assert patch.merge_patch(once, body) == once


def test_discovery_names_what_kubectl_resolves():
    core = {r["name"]: r for r in discovery.resource_list("v1")["resources"]}
    assert core["pods"]["shortNames"] == ["po"] and core["pods"]["categories"] == ["all"]
    assert core["nodes"]["namespaced"] is False and "categories" not in core["configmaps"]
    apps = {r["resource"]: r for g in discovery.aggregated(core=False)["items"] if g["metadata"]["name"] == "apps"
            for v in g["versions"] for r in v["resources"]}
    assert apps["deployments"]["shortNames"] == ["deploy"]
    assert {s["subresource"] for s in apps["deployments"]["subresources"]} >= {"scale", "status"}
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    assert discovery.wants_aggregated(accept) and not discovery.wants_aggregated("application/json")


def _field(number: int, payload: bytes) -> bytes:
    return bytes([number << 3 | 2, len(payload)]) + payload


def test_protobuf_configmap():
    meta = _field(1, b"cm") + _field(2, b"") + _field(11, _field(1, b"app") + _field(2, b"web"))
    raw = _field(1, meta) + _field(2, _field(1, b"k") + _field(2, b"v"))
    body = protobuf.MAGIC + _field(1, _field(1, b"v1") + _field(2, b"ConfigMap")) + _field(2, raw)
    assert protobuf.decode(body) == {"apiVersion": "v1", "kind": "ConfigMap",
                                     "metadata": {"name": "cm", "labels": {"app": "web"}}, "data": {"k": "v"}}
    with pytest.raises(protobuf.Unsupported):
        protobuf.decode(protobuf.MAGIC + _field(1, _field(1, b"apps/v1") + _field(2, b"StatefulSet")))


def _number(number: int, value: int) -> bytes:
    return bytes([number << 3, value])


def _envelope(api_version: bytes, kind: bytes, raw: bytes) -> bytes:
    return protobuf.MAGIC + _field(1, _field(1, api_version) + _field(2, kind)) + _field(2, raw)


def test_protobuf_deployment_as_kubectl_create_deployment_sends_it():
    # Go writes unset non-pointer fields too: empty strings, zero numbers, empty status
    meta = _field(1, b"web") + _field(2, b"") + _number(7, 0) + _field(11, _field(1, b"app") + _field(2, b"web"))
    container = (_field(1, b"busybox") + _field(2, b"busybox:1.36") + _field(3, b"sleep") + _field(3, b"60")
                 + _field(6, _field(1, b"") + _number(2, 0) + _number(3, 80)) + _field(13, b""))
    template = _field(1, _field(11, _field(1, b"app") + _field(2, b"web"))) + _field(2, _field(2, container))
    spec = _number(1, 0) + _field(2, _field(1, _field(1, b"app") + _field(2, b"web"))) + _field(3, template)
    raw = _field(1, meta) + _field(2, spec + _field(4, b"")) + _field(3, _number(1, 0))
    assert protobuf.decode(_envelope(b"apps/v1", b"Deployment", raw)) == {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": 0,  # a pointer: --replicas=0 stays 0
                 "selector": {"matchLabels": {"app": "web"}}, "strategy": {},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                     {"name": "busybox", "image": "busybox:1.36", "command": ["sleep", "60"],
                      "ports": [{"containerPort": 80}]}]}}}}


def test_protobuf_int_or_string_and_inline_structs():
    pdb = _field(1, _field(1, b"budget")) + _field(2, _field(1, _number(1, 1) + _field(3, b"50%"))
                                                    + _field(3, _number(2, 2)))
    assert protobuf.decode(_envelope(b"policy/v1", b"PodDisruptionBudget", pdb))["spec"] == {
        "minAvailable": "50%", "maxUnavailable": 2}
    backend = _field(4, _field(1, b"svc") + _field(2, _field(1, b"http")))
    path = _field(1, b"/api") + _field(2, backend) + _field(3, b"Prefix")
    rule = _field(1, b"shop.example") + _field(2, _field(1, _field(1, path)))
    ingress = protobuf.decode(_envelope(b"networking.k8s.io/v1", b"Ingress", _field(2, _field(3, rule))))
    assert ingress["spec"]["rules"] == [{"host": "shop.example", "http": {"paths": [
        {"path": "/api", "pathType": "Prefix", "backend": {"service": {"name": "svc", "port": {"name": "http"}}}}]}}]


def test_protobuf_role_keeps_the_core_group_as_an_empty_string():
    # kubectl create role --verb=get --resource=pods: apiGroups [""] is an empty repeated string
    rule = _field(1, b"get") + _field(2, b"") + _field(3, b"pods")
    role = protobuf.decode(_envelope(b"rbac.authorization.k8s.io/v1", b"Role", _field(1, _field(1, b"r")) + _field(2, rule)))
    assert role["rules"] == [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]
    pc = protobuf.decode(_envelope(b"scheduling.k8s.io/v1", b"PriorityClass", _field(1, _field(1, b"zero")) + _number(2, 0)))
    assert pc["value"] == 0  # a value, not an unset field


def test_protobuf_body_with_a_field_not_read_is_refused_naming_it():
    # PodSpec field 11 (hostNetwork) is set: a body is never read in part
    template = _field(2, _field(2, _field(1, b"c") + _field(2, b"img")) + _number(11, 1))
    raw = _field(1, _field(1, b"web")) + _field(2, _field(3, template))
    with pytest.raises(protobuf.Unsupported, match="field 11 of PodSpec"):
        protobuf.decode(_envelope(b"apps/v1", b"Deployment", raw))


def test_invalid_becomes_status_with_causes():
    e = errors.Invalid("invalid", [errors.FieldError("spec.replicas", "Invalid value: -1: must be >= 0"),
                                   errors.FieldError("metadata.name", "Required value")])
    doc = status.from_error(e, kind="Deployment", plural="deployments", group="apps", name="web")
    assert doc["code"] == 422 and doc["reason"] == "Invalid"
    assert doc["message"].startswith('Deployment.apps "web" is invalid: spec.replicas')
    assert doc["details"]["causes"] == [
        {"reason": "FieldValueInvalid", "message": "Invalid value: -1: must be >= 0", "field": "spec.replicas"},
        {"reason": "FieldValueRequired", "message": "Required value", "field": "metadata.name"}]
