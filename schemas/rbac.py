"""rbac.authorization.k8s.io/v1: Role, ClusterRole, RoleBinding, ClusterRoleBinding.

Stored, defaulted and validated as Kubernetes does (``pkg/apis/rbac/validation``); the
apiserver enforces them (services/apiserver/rbac.py) and the api makes Kubernetes' default
roles (schemas/bootstrappolicy.py). A Role's rules hold in its
namespace; a ClusterRole's everywhere, and only a ClusterRole may name ``nonResourceURLs``. A
ClusterRole with an ``aggregationRule`` gets its rules from the ClusterRoles its selectors
match (kept by the clusterroleaggregation service, ``services/clusterroleaggregation``). A binding's
``roleRef`` may not change once it is made.
"""

from __future__ import annotations

from collections.abc import Iterable

from msgspec.structs import replace

from schemas import names
from schemas.meta import Base, LabelSelector, Object
from schemas.selector import SelectorError, from_label_selector

GROUP = "rbac.authorization.k8s.io"
API_VERSION = f"{GROUP}/v1"
SUBJECT_KINDS = ("ServiceAccount", "User", "Group")

Errors = list[tuple[str, str]]


class PolicyRule(Base, kw_only=True, frozen=True):
    """What a rule allows: ``verbs`` on ``resources`` (optionally only ``resourceNames``) of
    ``apiGroups``, or on ``nonResourceURLs`` (ClusterRoles only). ``*`` means all."""

    verbs: list[str] = []
    apiGroups: list[str] = []
    resources: list[str] = []
    resourceNames: list[str] = []
    nonResourceURLs: list[str] = []


class AggregationRule(Base, kw_only=True, frozen=True):
    clusterRoleSelectors: list[LabelSelector] = []  # ORed: a ClusterRole any of them matches is aggregated


class Subject(Base, kw_only=True, frozen=True):
    kind: str  # ServiceAccount, User or Group
    name: str = ""
    # omitted (Kubernetes' omitempty) or "" for a ServiceAccount; rbac.authorization.k8s.io (the
    # default) for User and Group
    apiGroup: str | None = None
    namespace: str | None = None  # a ServiceAccount's; required in a ClusterRoleBinding


class RoleRef(Base, kw_only=True, frozen=True):
    apiGroup: str = ""  # defaulted to rbac.authorization.k8s.io
    kind: str = ""  # Role or ClusterRole (ClusterRole only in a ClusterRoleBinding)
    name: str = ""


class Role(Object, kw_only=True, frozen=True):
    """Rules that hold in the Role's namespace."""

    API_VERSION = API_VERSION
    KIND = "Role"

    rules: list[PolicyRule] = []


class ClusterRole(Object, kw_only=True, frozen=True):
    """Rules that hold in every namespace (and for non-resource URLs); cluster-scoped. With an
    ``aggregationRule`` its ``rules`` are the controller's: the union of the matched roles'."""

    API_VERSION = API_VERSION
    KIND = "ClusterRole"

    rules: list[PolicyRule] | None = None  # null (as an aggregated role is often written) is no rules
    aggregationRule: AggregationRule | None = None


class RoleBinding(Object, kw_only=True, frozen=True):
    """Grants a Role (or a ClusterRole, within this namespace) to subjects."""

    API_VERSION = API_VERSION
    KIND = "RoleBinding"

    roleRef: RoleRef  # immutable
    subjects: list[Subject] = []


class ClusterRoleBinding(Object, kw_only=True, frozen=True):
    """Grants a ClusterRole to subjects in every namespace; cluster-scoped."""

    API_VERSION = API_VERSION
    KIND = "ClusterRoleBinding"

    roleRef: RoleRef  # immutable
    subjects: list[Subject] = []


Binding = RoleBinding | ClusterRoleBinding


# -- defaults (Kubernetes' pkg/apis/rbac/v1/defaults.go) ---------------------------------------


def _subject_default(s: Subject) -> Subject:
    if s.apiGroup or s.kind not in ("User", "Group"):
        return s
    return replace(s, apiGroup=GROUP)


def default_binding(b: Binding) -> Binding:
    """roleRef.apiGroup and a User's or Group's apiGroup default to rbac.authorization.k8s.io."""
    ref = b.roleRef if b.roleRef.apiGroup else replace(b.roleRef, apiGroup=GROUP)
    subjects = [_subject_default(s) for s in b.subjects]
    if ref is b.roleRef and subjects == b.subjects:
        return b
    return replace(b, roleRef=ref, subjects=subjects)


# -- validation (Kubernetes' ValidateRole, ValidateClusterRole, ValidateRoleBinding, ...) -------


def _go_strings(values: list[str]) -> str:
    return "[]string{" + ", ".join(f'"{v}"' for v in values) + "}"


def _supported(value: str, allowed: Iterable[str]) -> str:
    return f'Unsupported value: "{value}": supported values: ' + ", ".join(f'"{a}"' for a in allowed)


def _rule(errs: Errors, path: str, rule: PolicyRule, namespaced: bool) -> None:
    if not rule.verbs:
        errs.append((f"{path}.verbs", "Required value: verbs must contain at least one value"))
    if rule.nonResourceURLs:
        urls = _go_strings(rule.nonResourceURLs)
        if namespaced:
            errs.append((f"{path}.nonResourceURLs",
                         f"Invalid value: {urls}: namespaced rules cannot apply to non-resource URLs"))
        if rule.apiGroups or rule.resources or rule.resourceNames:
            errs.append((f"{path}.nonResourceURLs",
                         f"Invalid value: {urls}: rules cannot apply to both regular resources and non-resource URLs"))
        return
    if not rule.apiGroups:
        errs.append((f"{path}.apiGroups", "Required value: resource rules must supply at least one api group"))
    if not rule.resources:
        errs.append((f"{path}.resources", "Required value: resource rules must supply at least one resource"))


def validate_role(errs: Errors, role: Role) -> None:
    for i, rule in enumerate(role.rules):
        _rule(errs, f"rules[{i}]", rule, namespaced=True)


def validate_cluster_role(errs: Errors, role: ClusterRole) -> None:
    for i, rule in enumerate(role.rules or ()):
        _rule(errs, f"rules[{i}]", rule, namespaced=False)
    agg = role.aggregationRule
    if agg is None:
        return
    if not agg.clusterRoleSelectors:
        errs.append(("aggregationRule.clusterRoleSelectors",
                     "Required value: at least one clusterRoleSelector required if aggregationRule is non-nil"))
    for i, sel in enumerate(agg.clusterRoleSelectors):
        try:
            from_label_selector(sel)
        except SelectorError as e:
            errs.append((f"aggregationRule.clusterRoleSelectors[{i}]", str(e)))


def _subject(errs: Errors, path: str, s: Subject, namespaced: bool) -> None:
    if not s.name:
        errs.append((f"{path}.name", "Required value"))
    if s.kind == "ServiceAccount":
        if s.name:
            errs.extend((f"{path}.name", f'Invalid value: "{s.name}": {m}') for m in names.dns1123_subdomain(s.name))
        if s.apiGroup:
            errs.append((f"{path}.apiGroup", _supported(s.apiGroup, [""])))
        if not namespaced and not s.namespace:
            errs.append((f"{path}.namespace", "Required value"))
    elif s.kind in ("User", "Group"):
        if s.apiGroup != GROUP:
            errs.append((f"{path}.apiGroup", _supported(s.apiGroup or "", [GROUP])))
    else:
        errs.append((f"{path}.kind", _supported(s.kind, SUBJECT_KINDS)))


def _binding(errs: Errors, b: Binding, kinds: tuple[str, ...], namespaced: bool) -> None:
    ref = b.roleRef
    if ref.apiGroup != GROUP:
        errs.append(("roleRef.apiGroup", _supported(ref.apiGroup, [GROUP])))
    if ref.kind not in kinds:
        errs.append(("roleRef.kind", _supported(ref.kind, kinds)))
    if not ref.name:
        errs.append(("roleRef.name", "Required value"))
    else:
        errs.extend(("roleRef.name", f'Invalid value: "{ref.name}": {m}') for m in names.path_segment_name(ref.name))
    for i, s in enumerate(b.subjects):
        _subject(errs, f"subjects[{i}]", s, namespaced)


def validate_role_binding(errs: Errors, b: RoleBinding) -> None:
    _binding(errs, b, ("Role", "ClusterRole"), namespaced=True)


def validate_cluster_role_binding(errs: Errors, b: ClusterRoleBinding) -> None:
    _binding(errs, b, ("ClusterRole",), namespaced=False)


def validate_binding_update(errs: Errors, new: Binding, old: Binding) -> None:
    if new.roleRef != old.roleRef:
        r = new.roleRef
        errs.append(("roleRef", f'Invalid value: rbac.RoleRef{{APIGroup:"{r.apiGroup}", Kind:"{r.kind}", '
                                f'Name:"{r.name}"}}: cannot change roleRef'))
