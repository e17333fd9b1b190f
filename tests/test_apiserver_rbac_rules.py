"""The RBAC authorizer's pure rules (services/apiserver/rbac.py, requestinfo.py) and the bootstrap
policy (schemas/bootstrappolicy.py): rule matching as Kubernetes' RuleAllows, bindings, reasons,
the 403 message, request attributes and impersonation."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace

from schemas.bootstrappolicy import CLUSTER_ROLE_BINDINGS, CLUSTER_ROLES
from schemas.meta import LabelSelector, ObjectMeta
from schemas.rbac import (
    AggregationRule,
    ClusterRole,
    ClusterRoleBinding,
    PolicyRule,
    Role,
    RoleBinding,
    RoleRef,
    Subject,
    validate_cluster_role,
    validate_cluster_role_binding,
)
from services.apiserver import rbac, requestinfo
from services.apiserver.rbac import Attributes, UserInfo

SA = rbac.service_account_user("default", "x")


def res(verb: str, resource: str, *, group: str = "", namespace: str = "default", name: str = "", sub: str = "",
        user: UserInfo = SA) -> Attributes:
    return Attributes(user=user, verb=verb, resource_request=True, api_group=group, api_version="v1",
                      resource=resource, subresource=sub, namespace=namespace, name=name)


def url(verb: str, path: str, user: UserInfo = SA) -> Attributes:
    return Attributes(user=user, verb=verb, resource_request=False, path=path)


def rule(verbs, groups=("",), resources=(), names=(), urls=()) -> PolicyRule:
    return PolicyRule(verbs=list(verbs), apiGroups=list(groups) if resources else [], resources=list(resources),
                      resourceNames=list(names), nonResourceURLs=list(urls))


@pytest.mark.parametrize(("attrs", "r", "allowed"), [
    pytest.param(res("list", "pods"), rule(["list"], resources=["pods"]), True, id="exact"),
    pytest.param(res("list", "pods"), rule(["get"], resources=["pods"]), False, id="other-verb"),
    pytest.param(res("list", "pods"), rule(["*"], resources=["pods"]), True, id="any-verb"),
    pytest.param(res("list", "deployments", group="apps"), rule(["list"], resources=["deployments"]), False,
                 id="other-group"),
    pytest.param(res("list", "deployments", group="apps"), rule(["list"], ["*"], ["deployments"]), True,
                 id="any-group"),
    pytest.param(res("get", "pods", sub="log"), rule(["get"], resources=["pods"]), False,
                 id="resource-is-not-its-subresource"),
    pytest.param(res("get", "pods", sub="log"), rule(["get"], resources=["pods/log"]), True, id="subresource"),
    pytest.param(res("get", "pods", sub="log"), rule(["get"], resources=["*/log"]), True, id="any-resource-sub"),
    pytest.param(res("get", "pods", sub="exec"), rule(["get"], resources=["*/log"]), False, id="other-sub"),
    pytest.param(res("get", "pods", sub="log"), rule(["get"], resources=["*"]), True, id="star-is-subresources-too"),
    pytest.param(res("get", "pods"), rule(["get"], resources=["*/log"]), False, id="star-sub-needs-a-sub"),
    pytest.param(res("get", "configmaps", name="a"), rule(["get"], resources=["configmaps"], names=["a"]), True,
                 id="named"),
    pytest.param(res("get", "configmaps", name="b"), rule(["get"], resources=["configmaps"], names=["a"]), False,
                 id="other-name"),
    pytest.param(res("list", "configmaps"), rule(["list"], resources=["configmaps"], names=["a"]), False,
                 id="names-do-not-allow-a-list"),
    pytest.param(url("get", "/version"), rule(["get"], urls=["/version"]), True, id="url"),
    pytest.param(url("get", "/apis/apps/v1"), rule(["get"], urls=["/apis/*"]), True, id="url-prefix"),
    pytest.param(url("get", "/apis"), rule(["get"], urls=["/apis/*"]), False, id="url-prefix-needs-its-slash"),
    pytest.param(url("get", "/healthz/etcd"), rule(["get"], urls=["*"]), True, id="any-url"),
    pytest.param(url("post", "/version"), rule(["get"], urls=["/version"]), False, id="url-verb"),
    pytest.param(url("get", "/version"), rule(["get"], ["*"], ["*"]), False, id="resource-rule-is-no-url-rule"),
    pytest.param(res("get", "pods"), rule(["get"], urls=["*"]), False, id="url-rule-is-no-resource-rule"),
])
def test_rule_allows(attrs, r, allowed):
    assert rbac.rule_allows(attrs, r) is allowed


@dataclass
class Fake:
    """An in-memory rbac.Policy."""

    cluster_roles: dict[str, ClusterRole] = field(default_factory=dict)
    roles: dict[tuple[str, str], Role] = field(default_factory=dict)
    crbs: list[ClusterRoleBinding] = field(default_factory=list)
    rbs: list[RoleBinding] = field(default_factory=list)

    def cluster_role_bindings(self):
        return self.crbs

    def role_bindings(self, namespace):
        return [b for b in self.rbs if b.metadata.namespace == namespace]

    def cluster_role(self, name):
        return self.cluster_roles.get(name)

    def role(self, namespace, name):
        return self.roles.get((namespace, name))


def _cr(name: str, *rules: PolicyRule) -> ClusterRole:
    return ClusterRole(metadata=ObjectMeta(name=name), rules=list(rules))


def _rb(name: str, namespace: str, kind: str, role: str, *subjects: Subject) -> RoleBinding:
    return RoleBinding(metadata=ObjectMeta(name=name, namespace=namespace), subjects=list(subjects),
                       roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind=kind, name=role))


def _crb(name: str, role: str, *subjects: Subject) -> ClusterRoleBinding:
    return ClusterRoleBinding(metadata=ObjectMeta(name=name), subjects=list(subjects),
                              roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name=role))


READ_PODS = rule(["get", "list", "watch"], resources=["pods"])


def test_a_role_binding_to_a_cluster_role_holds_in_its_namespace_only():
    policy = Fake(cluster_roles={"view": _cr("view", READ_PODS)},
                  rbs=[_rb("v", "team", "ClusterRole", "view", Subject(kind="ServiceAccount", name="x"))])
    user = rbac.service_account_user("team", "x")
    allowed = rbac.authorize(policy, res("list", "pods", namespace="team", user=user))
    assert allowed == rbac.Decision(True, 'RBAC: allowed by RoleBinding "v/team" of ClusterRole "view" to '
                                          'ServiceAccount "x/team"')
    assert not rbac.authorize(policy, res("list", "pods", namespace="other", user=user)).allowed
    assert not rbac.authorize(policy, res("list", "pods", namespace="", user=user)).allowed
    # the subject's namespace defaults to the binding's: another namespace's x is not it
    assert not rbac.authorize(policy, res("list", "pods", namespace="team", user=SA)).allowed


def test_cluster_role_bindings_hold_everywhere_for_users_groups_and_accounts():
    policy = Fake(cluster_roles={"view": _cr("view", READ_PODS)},
                  crbs=[_crb("g", "view", Subject(kind="Group", name="readers")),
                        _crb("u", "view", Subject(kind="User", name="alice")),
                        _crb("s", "view", Subject(kind="ServiceAccount", name="x", namespace="default")),
                        _crb("bad", "view", Subject(kind="ServiceAccount", name="y"))])  # no namespace: nobody
    for user in (UserInfo("bob", ("readers",)), UserInfo("alice"), SA):
        assert rbac.authorize(policy, res("list", "pods", namespace="any", user=user)).allowed
        assert rbac.authorize(policy, res("list", "pods", namespace="", user=user)).allowed
    assert not rbac.authorize(policy, res("list", "pods", user=rbac.service_account_user("default", "y"))).allowed
    assert not rbac.authorize(policy, res("list", "pods", user=UserInfo("carol"))).allowed
    assert rbac.authorize(policy, res("list", "pods", user=UserInfo("alice"))).reason == (
        'RBAC: allowed by ClusterRoleBinding "u" of ClusterRole "view" to User "alice"')


def test_masters_are_allowed_without_any_binding_and_missing_roles_are_the_reason():
    assert rbac.authorize(Fake(), res("delete", "nodes", user=UserInfo("admin", (rbac.MASTERS,)))).allowed
    policy = Fake(crbs=[_crb("a", "gone", Subject(kind="User", name="u"))],
                  rbs=[_rb("b", "default", "Role", "missing", Subject(kind="User", name="u"))])
    decision = rbac.authorize(policy, res("get", "pods", user=UserInfo("u")))
    assert decision == rbac.Decision(False, 'RBAC: [clusterrole.rbac.authorization.k8s.io "gone" not found, '
                                            'role.rbac.authorization.k8s.io "missing" not found]')
    one = rbac.authorize(Fake(crbs=policy.crbs), res("get", "pods", user=UserInfo("u")))
    assert one.reason == 'RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found'


def test_rules_for_splits_resource_and_url_rules():
    policy = Fake(cluster_roles={"mixed": _cr("mixed", READ_PODS, rule(["get"], urls=["/version"]))},
                  roles={("default", "r"): Role(metadata=ObjectMeta(name="r", namespace="default"),
                                                rules=[rule(["get"], resources=["configmaps"], names=["a"])])},
                  crbs=[_crb("m", "mixed", Subject(kind="Group", name=rbac.AUTHENTICATED))],
                  rbs=[_rb("r", "default", "Role", "r", Subject(kind="ServiceAccount", name="x"))])
    resource, urls, error = rbac.rules_for(policy, SA, "default")
    assert resource == [READ_PODS, rule(["get"], resources=["configmaps"], names=["a"])]
    assert urls == [PolicyRule(verbs=["get"], nonResourceURLs=["/version"])]
    assert error == ""
    assert rbac.rules_for(policy, SA, "other")[0] == [READ_PODS]


@pytest.mark.parametrize(("attrs", "message"), [
    pytest.param(res("list", "pods"), 'pods is forbidden: User "system:serviceaccount:default:x" cannot list resource '
                 '"pods" in API group "" in the namespace "default"', id="namespaced-list"),
    pytest.param(res("list", "nodes", namespace=""), 'nodes is forbidden: User "system:serviceaccount:default:x" '
                 'cannot list resource "nodes" in API group "" at the cluster scope', id="cluster-scope"),
    pytest.param(res("get", "deployments", group="apps", name="web"), 'deployments.apps "web" is forbidden: User '
                 '"system:serviceaccount:default:x" cannot get resource "deployments" in API group "apps" in the '
                 'namespace "default"', id="named"),
    pytest.param(res("get", "pods", name="p", sub="log"), 'pods "p" is forbidden: User "system:serviceaccount:default:x"'
                 ' cannot get resource "pods/log" in API group "" in the namespace "default"', id="subresource"),
    pytest.param(url("get", "/metrics"), 'forbidden: User "system:serviceaccount:default:x" cannot get path '
                 '"/metrics"', id="path"),
])
def test_forbidden_message_is_kubernetes(attrs, message):
    assert rbac.forbidden_message(attrs) == message
    assert rbac.forbidden_message(attrs, "RBAC: why") == message + ": RBAC: why"


@pytest.mark.parametrize(("method", "path", "query", "want"), [
    pytest.param("GET", "/api/v1/namespaces/default/pods", {}, ("list", "", "pods", "", "default", ""), id="list"),
    pytest.param("GET", "/api/v1/namespaces/default/pods", {"watch": "true"}, ("watch", "", "pods", "", "default", ""),
                 id="watch"),
    pytest.param("GET", "/api/v1/namespaces/default/pods", {"watch": "1", "fieldSelector": "metadata.name=p"},
                 ("watch", "", "pods", "", "default", "p"), id="watch-one-by-field-selector"),
    pytest.param("GET", "/api/v1/pods", {}, ("list", "", "pods", "", "", ""), id="list-all-namespaces"),
    pytest.param("GET", "/api/v1/namespaces/default/pods/p/log", {}, ("get", "", "pods", "log", "default", "p"),
                 id="subresource"),
    pytest.param("POST", "/apis/apps/v1/namespaces/ns/deployments", {},
                 ("create", "apps", "deployments", "", "ns", ""), id="create"),
    pytest.param("PUT", "/apis/apps/v1/namespaces/ns/deployments/d/scale", {},
                 ("update", "apps", "deployments", "scale", "ns", "d"), id="update-scale"),
    pytest.param("PATCH", "/api/v1/nodes/n", {}, ("patch", "", "nodes", "", "", "n"), id="patch-cluster-scoped"),
    pytest.param("DELETE", "/api/v1/namespaces/ns/configmaps", {},
                 ("deletecollection", "", "configmaps", "", "ns", ""), id="deletecollection"),
    pytest.param("DELETE", "/api/v1/namespaces/ns/configmaps/c", {}, ("delete", "", "configmaps", "", "ns", "c"),
                 id="delete"),
    pytest.param("GET", "/api/v1/namespaces/ns", {}, ("get", "", "namespaces", "", "ns", "ns"), id="a-namespace"),
    pytest.param("PUT", "/api/v1/namespaces/ns/finalize", {}, ("update", "", "namespaces", "finalize", "ns", "ns"),
                 id="namespace-finalize"),
    pytest.param("GET", "/api/v1/watch/namespaces/ns/pods", {}, ("watch", "", "pods", "", "ns", ""),
                 id="watch-path"),
])
def test_request_attributes(method, path, query, want):
    a = requestinfo.attributes(SA, method, path, query)
    assert a.resource_request
    assert (a.verb, a.api_group, a.resource, a.subresource, a.namespace, a.name) == want


@pytest.mark.parametrize("path", ["/version", "/healthz", "/api", "/api/v1", "/apis", "/apis/apps",
                                  "/apis/apps/v1", "/openapi/v3/apis/apps/v1", "/"])
def test_discovery_and_other_paths_are_non_resource_requests(path):
    a = requestinfo.attributes(SA, "GET", path, {})
    assert not a.resource_request and a.verb == "get" and a.path == path


def test_impersonation_checks_and_the_acting_user():
    admin = UserInfo("kubernetes-admin", (rbac.MASTERS,))
    assert rbac.impersonation(admin, None, [], None, {}) is None
    acting, checks = rbac.impersonation(admin, "system:serviceaccount:team:x", [], None, {})
    assert acting == rbac.service_account_user("team", "x")
    assert [(c.verb, c.resource, c.namespace, c.name) for c in checks] == [("impersonate", "serviceaccounts", "team",
                                                                            "x")]
    acting, checks = rbac.impersonation(admin, "jane", ["dev"], "u-1", {"scopes": ["a"]})
    assert acting == UserInfo("jane", ("dev", rbac.AUTHENTICATED), "u-1", {"scopes": ("a",)})
    assert [(c.api_group, c.resource, c.subresource, c.name) for c in checks] == [
        ("", "users", "", "jane"), ("", "groups", "", "dev"), ("authentication.k8s.io", "userextras", "scopes", "a"),
        ("authentication.k8s.io", "uids", "", "u-1")]
    anonymous, _ = rbac.impersonation(admin, rbac.ANONYMOUS, [], None, {})
    assert anonymous.groups == (rbac.UNAUTHENTICATED,)
    with pytest.raises(rbac.ImpersonationError):
        rbac.impersonation(admin, None, ["dev"], None, {})


def test_the_bootstrap_policy_is_valid_and_binds_only_roles_it_has():
    names = {r.metadata.name for r in CLUSTER_ROLES}
    for role in CLUSTER_ROLES:
        errs: list[tuple[str, str]] = []
        validate_cluster_role(errs, role)
        assert errs == [], role.metadata.name
        assert role.metadata.labels["kubernetes.io/bootstrapping"] == "rbac-defaults"
    for binding in CLUSTER_ROLE_BINDINGS:
        errs = []
        validate_cluster_role_binding(errs, binding)
        assert errs == [] and binding.roleRef.name in names
    assert {"cluster-admin", "admin", "edit", "view", "system:discovery", "system:basic-user",
            "system:public-info-viewer"} <= names


# -- properties -----------------------------------------------------------------------------------

RESOURCE_ATTRS = st.builds(
    lambda verb, group, resource, sub, name, ns: res(verb, resource, group=group, sub=sub, name=name, namespace=ns),
    st.sampled_from(["get", "list", "watch", "create", "delete"]), st.sampled_from(["", "apps", "batch"]),
    st.sampled_from(["pods", "deployments", "configmaps"]), st.sampled_from(["", "log", "status", "scale"]),
    st.sampled_from(["", "a", "b"]), st.sampled_from(["", "default", "team"]))
RULES = st.builds(
    lambda verbs, groups, resources, names: PolicyRule(verbs=verbs, apiGroups=groups, resources=resources,
                                                       resourceNames=names),
    st.lists(st.sampled_from(["get", "list", "watch", "create", "delete", "*"]), min_size=1, max_size=3),
    st.lists(st.sampled_from(["", "apps", "batch", "*"]), min_size=1, max_size=2),
    st.lists(st.sampled_from(["pods", "deployments", "configmaps", "pods/log", "*/status", "*"]), min_size=1,
             max_size=3),
    st.lists(st.sampled_from(["a", "b"]), max_size=1))


@given(RESOURCE_ATTRS, RULES, st.sampled_from(["verbs", "apiGroups", "resources"]))
def test_a_wildcard_allows_whatever_the_specific_rule_allows(attrs, r, widened):
    if rbac.rule_allows(attrs, r):
        assert rbac.rule_allows(attrs, replace_field(r, widened, ["*"]))


@given(RESOURCE_ATTRS, RULES)
def test_resource_names_only_narrow_a_rule(attrs, r):
    if rbac.rule_allows(attrs, r):
        assert rbac.rule_allows(attrs, replace_field(r, "resourceNames", []))
    if r.resourceNames and rbac.rule_allows(attrs, r):
        assert attrs.name in r.resourceNames


@given(RESOURCE_ATTRS, st.lists(RULES, max_size=4), RULES)
def test_another_binding_never_takes_a_right_away(attrs, rules, extra):
    bound = Fake(cluster_roles={"r": _cr("r", *rules), "more": _cr("more", extra)},
                 crbs=[_crb("r", "r", Subject(kind="ServiceAccount", name="x", namespace="default"))])
    before = rbac.authorize(bound, attrs).allowed
    more = Fake(cluster_roles=bound.cluster_roles,
                crbs=bound.crbs, rbs=[_rb("more", "team", "ClusterRole", "more",
                                          Subject(kind="ServiceAccount", name="x", namespace="default"))])
    after = rbac.authorize(more, attrs).allowed
    assert after >= before
    # and the namespaced grant holds in its namespace only
    if after and not before:
        assert attrs.namespace == "team"


@given(st.sampled_from(["/version", "/api", "/apis/apps/v1", "/healthz/ready", "/metrics", "/openapi/v3"]),
       st.sampled_from(["/version", "/api/*", "/apis/*", "/healthz*", "*", "/openapi/*", "/metrics"]))
def test_a_url_prefix_rule_allows_every_path_under_it(path, pattern):
    allowed = rbac.rule_allows(url("get", path), PolicyRule(verbs=["get"], nonResourceURLs=[pattern]))
    expected = pattern == "*" or pattern == path or (pattern.endswith("*") and path.startswith(pattern[:-1]))
    assert allowed is expected


def replace_field(r: PolicyRule, name: str, value: list[str]) -> PolicyRule:
    return replace(r, **{name: value})


# -- escalation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("owner", "wanted", "missing"), [
    pytest.param([rule(["*"], ["*"], ["*"])], [rule(["get", "delete"], ["apps"], ["deployments/scale"])], [],
                 id="everything-covers-anything"),
    pytest.param([READ_PODS], [rule(["get"], resources=["pods"], names=["a"])], [], id="unnamed-covers-named"),
    pytest.param([rule(["get"], resources=["pods"], names=["a"])], [rule(["get"], resources=["pods"])],
                 [rule(["get"], resources=["pods"])], id="named-does-not-cover-unnamed"),
    pytest.param([rule(["get"], resources=["*/log"])], [rule(["get"], resources=["pods/log", "pods"])],
                 [rule(["get"], resources=["pods"])], id="star-subresource"),
    pytest.param([READ_PODS], [rule(["get", "create"], ["", "apps"], ["pods"])],
                 [rule(["create"], resources=["pods"]), rule(["get"], ["apps"], ["pods"]),
                  rule(["create"], ["apps"], ["pods"])], id="atomic-breakdown"),
    pytest.param([rule(["get"], urls=["/apis/*"])], [rule(["get"], urls=["/apis/apps", "/metrics"])],
                 [rule(["get"], urls=["/metrics"])], id="urls"),
])
def test_uncovered_rules(owner, wanted, missing):
    assert rbac.uncovered(owner, wanted) == missing


def test_escalation_message_is_kubernetes():
    missing = rbac.uncovered([READ_PODS], [rule(["create", "delete"], resources=["pods"]),
                                           rule(["*"], urls=["*"])])
    assert rbac.escalation_message(SA, missing) == (
        'user "system:serviceaccount:default:x" (groups=["system:serviceaccounts" "system:serviceaccounts:default" '
        '"system:authenticated"]) is attempting to grant RBAC permissions not currently held:\n'
        '{APIGroups:[""], Resources:["pods"], Verbs:["create" "delete"]}\n{NonResourceURLs:["*"], Verbs:["*"]}')


@given(st.lists(RULES, max_size=4), RULES)
def test_rights_one_holds_are_never_an_escalation(owned, wanted):
    assert rbac.uncovered([*owned, wanted], [wanted]) == []
    everything = [rule(["*"], ["*"], ["*"])]
    assert rbac.uncovered(everything, [wanted, *owned]) == []
    # a rule covering an atomic right allows the request that right is
    for sub in rbac.breakdown(wanted):
        attrs = res(sub.verbs[0], sub.resources[0].split("/")[0], group=sub.apiGroups[0],
                    sub=sub.resources[0].split("/", 1)[1] if "/" in sub.resources[0] else "",
                    name=sub.resourceNames[0] if sub.resourceNames else "")
        if "*" not in (sub.verbs[0], sub.apiGroups[0]) and not sub.resources[0].startswith("*"):
            assert rbac.rule_allows(attrs, wanted)


def _role(name: str, namespace: str, *rules: PolicyRule) -> Role:
    return Role(metadata=ObjectMeta(name=name, namespace=namespace), rules=list(rules))


def test_grants_are_refused_beyond_what_their_author_holds():
    me = Subject(kind="ServiceAccount", name="x", namespace="default")
    policy = Fake(cluster_roles={"view": _cr("view", READ_PODS), "root": _cr("root", *rbac.FULL_AUTHORITY),
                                 "binder": _cr("binder", rule(["bind"], ["rbac.authorization.k8s.io"],
                                                              ["clusterroles"], names=["root"])),
                                 "escalator": _cr("escalator", rule(["escalate"], ["rbac.authorization.k8s.io"],
                                                                    ["roles"]))},
                  rbs=[_rb("mine", "default", "ClusterRole", "view", me)])
    assert rbac.grant_refusal(policy, SA, _role("r", "default", READ_PODS)) is None
    assert rbac.grant_refusal(policy, SA, _rb("b", "default", "ClusterRole", "view", me)) is None
    # held in its namespace only: the same Role elsewhere is an escalation
    elsewhere = rbac.grant_refusal(policy, SA, _role("r", "other", READ_PODS))
    assert elsewhere is not None and elsewhere.message.endswith(
        '{APIGroups:[""], Resources:["pods"], Verbs:["get" "list" "watch"]}')
    root = rbac.grant_refusal(policy, SA, _rb("b", "default", "ClusterRole", "root", me))
    assert root is not None and "{NonResourceURLs:[\"*\"], Verbs:[\"*\"]}" in root.message
    assert rbac.grant_refusal(policy, SA, _rb("b", "default", "ClusterRole", "gone", me)) == rbac.GrantRefusal(
        missing_role='clusterrole.rbac.authorization.k8s.io "gone" not found')
    aggregated = ClusterRole(metadata=ObjectMeta(name="agg"), aggregationRule=AggregationRule(
        clusterRoleSelectors=[LabelSelector(matchLabels={"a": "b"})]))
    cluster_wide = Fake(cluster_roles=policy.cluster_roles,
                        crbs=[_crb("mine", "view", me), _crb("write-roles", "view", me)])
    assert rbac.grant_refusal(cluster_wide, SA, aggregated) == rbac.GrantRefusal(
        message="must have cluster-admin privileges to use the aggregationRule")
    # bind on that role, escalate on roles: allowed whatever they hold
    policy.rbs.append(_rb("binds", "default", "ClusterRole", "binder", me))
    assert rbac.grant_refusal(policy, SA, _rb("b", "default", "ClusterRole", "root", me)) is None
    policy.rbs.append(_rb("escalates", "default", "ClusterRole", "escalator", me))
    assert rbac.grant_refusal(policy, SA, _role("big", "default", *rbac.FULL_AUTHORITY[:1])) is None
    assert rbac.grant_refusal(Fake(), UserInfo("admin", (rbac.MASTERS,)), aggregated) is None


SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=12).filter(
    lambda s: s not in (".", ".."))


@given(st.sampled_from(["", "apps", "batch", "rbac.authorization.k8s.io"]), SEGMENT, SEGMENT,
       st.one_of(st.none(), SEGMENT), st.sampled_from(["", "status", "scale", "log"]),
       st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]), st.booleans())
def test_resource_paths_give_back_what_they_name(group, namespace, resource, name, sub, method, watch):
    if resource == "watch" or (sub and name is None):
        return
    prefix = "/api/v1" if not group else f"/apis/{group}/v1"
    path = f"{prefix}/namespaces/{namespace}/{resource}" + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")
    a = requestinfo.attributes(SA, method, path, {"watch": "true"} if watch else {})
    assert a.resource_request and a.api_group == group and a.api_version == "v1"
    if resource in ("status", "finalize") and name is None:
        return  # /namespaces/<ns>/status is the namespace's own subresource
    assert (a.namespace, a.resource, a.name or None, a.subresource) == (namespace, resource, name, sub)
    plain = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
    if name:
        assert a.verb == plain
    else:
        assert a.verb == {"get": "watch" if watch else "list", "delete": "deletecollection"}.get(plain, plain)
