"""Custom resources against their CRD's schema (schemas.structural), printer-column JSONPath
(schemas.jsonpath) and CRD validation (schemas.apiextensions): pure, no cluster."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import apiextensions, jsonpath, structural
from schemas.validation import SchemaError, decode

SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["image"],
            "properties": {
                "image": {"type": "string", "minLength": 1},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                "mode": {"type": "string", "enum": ["Fast", "Safe"], "default": "Safe"},
                "port": {"x-kubernetes-int-or-string": True},
                "when": {"type": "string", "format": "date-time"},
                "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                          "items": {"type": "object", "properties": {"name": {"type": "string"},
                                                                    "port": {"type": "integer", "format": "int32"}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "note": {"type": "string", "nullable": True},
                "template": {"type": "object", "x-kubernetes-embedded-resource": True,
                             "x-kubernetes-preserve-unknown-fields": True},
            },
        },
        "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
    },
}


def check(spec):
    doc = structural.default(SCHEMA, {"spec": spec})
    return doc, dict(structural.validate(SCHEMA, doc, root=True))


def test_defaults_fill_missing_fields_and_nulls():
    doc, problems = check({"image": "x", "replicas": None})
    assert problems == {}
    assert doc["spec"]["replicas"] == 1 and doc["spec"]["mode"] == "Safe"


def test_each_problem_names_its_field_in_kubernetes_words():
    _, problems = check({"replicas": "3", "mode": "Slow", "when": "yesterday", "port": 1.5,
                         "tags": ["a", "a"], "ports": [{"name": "p", "port": 2**31}, {"name": "p"}],
                         "labels": {"a": 1}, "extra": True})
    assert problems["spec.image"] == "Required value"
    assert problems["spec.replicas"] == 'Invalid value: "string": spec.replicas in body must be of type integer: "string"'
    assert problems["spec.mode"] == 'Unsupported value: "Slow": supported values: "Fast", "Safe"'
    assert "must be of type date-time" in problems["spec.when"]
    assert "integer,string" in problems["spec.port"]
    assert problems["spec.tags[1]"] == 'Duplicate value: "a"'
    assert "int32" in problems["spec.ports[0].port"]
    assert problems["spec.ports[1]"].startswith("Duplicate value")
    assert "must be of type string" in problems["spec.labels.a"]
    assert problems["spec.extra"] == 'unknown field "spec.extra"'


def test_preserved_and_embedded_fields():
    _, problems = check({"image": "x", "free": {"anything": {"goes": [1]}}, "note": None,
                         "template": {"apiVersion": "v1", "kind": "Pod", "spec": {}}})
    assert problems == {}
    _, problems = check({"image": "x", "template": {"spec": {}}})
    assert problems["spec.template.apiVersion"].startswith("Required value")


def test_combinators_validate_values_without_declaring_them():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
              "oneOf": [{"required": ["a"]}, {"required": ["b"]}]}
    assert structural.validate(schema, {"a": 1}) == []
    assert "one and only one" in structural.validate(schema, {"a": 1, "b": 2})[0][1]
    assert structural.validate(schema, {})


def test_structural_problems_of_a_schema():
    assert structural.structural_problems({"type": "object", "properties": {"x": {}}}, "s") == [
        ("s.properties[x].type", "Required value: must not be empty for specified object fields")]
    problems = dict(structural.structural_problems(
        {"type": "object", "properties": {"metadata": {"type": "object", "properties": {"labels": {"type": "object"}}},
                                          "n": {"type": "integer", "default": "one"},
                                          "l": {"type": "array"}}}, "s"))
    assert "s.properties[metadata].properties[labels]" in problems
    assert "must be of type integer" in problems["s.properties[n].default"]
    assert problems["s.properties[l].items"] == "Required value: must be specified"
    assert structural.structural_problems(SCHEMA, "s") == []


@given(st.integers(min_value=-100, max_value=100))
def test_integer_bounds_hold_exactly_at_their_edges(n):
    _, problems = check({"image": "x", "replicas": n})
    assert ("spec.replicas" in problems) == (not 1 <= n <= 10)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=10,
)


@given(json_values)
def test_defaulting_is_idempotent_and_leaves_its_input_alone(value):
    before = copy.deepcopy(value)
    once = structural.default(SCHEMA, {"spec": value})
    assert structural.default(SCHEMA, once) == once
    assert value == before


@given(json_values)
def test_a_preserving_schema_accepts_any_object(value):
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert structural.validate(schema, {"spec": value}) == []


def test_jsonpath_of_printer_columns():
    obj = {"spec": {"hostnames": ["a", "b"], "rules": [{"n": 1}, {"n": 2}]},
           "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Done", "status": "False"}]}}
    assert jsonpath.find(".spec.hostnames", obj) == [["a", "b"]]
    assert jsonpath.find(".spec.hostnames[*]", obj) == ["a", "b"]
    assert jsonpath.find(".spec.rules[-1].n", obj) == [2]
    assert jsonpath.find('.status.conditions[?(@.type=="Ready")].status', obj) == ["True"]
    assert jsonpath.find("{.spec.rules[0:1]}", obj) == [{"n": 1}]
    assert jsonpath.find("..n", obj) == [1, 2]
    assert jsonpath.find(".spec.missing", obj) == []
    with pytest.raises(jsonpath.JsonPathError):
        jsonpath.parse(".spec[?(weird)]")


def crd(**changes):
    doc = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.example.com"},
           "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"plural": "widgets", "kind": "Widget"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": SCHEMA}},
                                 {"name": "v1beta1", "served": True, "storage": False,
                                  "schema": {"openAPIV3Schema": SCHEMA}}]}}
    doc["spec"].update(changes)
    return doc


def test_a_crds_defaults_and_the_kind_it_makes():
    made = decode(crd())
    assert made.spec.names.singular == "widget" and made.spec.names.listKind == "WidgetList"
    info = apiextensions.custom_kind(made)
    assert info.api_versions == ("example.com/v1", "example.com/v1beta1")
    assert info.bucket == "kyb-widgets_example_com" and info.namespaced
    assert set(info.type.__struct_fields__) == {"apiVersion", "kind", "metadata", "spec", "status"}


def test_bad_crds_name_their_fields():
    with pytest.raises(SchemaError) as e:
        decode(crd(group="example", scope="Everywhere",
                   names={"plural": "Widgets", "kind": "widget-thing"}))
    fields = {f for f, _ in e.value.details}
    assert {"spec.group", "spec.scope", "spec.names.plural", "spec.names.kind", "metadata.name"} <= fields


def test_version_priority_is_kubernetes_order():
    names = ["v1alpha1", "v2", "foo", "v1beta2", "v1", "v1beta1", "v10", "v11alpha2"]
    assert sorted(names, key=apiextensions.version_priority) == [
        "v10", "v2", "v1", "v1beta2", "v1beta1", "v11alpha2", "v1alpha1", "foo"]
