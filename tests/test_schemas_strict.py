"""Field validation's findings (schemas/strict.py), pure: unknown fields at Kubernetes' paths,
the manifest without them, and keys a JSON text repeats."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import strict
from schemas.apps import Deployment
from schemas.core import ConfigMap
from schemas.strict import duplicate_fields, pruned, unknown_fields

DEPLOY = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "labels": {"app": "web"},
                 "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:anything": {}}}}]},
    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}},
                          "spec": {"containers": [{"name": "web", "image": "nginx",
                                                   "resources": {"limits": {"cpu": "1"}},
                                                   "ports": [{"containerPort": 80}]}]}}},
}


def test_a_valid_manifest_has_none_and_is_kept_as_it_is():
    assert unknown_fields(Deployment, DEPLOY) == []
    assert pruned(Deployment, DEPLOY) == (DEPLOY, [])


@pytest.mark.parametrize("where, key, path", [
    pytest.param(("metadata",), "colour", "metadata.colour", id="metadata"),
    pytest.param(("spec",), "replica", "spec.replica", id="spec"),
    pytest.param(("spec", "template", "spec", "containers", 0), "imagePullPolicyy",
                 "spec.template.spec.containers[0].imagePullPolicyy", id="list-element"),
    pytest.param(("spec", "template", "spec", "containers", 0, "ports", 0), "hostPortt",
                 "spec.template.spec.containers[0].ports[0].hostPortt", id="nested-list"),
    pytest.param((), "bogus", "bogus", id="top-level"),
])
def test_an_unknown_field_is_found_at_its_path_and_pruned(where, key, path):
    doc = json.loads(json.dumps(DEPLOY))
    node = doc
    for step in where:
        node = node[step]
    node[key] = "x"
    assert unknown_fields(Deployment, doc) == [path]
    kept, found = pruned(Deployment, doc)
    assert found == [path] and kept == DEPLOY
    assert key in node  # the manifest given is left alone


def test_free_form_fields_hold_anything():
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "annotations": {"any": "thing"}},
          "data": {"whatever-key": "v"}}
    assert unknown_fields(ConfigMap, cm) == []


def test_repeated_keys_are_found_with_their_paths():
    text = b'{"a": 1, "a": 2, "spec": {"x": {"y": 1, "y": 2}, "list": [{"n": 1, "n": 2}]}}'
    assert duplicate_fields(text) == ["a", "spec.list[0].n", "spec.x.y"]
    assert duplicate_fields(b'{"a": 1}') == [] and duplicate_fields(b"not json") == []


def _repeated_slowly(text: str) -> list[str]:
    """The repeated keys of ``text``, found the plain way (every object's pairs)."""
    found: list[str] = []

    def walk(value, path):
        if isinstance(value, list) and value and isinstance(value[0], tuple):
            keys = [k for k, _ in value]
            found.extend(f"{path}.{k}" if path else k for k in dict.fromkeys(k for k in keys if keys.count(k) > 1))
            for k, v in dict(value).items():
                walk(v, f"{path}.{k}" if path else k)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]")

    walk(json.loads(text, object_pairs_hook=list), "")
    return sorted(found)


_leaf = st.none() | st.booleans() | st.integers() | st.text(alphabet='ab":\\ {}', max_size=4)
_docs = st.recursive(_leaf, lambda kids: st.lists(kids, max_size=3)
                     | st.dictionaries(st.text(alphabet='ab":', max_size=2), kids, max_size=3), max_leaves=12)


@given(_docs, st.data())
def test_the_quick_look_never_hides_a_repeated_key(doc, data):
    text = json.dumps(doc)
    if isinstance(doc, dict) and doc and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(doc)))
        text = text[:-1] + ", " + json.dumps(key) + ": 0}"
    assert strict.duplicate_fields(text.encode()) == _repeated_slowly(text)
