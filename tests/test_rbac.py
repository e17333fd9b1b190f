"""RBAC objects (rbac.authorization.k8s.io/v1): validation and defaults as Kubernetes', the
roleRef kept immutable, ClusterRole aggregation as a pure rule (a table and a hypothesis
property), the `kyb get` columns, and on a real nats-server a Helm chart's RBAC applied with
`kyb apply`, bad objects refused naming the field, and aggregated ClusterRoles kept up to date by
the clusterroleaggregation service."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kyb import errors
from kyb.cli import printers
from kyb.client import ApiClient
from schemas.helpers import key_name, scoped_key, split_key
from schemas.rbac import GROUP, ClusterRole, PolicyRule
from schemas.validation import SchemaError, decode, validate_update
from services.clusterroleaggregation.reconcile import aggregated_rules, aggregating
from tests.cluster import QUIET, Services, wait_api, wait_for

HELM_RBAC = Path(__file__).parent / "manifests" / "helm-rbac.yaml"
METRICS_SERVER_RBAC = Path(__file__).parent / "manifests" / "metrics-server-rbac.yaml"
AV = f"{GROUP}/v1"
RULE = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}


def manifest(kind: str, name: str = "x", **fields: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if kind in ("Role", "RoleBinding"):
        meta["namespace"] = "default"
    return {"apiVersion": AV, "kind": kind, "metadata": meta, **fields}


def binding(kind: str, name: str = "x", ref_kind: str = "ClusterRole", ref_name: str = "view",
            subjects: list[dict[str, Any]] | None = None, **ref: Any) -> dict[str, Any]:
    role_ref = {"apiGroup": GROUP, "kind": ref_kind, "name": ref_name, **ref}
    return manifest(kind, name, roleRef=role_ref, subjects=subjects or [])


def refusal(m: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(SchemaError) as raised:
        decode(m)
    return raised.value.details


# --- validation and defaults -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("m", "want"),
    [
        pytest.param(manifest("Role", rules=[{"apiGroups": [""], "resources": ["pods"]}]),
                     [("rules[0].verbs", "Required value: verbs must contain at least one value")], id="no-verbs"),
        pytest.param(manifest("ClusterRole", rules=[{"verbs": ["get"]}]),
                     [("rules[0].apiGroups", "Required value: resource rules must supply at least one api group"),
                      ("rules[0].resources", "Required value: resource rules must supply at least one resource")],
                     id="no-resources"),
        pytest.param(manifest("Role", rules=[RULE, {"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]),
                     [("rules[1].nonResourceURLs",
                       'Invalid value: []string{"/healthz"}: namespaced rules cannot apply to non-resource URLs')],
                     id="urls-in-a-role"),
        pytest.param(manifest("ClusterRole", rules=[{"nonResourceURLs": ["/metrics"], "resources": ["pods"],
                                                     "verbs": ["get"]}]),
                     [("rules[0].nonResourceURLs", 'Invalid value: []string{"/metrics"}: rules cannot apply to both '
                                                   "regular resources and non-resource URLs")],
                     id="urls-with-resources"),
        pytest.param(manifest("ClusterRole", aggregationRule={"clusterRoleSelectors": []}),
                     [("aggregationRule.clusterRoleSelectors",
                       "Required value: at least one clusterRoleSelector required if aggregationRule is non-nil")],
                     id="aggregation-without-selectors"),
        pytest.param(binding("RoleBinding", ref_kind="Deployment"),
                     [("roleRef.kind", 'Unsupported value: "Deployment": supported values: "Role", "ClusterRole"')],
                     id="rolebinding-ref-kind"),
        pytest.param(binding("ClusterRoleBinding", ref_kind="Role"),
                     [("roleRef.kind", 'Unsupported value: "Role": supported values: "ClusterRole"')],
                     id="clusterrolebinding-ref-kind"),
        pytest.param(binding("RoleBinding", apiGroup="apps"),
                     [("roleRef.apiGroup", f'Unsupported value: "apps": supported values: "{GROUP}"')],
                     id="ref-group"),
        pytest.param(binding("RoleBinding", ref_name=""), [("roleRef.name", "Required value")], id="ref-name"),
        pytest.param(binding("RoleBinding", ref_name="a/b"), [("roleRef.name", "Invalid value: \"a/b\": may not contain '/'")],
                     id="ref-name-slash"),
        pytest.param(manifest("ClusterRole", "50%"), [("metadata.name", "may not contain '%'")], id="name-percent"),
        pytest.param(manifest("Role", ".."), [("metadata.name", "may not be '..'")], id="name-dotdot"),
        pytest.param(binding("ClusterRoleBinding", subjects=[{"kind": "ServiceAccount", "name": "robot"}]),
                     [("subjects[0].namespace", "Required value")], id="sa-needs-namespace-cluster-wide"),
        pytest.param(binding("RoleBinding", subjects=[{"kind": "Robot", "name": "r2"}]),
                     [("subjects[0].kind",
                       'Unsupported value: "Robot": supported values: "ServiceAccount", "User", "Group"')],
                     id="subject-kind"),
        pytest.param(binding("RoleBinding", subjects=[{"kind": "ServiceAccount", "name": "sa", "apiGroup": GROUP}]),
                     [("subjects[0].apiGroup", f'Unsupported value: "{GROUP}": supported values: ""')],
                     id="sa-api-group"),
        pytest.param(binding("RoleBinding", subjects=[{"kind": "User", "name": "jane", "apiGroup": "v1"}]),
                     [("subjects[0].apiGroup", f'Unsupported value: "v1": supported values: "{GROUP}"')],
                     id="user-api-group"),
        pytest.param(binding("RoleBinding", subjects=[{"kind": "Group"}]),
                     [("subjects[0].name", "Required value")], id="subject-name"),
    ],
)
def test_bad_rbac_objects_are_refused_naming_the_field(m, want):
    assert refusal(m) == want


def test_rbac_objects_as_kubernetes_defaults_them():
    rb = decode(binding("RoleBinding", ref_kind="Role", ref_name="reader", apiGroup="",
                        subjects=[{"kind": "User", "name": "jane"}, {"kind": "Group", "name": "ops"},
                                  {"kind": "ServiceAccount", "name": "robot"}]))
    assert rb.roleRef.apiGroup == GROUP  # type: ignore[attr-defined]
    assert [s.apiGroup for s in rb.subjects] == [GROUP, GROUP, None]  # type: ignore[attr-defined]
    # a namespaced binding's ServiceAccount needs no namespace; a cluster one's may name any
    decode(binding("ClusterRoleBinding", subjects=[{"kind": "ServiceAccount", "name": "robot", "namespace": "ci"}]))
    # aggregated roles are often written with null rules
    cr = decode({**manifest("ClusterRole", aggregationRule={"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]}),
                 "rules": None})
    assert cr.rules is None  # type: ignore[attr-defined]
    decode(manifest("ClusterRole", rules=[{"nonResourceURLs": ["/healthz", "/metrics"], "verbs": ["get"]}]))


def test_a_bindings_role_ref_cannot_change():
    old = decode(binding("RoleBinding", ref_kind="Role", ref_name="a"))
    assert validate_update(decode(binding("RoleBinding", ref_kind="Role", ref_name="a",
                                          subjects=[{"kind": "User", "name": "jane"}])), old) == []
    assert validate_update(decode(binding("RoleBinding", ref_kind="Role", ref_name="b")), old) == [
        ("roleRef", f'Invalid value: rbac.RoleRef{{APIGroup:"{GROUP}", Kind:"Role", Name:"b"}}: cannot change roleRef')]
    old_crb = decode(binding("ClusterRoleBinding"))
    assert [f for f, _ in validate_update(decode(binding("ClusterRoleBinding", ref_name="edit")), old_crb)] == ["roleRef"]


# --- aggregation -------------------------------------------------------------------------------


def cluster_role(name: str, labels: dict[str, str] | None = None, rules: list[PolicyRule] | None = None,
                 selects: list[dict[str, str]] | None = None) -> ClusterRole:
    agg = {"clusterRoleSelectors": [{"matchLabels": s} for s in selects]} if selects is not None else None
    return msgspec.convert({"metadata": {"name": name, "labels": labels or {}},
                            "rules": [msgspec.to_builtins(r) for r in rules or []], "aggregationRule": agg},
                           ClusterRole)


def rule(resource: str, *verbs: str) -> PolicyRule:
    return PolicyRule(apiGroups=[""], resources=[resource], verbs=list(verbs or ("get",)))


def test_aggregation_takes_the_union_of_the_matched_roles():
    pods, svcs, nodes = rule("pods", "get"), rule("services", "list"), rule("nodes", "get")
    view = cluster_role("view", rules=[rule("stale")], selects=[{"agg": "view"}, {"agg": "extra"}])
    roles = [
        view,
        cluster_role("b-view", {"agg": "view"}, [svcs, pods]),
        cluster_role("a-view", {"agg": "view"}, [pods]),
        cluster_role("c-extra", {"agg": "extra"}, [nodes, pods]),
        cluster_role("other", {"agg": "edit"}, [rule("secrets")]),
    ]
    # selector by selector, roles by name, each rule once; the role's own rules are replaced
    assert aggregated_rules(view, roles) == [pods, svcs, nodes]
    assert aggregated_rules(roles[1], roles) is None
    assert aggregating(roles) == ["view"]
    # a role matching its own selector does not aggregate itself
    self_ref = cluster_role("self", {"agg": "view"}, [rule("x")], selects=[{"agg": "view"}])
    assert aggregated_rules(self_ref, [self_ref]) == []


names_st = st.sampled_from(["a", "b", "c", "d", "e"])
rules_st = st.lists(st.builds(rule, st.sampled_from(["pods", "services", "nodes"]),
                              st.sampled_from(["get", "list"])), max_size=3)
roles_st = st.lists(st.builds(cluster_role, names_st, st.fixed_dictionaries({"agg": st.sampled_from("xyz")}),
                              rules_st), max_size=6, unique_by=lambda r: r.metadata.name)


@given(roles_st, st.lists(st.sampled_from("xyz"), min_size=1, max_size=3, unique=True), st.randoms())
def test_aggregation_holds_exactly_the_matched_rules_once_in_any_order(roles, selected, rnd):
    agg = cluster_role("agg", selects=[{"agg": s} for s in selected])
    got = aggregated_rules(agg, roles)
    assert got is not None
    matched = [r for role in roles if role.metadata.labels["agg"] in selected for r in role.rules]
    assert len(got) == len({msgspec.json.encode(r) for r in got})  # no rule twice
    assert all(r in got for r in matched) and all(r in matched for r in got)
    shuffled = list(roles)
    rnd.shuffle(shuffled)
    assert aggregated_rules(agg, [agg, *shuffled]) == got  # input order and the role itself do not matter


# --- printing ----------------------------------------------------------------------------------


def test_kyb_get_columns():
    now = dt.datetime(2026, 1, 10, 12, 0, 0, tzinfo=dt.UTC)
    created = {"creationTimestamp": "2026-01-10T11:00:00Z"}
    role = {**manifest("Role", rules=[RULE]), "metadata": {"name": "reader", **created}}
    assert printers.table("Role", [role], now) == (["NAME", "CREATED AT"], [["reader", "2026-01-10T11:00:00Z"]])
    assert printers.table("ClusterRole", [role], now)[0] == ["NAME", "CREATED AT"]
    rb = {**binding("RoleBinding", ref_kind="Role", ref_name="reader", subjects=[
        {"kind": "User", "name": "jane"}, {"kind": "User", "name": "joe"}, {"kind": "Group", "name": "ops"},
        {"kind": "ServiceAccount", "name": "robot", "namespace": "ci"}, {"kind": "ServiceAccount", "name": "local"}]),
        "metadata": {"name": "read", **created}}
    assert printers.table("RoleBinding", [rb], now) == (["NAME", "ROLE", "AGE"], [["read", "Role/reader", "60m"]])
    assert printers.table("ClusterRoleBinding", [rb], now, wide=True) == (
        ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"],
        [["read", "Role/reader", "60m", "jane, joe", "ops", "ci/robot, local"]])


# --- on a real nats-server ---------------------------------------------------------------------


@pytest.fixture
async def cluster(nats_url, nc):
    services = Services(["api", "clusterroleaggregation"], nats_url, QUIET).start()
    await wait_api(nc, services.task)
    try:
        yield ApiClient(nc)
    finally:
        await services.stop()


async def kyb(nats_url: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "kyb.cli.main", "--nats", nats_url, *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_a_helm_charts_rbac_applies_with_kyb_apply(cluster, nats_url):
    client = cluster
    code, out, err = await kyb(nats_url, "apply", "-f", str(HELM_RBAC))
    assert code == 0, err
    assert out.splitlines() == [
        "serviceaccount/demo-operator created",
        "clusterrole.rbac.authorization.k8s.io/demo-operator created",
        "clusterrole.rbac.authorization.k8s.io/demo-operator-view created",
        "clusterrolebinding.rbac.authorization.k8s.io/demo-operator created",
        "role.rbac.authorization.k8s.io/demo-operator-leader-election created",
        "rolebinding.rbac.authorization.k8s.io/demo-operator-leader-election created",
    ]
    code, out, err = await kyb(nats_url, "apply", "-f", str(HELM_RBAC))
    assert code == 0 and all(line.endswith(" unchanged") for line in out.splitlines()), (out, err)

    cr = await client.get("ClusterRole", None, "demo-operator")
    assert cr["rules"][3] == {"nonResourceURLs": ["/metrics"], "verbs": ["get"]} and "namespace" not in cr["metadata"]
    rb = await client.get("RoleBinding", "default", "demo-operator-leader-election")
    assert rb["roleRef"] == {"apiGroup": GROUP, "kind": "Role", "name": "demo-operator-leader-election"}
    assert [s.get("apiGroup", "") for s in rb["subjects"]] == ["", GROUP, GROUP]  # User defaulted

    code, out, _ = await kyb(nats_url, "get", "rolebindings", "-o", "wide")
    assert out.splitlines()[0].split() == ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]
    assert out.splitlines()[1].split()[:2] == ["demo-operator-leader-election", "Role/demo-operator-leader-election"]
    assert out.splitlines()[1].split()[3:] == ["jane", "operators", "default/demo-operator"]
    code, out, _ = await kyb(nats_url, "get", "clusterroles")
    assert out.splitlines()[0].split() == ["NAME", "CREATED", "AT"]
    listed = [line.split()[0] for line in out.splitlines()[1:]]
    assert [n for n in listed if n.startswith("demo-")] == ["demo-operator", "demo-operator-view"]
    assert {"cluster-admin", "view"} <= set(listed)  # beside the api's default roles

    # the roleRef stays; the subjects may change
    changed = binding("RoleBinding", "demo-operator-leader-election", ref_kind="ClusterRole", ref_name="demo-operator")
    with pytest.raises(errors.Invalid) as raised:
        await client.apply(changed)
    assert [d.field for d in raised.value.details] == ["roleRef"]
    assert "cannot change roleRef" in str(raised.value)
    same_ref = binding("RoleBinding", "demo-operator-leader-election", ref_kind="Role",
                       ref_name="demo-operator-leader-election", subjects=[{"kind": "User", "name": "jane"}])
    _, result = await client.apply(same_ref)
    assert result == "configured"

    code, out, _ = await kyb(nats_url, "delete", "-f", str(HELM_RBAC))
    assert code == 0, out
    assert not [b for b in await client.list("ClusterRoleBinding") if b["metadata"]["name"].startswith("demo-")]
    assert await client.list("Role", "default") == []


async def test_bad_rbac_objects_are_refused_by_the_api(cluster, nats_url, tmp_path):
    client = cluster
    with pytest.raises(errors.Invalid) as raised:
        await client.apply(manifest("Role", rules=[{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]))
    assert [d.field for d in raised.value.details] == ["rules[0].nonResourceURLs"]
    with pytest.raises(errors.Invalid) as raised:
        await client.apply(binding("ClusterRoleBinding", subjects=[{"kind": "ServiceAccount", "name": "robot"}]))
    assert [(d.field, d.message) for d in raised.value.details] == [("subjects[0].namespace", "Required value")]
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"apiVersion: {AV}\nkind: ClusterRole\nmetadata: {{name: noverbs}}\n"
                   "rules: [{apiGroups: [''], resources: [pods]}]\n")
    code, _, err = await kyb(nats_url, "apply", "-f", str(bad))
    assert code != 0 and "rules[0].verbs: Required value: verbs must contain at least one value" in err


async def test_aggregated_cluster_roles_follow_the_roles_they_select(cluster):
    client = cluster
    pods = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    svcs = {"apiGroups": [""], "resources": ["services"], "verbs": ["get"]}
    widgets = {"apiGroups": ["demo.example.com"], "resources": ["widgets"], "verbs": ["get"]}
    await client.apply({**manifest("ClusterRole", "view-core", rules=[pods, svcs]),
                        "metadata": {"name": "view-core", "labels": {"aggregate-to-view": "true"}}})
    await client.apply({**manifest("ClusterRole", "view",
                                   aggregationRule={"clusterRoleSelectors": [
                                       {"matchLabels": {"aggregate-to-view": "true"}}]}),
                        "metadata": {"name": "view", "labels": {"aggregate-to-admin": "true"}}})
    # an aggregated role aggregating an aggregated one
    await client.apply(manifest("ClusterRole", "admin", aggregationRule={"clusterRoleSelectors": [
        {"matchLabels": {"aggregate-to-admin": "true"}}]}))

    async def rules_of(name: str, want: list[dict[str, Any]]) -> bool:
        return (await client.get("ClusterRole", None, name)).get("rules", []) == want

    await wait_for(lambda: rules_of("view", [pods, svcs]), 20, "view aggregated")
    await wait_for(lambda: rules_of("admin", [pods, svcs]), 20, "admin aggregates view")

    # a new matching role joins, a role that stops matching leaves, a deleted one leaves
    await client.apply({**manifest("ClusterRole", "widgets-view", rules=[widgets, pods]),
                        "metadata": {"name": "widgets-view", "labels": {"aggregate-to-view": "true"}}})
    await wait_for(lambda: rules_of("view", [pods, svcs, widgets]), 20, "widgets joined view")
    await wait_for(lambda: rules_of("admin", [pods, svcs, widgets]), 20, "widgets reached admin")
    await client.apply({**manifest("ClusterRole", "view-core", rules=[pods, svcs]),
                        "metadata": {"name": "view-core", "labels": {"aggregate-to-view": "no"}}})
    await wait_for(lambda: rules_of("view", [widgets, pods]), 20, "view-core left view")
    await client.delete("ClusterRole", None, "widgets-view")
    await wait_for(lambda: rules_of("view", []), 20, "widgets-view's rules gone")
    await wait_for(lambda: rules_of("admin", []), 20, "and from admin")
    # reapplying the aggregated role's manifest (no rules in it) is unchanged
    _, result = await client.apply({**manifest("ClusterRole", "view-core", rules=[pods, svcs]),
                                    "metadata": {"name": "view-core", "labels": {"aggregate-to-view": "true"}}})
    await wait_for(lambda: rules_of("admin", [pods, svcs]), 20, "view-core back in admin")
    _, result = await client.apply(manifest("ClusterRole", "admin", aggregationRule={"clusterRoleSelectors": [
        {"matchLabels": {"aggregate-to-admin": "true"}}]}))
    assert result == "unchanged"
    assert (await client.get("ClusterRole", None, "admin"))["rules"] == [pods, svcs]


async def test_rbac_names_with_colons_as_kubernetes_system_roles_have(cluster, nats_url):
    client = cluster
    code, out, err = await kyb(nats_url, "apply", "-f", str(METRICS_SERVER_RBAC))
    assert code == 0, err
    assert "clusterrolebinding.rbac.authorization.k8s.io/metrics-server:system:auth-delegator created" in out
    crb = await client.get("ClusterRoleBinding", None, "metrics-server:system:auth-delegator")
    assert crb["roleRef"]["name"] == "system:auth-delegator"
    names = {o["metadata"]["name"] for o in await client.list("ClusterRole") if not _bootstrapped(o)}
    assert names == {"system:metrics-server", "system:metrics-server-aggregated-reader"}
    # an aggregated role (the api's default view) picks up a role whose name has colons, by its labels
    async def aggregated() -> bool:
        rules = (await client.get("ClusterRole", None, "view")).get("rules", [])
        return {"apiGroups": ["metrics.k8s.io"], "resources": ["pods", "nodes"],
                "verbs": ["get", "list", "watch"]} in rules

    await wait_for(aggregated, 20, "view aggregated")
    code, out, _ = await kyb(nats_url, "get", "clusterrolebinding", "metrics-server:system:auth-delegator", "-o", "wide")
    assert code == 0 and out.splitlines()[1].split()[:2] == ["metrics-server:system:auth-delegator",
                                                             "ClusterRole/system:auth-delegator"]
    code, out, err = await kyb(nats_url, "delete", "-f", str(METRICS_SERVER_RBAC))
    assert code == 0, err
    assert {o["metadata"]["name"] for o in await client.list("ClusterRole") if not _bootstrapped(o)} == set()


def _bootstrapped(obj: dict) -> bool:
    """One of the default roles the api makes (schemas.bootstrappolicy)."""
    return (obj["metadata"].get("labels") or {}).get("kubernetes.io/bootstrapping") == "rbac-defaults"


def test_rbac_names_with_colons_through_kubectl(tmp_path):
    import os

    from tests.test_apiserver_kubectl import KUBECTL, _kubectl, apiserver_up

    if not os.path.exists(KUBECTL):
        pytest.skip("kubectl is not installed")
    with apiserver_up(tmp_path / "state") as up:
        out = _kubectl(up, "apply", "-f", str(METRICS_SERVER_RBAC)).stdout.splitlines()
        assert "clusterrole.rbac.authorization.k8s.io/system:metrics-server created" in out
        again = _kubectl(up, "apply", "-f", str(METRICS_SERVER_RBAC)).stdout.splitlines()
        assert all(line.endswith(" unchanged") for line in again), again
        got = _kubectl(up, "get", "clusterrole", "system:metrics-server", "-o", "jsonpath={.rules[0].resources}")
        assert got.stdout == '["nodes/metrics"]'
        listed = _kubectl(up, "get", "clusterrolebindings").stdout
        assert ["metrics-server:system:auth-delegator", "ClusterRole/system:auth-delegator"] in [
            line.split()[:2] for line in listed.splitlines()]
        _kubectl(up, "delete", "clusterrolebinding", "metrics-server:system:auth-delegator")
        _kubectl(up, "delete", "-f", str(METRICS_SERVER_RBAC), "--ignore-not-found")


@given(st.text(min_size=1, max_size=40))
def test_any_name_has_one_kv_key_and_dns_names_are_their_own(name):
    key = scoped_key(False, None, name)
    assert re.fullmatch(r"[-/_=.a-zA-Z0-9]+", key)  # NATS' key alphabet
    assert split_key(key) == (None, name)
    assert scoped_key(True, "ns", name).startswith("ns.")
    dns = re.sub(r"[^a-z0-9.-]", "", name.lower()) or "a"
    assert key_name(dns) == dns


async def test_the_garbage_collector_deletes_a_role_whose_owner_is_gone(nats_url, nc):
    services = Services(["api", "gc"], nats_url, QUIET).start()
    client = ApiClient(nc)
    try:
        await wait_api(nc, services.task)
        owner, _ = await client.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "operator"}})
        ref = {"apiVersion": "v1", "kind": "ServiceAccount", "name": "operator", "uid": owner["metadata"]["uid"]}
        role = manifest("Role", "operator-leases", rules=[RULE])
        role["metadata"]["ownerReferences"] = [ref]
        rb = binding("RoleBinding", "operator-leases", ref_kind="Role", ref_name="operator-leases",
                     subjects=[{"kind": "ServiceAccount", "name": "operator"}])
        rb["metadata"]["ownerReferences"] = [ref]
        await client.apply(role)
        await client.apply(rb)
        await client.delete("ServiceAccount", "default", "operator")

        async def gone() -> bool:
            return not await client.list("Role", "default") and not await client.list("RoleBinding", "default")

        await wait_for(gone, 20, "the owned Role and RoleBinding collected")
    finally:
        await services.stop()
