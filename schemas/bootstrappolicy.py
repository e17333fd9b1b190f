"""The ClusterRoles and ClusterRoleBindings Kubernetes' apiserver bootstraps
(``plugin/pkg/auth/authorizer/rbac/bootstrappolicy``), for the users kybernetes has: the
administrator (group ``system:masters``), service accounts and other authenticated users.

``admin``, ``edit`` and ``view`` are aggregated, as in Kubernetes: their rules are those of the
ClusterRoles labelled ``rbac.authorization.k8s.io/aggregate-to-<role>: "true"`` (the
``system:aggregate-to-*`` roles here, and any a user adds), kept by the clusterroleaggregation
controller; ``edit`` is itself aggregated into ``admin`` and ``view`` into ``edit``. Every object
is labelled ``kubernetes.io/bootstrapping: rbac-defaults`` and annotated
``rbac.authorization.kubernetes.io/autoupdate: "true"``. The api makes those missing at start and
leaves existing ones as they are.
"""

from __future__ import annotations

from schemas.meta import LabelSelector, ObjectMeta
from schemas.rbac import GROUP, AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject

LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
ANNOTATIONS = {"rbac.authorization.kubernetes.io/autoupdate": "true"}
AGGREGATE_TO = "rbac.authorization.k8s.io/aggregate-to-"

READ = ["get", "list", "watch"]
WRITE = ["create", "update", "patch", "delete", "deletecollection"]
READ_WRITE = READ + WRITE

CORE, APPS, AUTHENTICATION, AUTHORIZATION = "", "apps", "authentication.k8s.io", "authorization.k8s.io"
AUTOSCALING, BATCH, COORDINATION, DISCOVERY = "autoscaling", "batch", "coordination.k8s.io", "discovery.k8s.io"
EXTENSIONS, NETWORKING, POLICY, RBAC = "extensions", "networking.k8s.io", "policy", GROUP


def _rule(verbs: list[str], groups: list[str], resources: list[str], names: list[str] | None = None) -> PolicyRule:
    return PolicyRule(verbs=verbs, apiGroups=groups, resources=resources, resourceNames=names or [])


def _urls(verbs: list[str], urls: list[str]) -> PolicyRule:
    return PolicyRule(verbs=verbs, nonResourceURLs=urls)


def _role(name: str, rules: list[PolicyRule] | None = None, *, aggregate_from: str | None = None,
          aggregate_to: str | None = None) -> ClusterRole:
    labels = dict(LABELS)
    if aggregate_to:
        labels[AGGREGATE_TO + aggregate_to] = "true"
    agg = None
    if aggregate_from:
        agg = AggregationRule(clusterRoleSelectors=[LabelSelector(matchLabels={AGGREGATE_TO + aggregate_from: "true"})])
    return ClusterRole(metadata=ObjectMeta(name=name, labels=labels, annotations=dict(ANNOTATIONS)),
                       rules=rules if rules is not None else [], aggregationRule=agg)


def _binding(role: str, *, groups: tuple[str, ...] = (), users: tuple[str, ...] = ()) -> ClusterRoleBinding:
    subjects = [Subject(kind="Group", apiGroup=GROUP, name=g) for g in groups]
    subjects += [Subject(kind="User", apiGroup=GROUP, name=u) for u in users]
    return ClusterRoleBinding(metadata=ObjectMeta(name=role, labels=dict(LABELS), annotations=dict(ANNOTATIONS)),
                              roleRef=RoleRef(apiGroup=GROUP, kind="ClusterRole", name=role), subjects=subjects)


CLUSTER_ROLES: tuple[ClusterRole, ...] = (
    # a "root" role which can do anything
    _role("cluster-admin", [_rule(["*"], ["*"], ["*"]), _urls(["*"], ["*"])]),
    # enough to tell whether the server is ready and to discover its API
    _role("system:discovery", [_urls(["get"], ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
                                               "/openapi/*", "/readyz", "/version", "/version/"])]),
    # what a user may learn about itself
    _role("system:basic-user", [
        _rule(["create"], [AUTHORIZATION], ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
        _rule(["create"], [AUTHENTICATION], ["selfsubjectreviews"]),
    ]),
    # insensitive cluster information, anonymous users' too
    _role("system:public-info-viewer", [_urls(["get"], ["/healthz", "/livez", "/readyz", "/version", "/version/"])]),
    _role("system:monitoring", [_urls(["get"], ["/healthz", "/healthz/*", "/livez", "/livez/*", "/metrics",
                                                "/metrics/slis", "/readyz", "/readyz/*"])]),
    _role("system:service-account-issuer-discovery", [_urls(["get"], [
        "/.well-known/openid-configuration", "/.well-known/openid-configuration/", "/openid/v1/jwks",
        "/openid/v1/jwks/"])]),
    _role("system:auth-delegator", [
        _rule(["create"], [AUTHENTICATION], ["tokenreviews"]),
        _rule(["create"], [AUTHORIZATION], ["subjectaccessreviews"]),
    ]),
    # a namespace's admin: edit, plus granting rights within the namespace
    _role("admin", aggregate_from="admin"),
    # every user-level action in a namespace, but not its rights, quotas or limits
    _role("edit", aggregate_from="edit", aggregate_to="admin"),
    # read-only access to what does not escalate (no Secrets)
    _role("view", aggregate_from="view", aggregate_to="edit"),
    _role("system:aggregate-to-admin", [
        _rule(["create"], [AUTHORIZATION], ["localsubjectaccessreviews"]),
        _rule(READ_WRITE, [RBAC], ["roles", "rolebindings"]),
    ], aggregate_to="admin"),
    _role("system:aggregate-to-edit", [
        _rule(READ, [CORE], ["pods/attach", "pods/proxy", "pods/exec", "pods/portforward", "secrets", "services/proxy"]),
        _rule(["impersonate"], [CORE], ["serviceaccounts"]),
        _rule(WRITE, [CORE], ["pods", "pods/attach", "pods/proxy", "pods/exec", "pods/portforward"]),
        _rule(["create"], [CORE], ["pods/eviction"]),
        _rule(WRITE, [CORE], ["replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts", "services",
                              "services/proxy", "persistentvolumeclaims", "configmaps", "secrets", "events"]),
        _rule(["create"], [CORE], ["serviceaccounts/token"]),
        _rule(WRITE, [APPS], ["statefulsets", "statefulsets/scale", "daemonsets", "deployments", "deployments/scale",
                              "deployments/rollback", "replicasets", "replicasets/scale"]),
        _rule(WRITE, [AUTOSCALING], ["horizontalpodautoscalers"]),
        _rule(WRITE, [BATCH], ["jobs", "cronjobs"]),
        _rule(WRITE, [EXTENSIONS], ["daemonsets", "deployments", "deployments/scale", "deployments/rollback",
                                    "ingresses", "replicasets", "replicasets/scale", "replicationcontrollers/scale",
                                    "networkpolicies"]),
        _rule(WRITE, [POLICY], ["poddisruptionbudgets"]),
        _rule(WRITE, [NETWORKING], ["networkpolicies", "ingresses"]),
        _rule(READ_WRITE, [COORDINATION], ["leases"]),
    ], aggregate_to="edit"),
    _role("system:aggregate-to-view", [
        _rule(READ, [CORE], ["pods", "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts",
                             "services", "services/status", "endpoints", "persistentvolumeclaims",
                             "persistentvolumeclaims/status", "configmaps"]),
        _rule(READ, [CORE], ["limitranges", "resourcequotas", "bindings", "events", "pods/status",
                             "resourcequotas/status", "namespaces/status", "replicationcontrollers/status", "pods/log"]),
        # reading namespaces at the namespace scope is reading this one: which namespaces one may use
        _rule(READ, [CORE], ["namespaces"]),
        _rule(READ, [DISCOVERY], ["endpointslices"]),
        _rule(READ, [APPS], ["controllerrevisions", "statefulsets", "statefulsets/status", "statefulsets/scale",
                             "daemonsets", "daemonsets/status", "deployments", "deployments/status",
                             "deployments/scale", "replicasets", "replicasets/status", "replicasets/scale"]),
        _rule(READ, [AUTOSCALING], ["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
        _rule(READ, [BATCH], ["jobs", "cronjobs", "cronjobs/status", "jobs/status"]),
        _rule(READ, [EXTENSIONS], ["daemonsets", "daemonsets/status", "deployments", "deployments/scale",
                                   "deployments/status", "ingresses", "ingresses/status", "replicasets",
                                   "replicasets/scale", "replicasets/status", "replicationcontrollers/scale",
                                   "networkpolicies"]),
        _rule(READ, [POLICY], ["poddisruptionbudgets", "poddisruptionbudgets/status"]),
        _rule(READ, [NETWORKING], ["networkpolicies", "ingresses", "ingresses/status"]),
    ], aggregate_to="view"),
)

CLUSTER_ROLE_BINDINGS: tuple[ClusterRoleBinding, ...] = (
    _binding("cluster-admin", groups=("system:masters",)),
    _binding("system:monitoring", groups=("system:monitoring",)),
    _binding("system:discovery", groups=("system:authenticated",)),
    _binding("system:basic-user", groups=("system:authenticated",)),
    _binding("system:public-info-viewer", groups=("system:authenticated", "system:unauthenticated")),
    _binding("system:service-account-issuer-discovery", groups=("system:serviceaccounts",)),
)
