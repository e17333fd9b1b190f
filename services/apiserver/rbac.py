"""Kubernetes' RBAC authorizer (``plugin/pkg/auth/authorizer/rbac``): whether a request's
attributes are allowed by the Roles and ClusterRoles bound to its user, the rules a user holds
in a namespace (SelfSubjectRulesReview), and the 403 a refusal answers. Pure: the roles and
bindings come through :class:`Policy` (the apiserver's watch caches).

A request is allowed when its user is in ``system:masters`` (as Kubernetes' privileged-group
authorizer) or when one rule of a role bound to it allows it: the ClusterRoleBindings first,
then the RoleBindings of the request's namespace (a RoleBinding to a ClusterRole grants its
rules within that namespace only). RBAC never denies: what no rule allows is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from schemas.rbac import ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject

MASTERS = "system:masters"  # Kubernetes' SystemPrivilegedGroup: always allowed
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
SERVICE_ACCOUNTS = "system:serviceaccounts"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
ANONYMOUS = "system:anonymous"
ALL = "*"


@dataclass(frozen=True, slots=True)
class UserInfo:
    """Who makes a request, as Kubernetes' user.Info."""

    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Attributes:
    """What a request does (Kubernetes' authorizer.Attributes): a resource request names a
    verb, API group, resource (and subresource), namespace and name; any other request a verb
    and a path."""

    user: UserInfo
    verb: str
    resource_request: bool
    path: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""


class Policy(Protocol):
    """The roles and bindings the authorizer reads."""

    def cluster_role_bindings(self) -> Iterable[ClusterRoleBinding]: ...

    def role_bindings(self, namespace: str) -> Iterable[RoleBinding]: ...

    def cluster_role(self, name: str) -> ClusterRole | None: ...

    def role(self, namespace: str, name: str) -> Role | None: ...


def service_account_user(namespace: str, name: str, uid: str = "",
                         extra: Mapping[str, tuple[str, ...]] | None = None) -> UserInfo:
    """A service account's user: ``system:serviceaccount:<ns>:<name>`` in the groups Kubernetes
    gives it."""
    return UserInfo(f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}",
                    (SERVICE_ACCOUNTS, f"{SERVICE_ACCOUNTS}:{namespace}", AUTHENTICATED), uid, extra or {})


def split_service_account(user: str) -> tuple[str, str] | None:
    """(namespace, name) of a service account's user name, or None for any other user."""
    if not user.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    namespace, sep, name = user[len(SERVICE_ACCOUNT_PREFIX):].partition(":")
    if not sep or not namespace or not name or ":" in name:
        return None
    return namespace, name


# -- one rule ---------------------------------------------------------------------------------


def verb_matches(rule: PolicyRule, verb: str) -> bool:
    return ALL in rule.verbs or verb in rule.verbs


def api_group_matches(rule: PolicyRule, group: str) -> bool:
    return ALL in rule.apiGroups or group in rule.apiGroups


def resource_matches(rule: PolicyRule, combined: str, subresource: str) -> bool:
    """``combined`` is ``resource`` or ``resource/subresource``; a rule's ``*`` matches every
    resource and subresource, ``*/sub`` the subresource ``sub`` of any resource."""
    for r in rule.resources:
        if r in (ALL, combined):
            return True
        if subresource and r == f"*/{subresource}":
            return True
    return False


def resource_name_matches(rule: PolicyRule, name: str) -> bool:
    """No ``resourceNames``: every name (and none, as a list or a create has)."""
    return not rule.resourceNames or name in rule.resourceNames


def url_matches(rule: PolicyRule, path: str) -> bool:
    """A non-resource URL of the rule: ``*``, the path itself, or a prefix ending in ``*``."""
    for url in rule.nonResourceURLs:
        if url in (ALL, path):
            return True
        if url.endswith("*") and path.startswith(url.rstrip("*")):
            return True
    return False


def rule_allows(attrs: Attributes, rule: PolicyRule) -> bool:
    """Kubernetes' RuleAllows."""
    if not verb_matches(rule, attrs.verb):
        return False
    if not attrs.resource_request:
        return url_matches(rule, attrs.path)
    combined = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    return (api_group_matches(rule, attrs.api_group) and resource_matches(rule, combined, attrs.subresource)
            and resource_name_matches(rule, attrs.name))


# -- bindings ---------------------------------------------------------------------------------


def applies_to(user: UserInfo, subject: Subject, namespace: str) -> bool:
    """Whether ``subject`` (of a binding in ``namespace``; "" for a ClusterRoleBinding) is
    ``user``. A ServiceAccount subject without a namespace is the binding's namespace's."""
    if subject.kind == "User":
        return user.name == subject.name
    if subject.kind == "Group":
        return subject.name in user.groups
    if subject.kind == "ServiceAccount":
        ns = subject.namespace or namespace
        return bool(ns) and user.name == f"{SERVICE_ACCOUNT_PREFIX}{ns}:{subject.name}"
    return False


def _describe_subject(s: Subject, namespace: str) -> str:
    if s.kind == "ServiceAccount":
        return f'{s.kind} "{s.name}/{s.namespace or namespace}"'
    return f'{s.kind} "{s.name}"'


@dataclass(frozen=True, slots=True)
class Grant:
    """The rules one binding gives a user, and how Kubernetes names the binding in a reason
    (``ClusterRoleBinding "cluster-admin" of ClusterRole "cluster-admin" to Group "system:masters"``);
    ``error`` when its role is missing."""

    source: str
    rules: tuple[PolicyRule, ...]
    error: str = ""


def _role_rules(policy: Policy, kind: str, name: str, namespace: str) -> tuple[tuple[PolicyRule, ...], str]:
    if kind == "ClusterRole":
        cluster_role = policy.cluster_role(name)
        if cluster_role is None:
            return (), f'clusterrole.rbac.authorization.k8s.io "{name}" not found'
        return tuple(cluster_role.rules or ()), ""
    if kind == "Role":
        role = policy.role(namespace, name)
        if role is None:
            return (), f'role.rbac.authorization.k8s.io "{name}" not found'
        return tuple(role.rules), ""
    return (), f'unsupported role reference kind: "{kind}"'


def grants(policy: Policy, user: UserInfo, namespace: str) -> Iterator[Grant]:
    """What every binding that names ``user`` gives it: ClusterRoleBindings, then (when
    ``namespace`` is set) the RoleBindings of that namespace, as Kubernetes visits them."""
    for crb in sorted(policy.cluster_role_bindings(), key=lambda b: b.metadata.name):
        subject = next((s for s in crb.subjects if applies_to(user, s, "")), None)
        if subject is None:
            continue
        rules, error = _role_rules(policy, crb.roleRef.kind, crb.roleRef.name, "")
        yield Grant(f'ClusterRoleBinding "{crb.metadata.name}" of {crb.roleRef.kind} "{crb.roleRef.name}" to '
                    f"{_describe_subject(subject, '')}", rules, error)
    if not namespace:
        return
    for rb in sorted(policy.role_bindings(namespace), key=lambda b: b.metadata.name):
        subject = next((s for s in rb.subjects if applies_to(user, s, namespace)), None)
        if subject is None:
            continue
        rules, error = _role_rules(policy, rb.roleRef.kind, rb.roleRef.name, namespace)
        yield Grant(f'RoleBinding "{rb.metadata.name}/{namespace}" of {rb.roleRef.kind} "{rb.roleRef.name}" to '
                    f"{_describe_subject(subject, namespace)}", rules, error)


def _aggregate(errors: list[str]) -> str:
    """Kubernetes' utilerrors aggregate: one message alone, several (once each) in brackets."""
    seen = list(dict.fromkeys(errors))
    return seen[0] if len(seen) == 1 else "[" + ", ".join(seen) + "]"


def authorize(policy: Policy, attrs: Attributes) -> Decision:
    """Whether ``attrs`` is allowed, and why (Kubernetes' reason text)."""
    if MASTERS in attrs.user.groups:
        return Decision(True)
    errors: list[str] = []
    for grant in grants(policy, attrs.user, attrs.namespace):
        if grant.error:
            errors.append(grant.error)
        for rule in grant.rules:
            if rule_allows(attrs, rule):
                return Decision(True, f"RBAC: allowed by {grant.source}")
    return Decision(False, f"RBAC: {_aggregate(errors)}" if errors else "")


def rules_for(policy: Policy, user: UserInfo, namespace: str) -> tuple[list[PolicyRule], list[PolicyRule], str]:
    """The resource rules and non-resource rules ``user`` holds in ``namespace`` (a
    SelfSubjectRulesReview's), and the error of bindings whose role is missing."""
    resource: list[PolicyRule] = []
    non_resource: list[PolicyRule] = []
    errors: list[str] = []
    for grant in grants(policy, user, namespace):
        if grant.error:
            errors.append(grant.error)
        for rule in grant.rules:
            if rule.resources:
                resource.append(PolicyRule(verbs=rule.verbs, apiGroups=rule.apiGroups, resources=rule.resources,
                                           resourceNames=rule.resourceNames))
            if rule.nonResourceURLs:
                non_resource.append(PolicyRule(verbs=rule.verbs, nonResourceURLs=rule.nonResourceURLs))
    return resource, non_resource, _aggregate(errors) if errors else ""


# -- refusals -----------------------------------------------------------------------------------


def forbidden_message(attrs: Attributes, reason: str = "") -> str:
    """The message of Kubernetes' 403 for ``attrs`` (responsewriters.Forbidden and
    apierrors.NewForbidden): ``pods is forbidden: User "x" cannot list resource "pods" in API
    group "" in the namespace "default"``."""
    user = attrs.user.name
    if not attrs.resource_request:
        text = f'User "{user}" cannot {attrs.verb} path "{attrs.path}"'
    else:
        resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
        scope = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
        text = f'User "{user}" cannot {attrs.verb} resource "{resource}" in API group "{attrs.api_group}" {scope}'
    if reason:
        text = f"{text}: {reason}"
    qualified = group_resource(attrs)
    if not qualified:
        return f"forbidden: {text}"
    if not attrs.name:
        return f"{qualified} is forbidden: {text}"
    return f'{qualified} "{attrs.name}" is forbidden: {text}'


def group_resource(attrs: Attributes) -> str:
    """``resource`` or ``resource.group`` (Kubernetes' GroupResource.String); "" for a path."""
    if not attrs.resource_request or not attrs.resource:
        return ""
    return f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource


# -- impersonation ------------------------------------------------------------------------------


class ImpersonationError(ValueError):
    """Impersonation headers Kubernetes refuses with a 400."""


def impersonation(requester: UserInfo, user: str | None, groups: Iterable[str], uid: str | None,
                  extra: Mapping[str, Iterable[str]]) -> tuple[UserInfo, list[Attributes]] | None:
    """The user a request acts as under Kubernetes' impersonation headers (``Impersonate-User``,
    ``-Group``, ``-Uid``, ``-Extra-<key>``), and what the requester must be allowed (verb
    ``impersonate`` on users, groups, serviceaccounts, uids or userextras) for it; None when
    the request impersonates nobody."""
    groups = list(groups)
    extra = {k: list(v) for k, v in extra.items()}
    if user is None:
        if groups or uid is not None or extra:
            raise ImpersonationError("requested impersonation of groups, extra or uid without impersonating a user")
        return None
    checks: list[Attributes] = []

    def check(resource: str, name: str, namespace: str = "", group: str = "", subresource: str = "") -> None:
        checks.append(Attributes(user=requester, verb="impersonate", resource_request=True, api_group=group,
                                 api_version="v1", resource=resource, subresource=subresource, namespace=namespace,
                                 name=name))

    account = split_service_account(user)
    if account is not None:
        check("serviceaccounts", account[1], namespace=account[0])
    else:
        check("users", user)
    for g in groups:
        check("groups", g)
    for key, values in sorted(extra.items()):
        for value in values:
            check("userextras", value, group="authentication.k8s.io", subresource=key)
    if uid is not None:
        check("uids", uid, group="authentication.k8s.io")
    acting = list(groups)
    if account is not None and not groups:
        acting = [SERVICE_ACCOUNTS, f"{SERVICE_ACCOUNTS}:{account[0]}"]
    marker = UNAUTHENTICATED if user == ANONYMOUS else AUTHENTICATED
    if marker not in acting:
        acting.append(marker)
    return UserInfo(user, tuple(acting), uid or "", {k: tuple(v) for k, v in extra.items()}), checks


# -- escalation -------------------------------------------------------------------------------
# Kubernetes' RBAC storage refuses a Role or ClusterRole holding rights its author lacks, and a
# binding to a role whose rights its author lacks, unless the author may ``escalate`` (roles) or
# ``bind`` (bindings) it, or is in system:masters (registry/rbac/validation/policy_comparator.go).

FULL_AUTHORITY = (PolicyRule(verbs=[ALL], apiGroups=[ALL], resources=[ALL]),
                  PolicyRule(verbs=[ALL], nonResourceURLs=[ALL]))


def breakdown(rule: PolicyRule) -> list[PolicyRule]:
    """A rule as its atomic rules: one verb on one group's resource (and name), or one URL."""
    out: list[PolicyRule] = []
    for group in rule.apiGroups:
        for resource in rule.resources:
            for verb in rule.verbs:
                for name in rule.resourceNames or [""]:
                    out.append(PolicyRule(verbs=[verb], apiGroups=[group], resources=[resource],
                                          resourceNames=[name] if name else []))
    for url in rule.nonResourceURLs:
        for verb in rule.verbs:
            out.append(PolicyRule(verbs=[verb], nonResourceURLs=[url]))
    return out


def _resources_cover(owner: list[str], wanted: list[str]) -> bool:
    if ALL in owner or all(r in owner for r in wanted):
        return True
    for r in wanted:
        if r in owner:
            continue
        if "/" not in r or "*/" + r.split("/", 1)[1] not in owner:
            return False
    return True


def _url_covers(owner: str, url: str) -> bool:
    return owner == url or (owner.endswith("*") and url.startswith(owner.rstrip("*")))


def rule_covers(owner: PolicyRule, sub: PolicyRule) -> bool:
    """Whether ``owner`` holds every right of the atomic rule ``sub`` (Kubernetes' ruleCovers)."""
    verbs = ALL in owner.verbs or all(v in owner.verbs for v in sub.verbs)
    groups = ALL in owner.apiGroups or all(g in owner.apiGroups for g in sub.apiGroups)
    resources = _resources_cover(owner.resources, sub.resources)
    urls = all(any(_url_covers(o, u) for o in owner.nonResourceURLs) for u in sub.nonResourceURLs)
    if sub.resourceNames:
        names = not owner.resourceNames or all(n in owner.resourceNames for n in sub.resourceNames)
    else:
        names = not owner.resourceNames
    return verbs and groups and resources and urls and names


def uncovered(owner: Iterable[PolicyRule], wanted: Iterable[PolicyRule]) -> list[PolicyRule]:
    """The atomic rules of ``wanted`` no rule of ``owner`` covers (Kubernetes' Covers)."""
    owner = list(owner)
    return [sub for rule in wanted for sub in breakdown(rule) if not any(rule_covers(o, sub) for o in owner)]


def _go_quoted(values: Iterable[str]) -> str:
    """Go's ``%q`` of a []string: ``["a" "b"]``."""
    return "[" + " ".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "]"


def compact_string(rule: PolicyRule) -> str:
    """Kubernetes' CompactString: ``{APIGroups:[""], Resources:["pods"], Verbs:["create"]}``."""
    parts = [f"{label}:{_go_quoted(values)}" for label, values in (
        ("APIGroups", rule.apiGroups), ("Resources", rule.resources), ("NonResourceURLs", rule.nonResourceURLs),
        ("ResourceNames", rule.resourceNames), ("Verbs", rule.verbs)) if values]
    return "{" + ", ".join(parts) + "}"


def compact(rules: Iterable[PolicyRule]) -> list[PolicyRule]:
    """Kubernetes' CompactRules: rules on one group's one resource (and at most one name) that
    differ only in their verbs become one."""
    out: list[PolicyRule] = []
    simple: dict[tuple[str, str, str], int] = {}
    for r in rules:
        if len(r.apiGroups) == 1 and len(r.resources) == 1 and len(r.resourceNames) <= 1 and not r.nonResourceURLs:
            key = (r.apiGroups[0], r.resources[0], r.resourceNames[0] if r.resourceNames else "")
            if key in simple:
                at = simple[key]
                out[at] = PolicyRule(verbs=out[at].verbs + r.verbs, apiGroups=out[at].apiGroups,
                                     resources=out[at].resources, resourceNames=out[at].resourceNames)
                continue
            simple[key] = len(out)
        out.append(r)
    return out


def escalation_message(user: UserInfo, missing: Iterable[PolicyRule], errors: str = "") -> str:
    """Why a grant is refused, as Kubernetes' ConfirmNoEscalation says it."""
    lines = sorted({compact_string(r) for r in compact(missing)})
    text = (f'user "{user.name}" (groups={_go_quoted(user.groups)}) is attempting to grant RBAC permissions not '
            "currently held:\n" + "\n".join(lines))
    return f"{text}; resolution errors: [{errors}]" if errors else text


def grant_check(user: UserInfo, verb: str, role_kind: str, namespace: str, name: str) -> Attributes:
    """What lets ``user`` write a role beyond its own rights (``escalate`` on it, in its
    namespace) or bind one (``bind`` on it, in the binding's namespace; "" for a
    ClusterRoleBinding)."""
    return Attributes(user=user, verb=verb, resource_request=True, api_group="rbac.authorization.k8s.io",
                      api_version="*", resource="roles" if role_kind == "Role" else "clusterroles",
                      namespace=namespace, name=name)


@dataclass(frozen=True, slots=True)
class GrantRefusal:
    """Why a write of a role or binding is refused: the role it binds is missing, or ``message``
    (the rights its author lacks)."""

    missing_role: str = ""
    message: str = ""


def grant_refusal(policy: Policy, user: UserInfo, obj: Role | ClusterRole | RoleBinding | ClusterRoleBinding
                  ) -> GrantRefusal | None:
    """Kubernetes' escalation check of ``obj`` written by ``user``; None when it may."""
    if MASTERS in user.groups:
        return None
    namespace = (obj.metadata.namespace or "") if isinstance(obj, Role | RoleBinding) else ""
    wanted: list[PolicyRule]
    if isinstance(obj, Role | ClusterRole):
        if authorize(policy, grant_check(user, "escalate", obj.KIND, namespace, obj.metadata.name)).allowed:
            return None
        wanted = list(obj.rules or [])
    else:
        ref = obj.roleRef
        if authorize(policy, grant_check(user, "bind", ref.kind, namespace, ref.name)).allowed:
            return None
        rules, missing_role = _role_rules(policy, ref.kind, ref.name, namespace)
        if missing_role:
            return GrantRefusal(missing_role=missing_role)
        wanted = list(rules)
    resource_rules, url_rules, resolution = rules_for(policy, user, namespace)
    owned = resource_rules + url_rules
    missing = uncovered(owned, wanted)
    if missing:
        return GrantRefusal(message=escalation_message(user, missing, resolution))
    if isinstance(obj, ClusterRole) and obj.aggregationRule is not None and uncovered(owned, FULL_AUTHORITY):
        return GrantRefusal(message="must have cluster-admin privileges to use the aggregationRule")
    return None
