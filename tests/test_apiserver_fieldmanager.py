"""Server-side apply's field ownership (services/apiserver/fieldmanager.py), pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.apiserver import fieldmanager as fm

NOW = "2026-01-01T00:00:00Z"


def deploy(replicas: int | None = 1, image: str = "busybox", labels: dict | None = None, **extra) -> dict:
    spec: dict = {"selector": {"matchLabels": {"app": "x"}},
                  "template": {"metadata": {"labels": {"app": "x"}},
                               "spec": {"containers": [{"name": "main", "image": image}]}}}
    if replicas is not None:
        spec["replicas"] = replicas
    spec |= extra
    meta: dict = {"name": "x", "namespace": "default"}
    if labels is not None:
        meta["labels"] = labels
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}


def stored(obj: dict, rv: str = "1") -> dict:
    obj["metadata"] |= {"uid": "u", "resourceVersion": rv, "creationTimestamp": NOW}
    obj["status"] = {"replicas": 0}
    return obj


def entry(obj: dict, manager: str) -> dict:
    [e] = [e for e in obj["metadata"]["managedFields"] if e["manager"] == manager]
    return e


def test_apply_records_the_fields_of_the_configuration():
    made = fm.apply(None, deploy(labels={"a": "1"}), "alice", force=False, now=NOW)
    e = entry(made, "alice")
    assert (e["operation"], e["apiVersion"], e["fieldsType"], e["time"]) == ("Apply", "apps/v1", "FieldsV1", NOW)
    fields = e["fieldsV1"]
    assert fields["f:metadata"] == {"f:labels": {"f:a": {}}}
    assert fields["f:spec"]["f:replicas"] == {}
    container = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"main"}']
    assert container == {".": {}, "f:name": {}, "f:image": {}}
    assert "f:status" not in fields and "f:name" not in fields["f:metadata"]


def test_another_manager_setting_a_field_to_another_value_conflicts():
    live = stored(fm.apply(None, deploy(replicas=1), "alice", force=False, now=NOW))
    with pytest.raises(fm.Conflicts) as e:
        fm.apply(live, deploy(replicas=3, image="other"), "bob", force=False, now=NOW)
    fields = sorted(c.field for c in e.value.conflicts)
    assert fields == ['.spec.replicas', '.spec.template.spec.containers[name="main"].image']
    assert {c.manager for c in e.value.conflicts} == {"alice"}
    assert str(e.value).startswith("Apply failed with 2 conflicts: conflict with \"alice\" using apps/v1")


def test_the_same_value_is_owned_together_and_force_takes_a_field():
    live = stored(fm.apply(None, deploy(replicas=1), "alice", force=False, now=NOW))
    shared = stored(fm.apply(live, deploy(replicas=1), "bob", force=False, now=NOW))
    assert "f:replicas" in entry(shared, "alice")["fieldsV1"]["f:spec"]
    assert "f:replicas" in entry(shared, "bob")["fieldsV1"]["f:spec"]
    forced = stored(fm.apply(shared, deploy(replicas=5), "carol", force=True, now=NOW))
    assert forced["spec"]["replicas"] == 5
    assert "f:replicas" not in entry(forced, "alice")["fieldsV1"]["f:spec"]
    assert "f:replicas" in entry(forced, "carol")["fieldsV1"]["f:spec"]
    assert forced["status"] == {"replicas": 0}


def test_a_field_no_longer_applied_is_removed_unless_someone_else_owns_it():
    live = stored(fm.apply(None, deploy(labels={"a": "1", "b": "2"}), "alice", force=False, now=NOW))
    dropped = fm.apply(live, deploy(labels={"a": "1"}), "alice", force=False, now=NOW)
    assert dropped["metadata"]["labels"] == {"a": "1"}
    both = stored(fm.apply(live, deploy(labels={"b": "2"}), "bob", force=False, now=NOW))
    kept = fm.apply(both, deploy(labels={"a": "1"}), "alice", force=False, now=NOW)
    assert kept["metadata"]["labels"] == {"a": "1", "b": "2"}


def test_an_update_takes_the_fields_it_changes():
    live = stored(fm.apply(None, deploy(replicas=1), "alice", force=False, now=NOW))
    scaled = dict(live, spec=dict(live["spec"], replicas=4))
    updated = stored(fm.update(live, scaled, "kubectl-scale", now=NOW))
    assert entry(updated, "kubectl-scale")["operation"] == "Update"
    assert entry(updated, "kubectl-scale")["fieldsV1"] == {"f:spec": {"f:replicas": {}}}
    assert "f:replicas" not in entry(updated, "alice")["fieldsV1"]["f:spec"]
    with pytest.raises(fm.Conflicts) as e:  # alice re-applies replicas: 1, which scale changed
        fm.apply(updated, deploy(replicas=2), "bob", force=False, now=NOW)
    assert [(c.field, c.manager) for c in e.value.conflicts] == [(".spec.replicas", "kubectl-scale")]


def test_reapplying_the_same_configuration_changes_nothing():
    live = stored(fm.apply(None, deploy(), "alice", force=False, now=NOW))
    again = fm.apply(live, deploy(), "alice", force=False, now="2030-01-01T00:00:00Z")
    assert again["metadata"]["managedFields"] == live["metadata"]["managedFields"]
    assert again["spec"] == live["spec"]


def test_manager_defaults_to_the_user_agent_program():
    assert fm.manager_of(None, "kubectl/v1.32.0 (linux/amd64) kubernetes/abc") == "kubectl"
    assert fm.manager_of("mine", "kubectl/v1.32") == "mine"


leaves = st.recursive(st.integers() | st.text(max_size=3),
                      lambda inner: st.dictionaries(st.text("abc", min_size=1, max_size=3), inner, min_size=1,
                                                    max_size=3), max_leaves=8)


@given(st.dictionaries(st.text("xyz", min_size=1, max_size=3), leaves, min_size=1, max_size=3))
def test_fields_v1_round_trips(spec):
    paths = fm.paths_of({"spec": spec})
    assert fm.from_fields(fm.to_fields(paths)) == paths
    for p in paths:
        assert fm.value_at({"spec": spec}, p) is not fm.MISSING


# JSON-like trees with the lists field ownership treats specially: keyed (containers, ports,
# env: merged on name or containerPort), sets (finalizers) and atomic ones (args).
_keyed = st.lists(st.fixed_dictionaries({"name": st.sampled_from(["a", "b", "c"])},
                                        optional={"image": st.text("ij", max_size=2), "containerPort": st.integers(1, 3)}),
                  max_size=3)
_values = st.recursive(
    st.integers() | st.text("pq", max_size=2) | st.none() | _keyed
    | st.lists(st.text("uv", max_size=2), max_size=3),
    lambda inner: st.dictionaries(st.sampled_from(["containers", "ports", "env", "finalizers", "args", "spec", "x"]),
                                  inner, max_size=3),
    max_leaves=10)


@given(st.dictionaries(st.sampled_from(["metadata", "spec", "status", "data"]), _values, max_size=3))
def test_fields_of_a_new_object_are_the_fields_of_its_paths(obj):
    assert fm.fields_of(obj) == fm.to_fields(fm.paths_of(obj))


def test_a_create_owns_every_field_and_leaves_its_argument_alone():
    new = deploy(replicas=2, labels={"app": "x"})
    before = repr(new)
    out = fm.update(None, new, "kubectl", now=NOW)
    assert repr(new) == before
    [e] = out["metadata"]["managedFields"]
    assert (e["manager"], e["operation"]) == ("kubectl", "Update")
    assert fm.from_fields(e["fieldsV1"]) == fm.paths_of(new)
