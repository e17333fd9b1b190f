"""RBAC on a real `kyb up`, driven by the real kubectl (v1.32) and the official Kubernetes
Python client: service accounts refused what no role grants them (Kubernetes' own 403), the
default roles and their aggregation, Role and ClusterRole bindings, resourceNames,
impersonation (``--as``), ``kubectl auth can-i`` (``--list``), ``whoami`` and ``create token``."""

from __future__ import annotations

import json

import pytest

from tests.cluster import wait_until
from tests.test_apiserver_kubectl import KUBECTL, _kubectl, apiserver_up

pytestmark = pytest.mark.skipif(not KUBECTL, reason="kubectl is not installed")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with apiserver_up(tmp_path_factory.mktemp("rbac") / "state") as up:
        yield up


def _sa(name: str, namespace: str = "default") -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def _account(cluster, name: str, namespace: str = "default") -> str:
    """A new ServiceAccount's user name."""
    _kubectl(cluster, "create", "serviceaccount", name, "-n", namespace)
    return _sa(name, namespace)


def _can(cluster, *args: str) -> str:
    return _kubectl(cluster, "auth", "can-i", *args, check=False).stdout.strip()


def _until_can(cluster, *args: str, answer: str = "yes") -> None:
    """Until the apiserver's RBAC caches have a binding just made."""
    wait_until(lambda: _can(cluster, *args) == answer, timeout=20, what=f"can-i {' '.join(args)} = {answer}")


def _client(cluster, token: str):
    import kubernetes

    config = kubernetes.client.Configuration()
    config.host = f"https://127.0.0.1:{cluster.apiserver_port}"
    config.ssl_ca_cert = str(cluster.data / "apiserver" / "ca.crt")
    config.api_key = {"authorization": f"Bearer {token}"}
    return kubernetes.client.ApiClient(config)


def test_default_roles_exist_labelled_and_view_is_aggregated(cluster):
    names = ["cluster-admin", "admin", "edit", "view", "system:discovery", "system:basic-user",
             "system:public-info-viewer", "system:aggregate-to-view"]
    roles = json.loads(_kubectl(cluster, "get", "clusterroles", *names, "-o", "json").stdout)["items"]
    assert [r["metadata"]["name"] for r in roles] == names
    for r in roles:
        assert r["metadata"]["labels"]["kubernetes.io/bootstrapping"] == "rbac-defaults"
        assert r["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] == "true"
    by_name = {r["metadata"]["name"]: r for r in roles}
    assert by_name["cluster-admin"]["rules"] == [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                                                 {"verbs": ["*"], "nonResourceURLs": ["*"]}]
    assert by_name["view"]["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert by_name["view"]["aggregationRule"] == {"clusterRoleSelectors": [
        {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]}

    def aggregated() -> bool:
        roles = json.loads(_kubectl(cluster, "get", "clusterroles", "view", "edit", "admin", "-o", "json").stdout)
        rules = {r["metadata"]["name"]: r.get("rules") or [] for r in roles["items"]}
        lists_pods = [r for r in rules["view"] if "pods" in r.get("resources", []) and "list" in r["verbs"]]
        # admin holds edit's rules, edit view's: aggregation chains as in Kubernetes
        return bool(lists_pods) and all(r in rules["edit"] for r in rules["view"]) and all(
            r in rules["admin"] for r in rules["edit"])

    wait_until(aggregated, timeout=30, what="view, edit and admin aggregated")
    bindings = json.loads(_kubectl(cluster, "get", "clusterrolebindings", "cluster-admin", "system:discovery",
                                   "system:basic-user", "system:public-info-viewer", "-o", "json").stdout)["items"]
    subjects = {b["metadata"]["name"]: [s["name"] for s in b["subjects"]] for b in bindings}
    assert subjects == {"cluster-admin": ["system:masters"], "system:discovery": ["system:authenticated"],
                        "system:basic-user": ["system:authenticated"],
                        "system:public-info-viewer": ["system:authenticated", "system:unauthenticated"]}
    assert all(b["metadata"]["labels"]["kubernetes.io/bootstrapping"] == "rbac-defaults" for b in bindings)


def test_unbound_service_account_is_refused_with_kubernetes_message(cluster):
    user = _account(cluster, "nobody")
    done = _kubectl(cluster, "get", "pods", f"--as={user}", check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == (f'Error from server (Forbidden): pods is forbidden: User "{user}" cannot list '
                                   'resource "pods" in API group "" in the namespace "default"')
    named = _kubectl(cluster, "get", "deployment", "web", "-n", "kube-system", f"--as={user}", check=False)
    assert named.stderr.strip() == (f'Error from server (Forbidden): deployments.apps "web" is forbidden: User '
                                    f'"{user}" cannot get resource "deployments" in API group "apps" in the namespace '
                                    '"kube-system"')
    nodes = _kubectl(cluster, "get", "nodes", f"--as={user}", check=False)
    assert nodes.stderr.strip() == (f'Error from server (Forbidden): nodes is forbidden: User "{user}" cannot list '
                                    'resource "nodes" in API group "" at the cluster scope')
    # discovery and the version are every authenticated user's
    assert _kubectl(cluster, "get", "--raw", "/version", f"--as={user}").returncode == 0
    assert _kubectl(cluster, "api-resources", f"--as={user}").returncode == 0


def test_forbidden_is_a_status_the_python_client_reads(cluster):
    import kubernetes

    _account(cluster, "pyclient")
    token = _kubectl(cluster, "create", "token", "pyclient").stdout.strip()
    with _client(cluster, token) as api:
        with pytest.raises(kubernetes.client.ApiException) as e:
            kubernetes.client.CoreV1Api(api).list_namespaced_pod("default")
    assert e.value.status == 403
    body = json.loads(e.value.body)
    assert body["kind"] == "Status" and body["reason"] == "Forbidden" and body["code"] == 403
    assert body["details"] == {"kind": "pods"}
    assert body["message"] == (f'pods is forbidden: User "{_sa("pyclient")}" cannot list resource "pods" in API '
                               'group "" in the namespace "default"')


def test_view_in_one_namespace_only_and_edit_creates_deployments(cluster):
    _kubectl(cluster, "create", "namespace", "team")
    viewer = _account(cluster, "viewer", "team")
    _kubectl(cluster, "create", "rolebinding", "viewer-view", "--clusterrole=view", "--serviceaccount=team:viewer",
             "-n", "team")
    _until_can(cluster, "list", "pods", "-n", "team", f"--as={viewer}")
    assert _kubectl(cluster, "get", "pods", "-n", "team", f"--as={viewer}").returncode == 0
    assert _can(cluster, "list", "pods", "-n", "default", f"--as={viewer}") == "no"
    assert _can(cluster, "create", "pods", "-n", "team", f"--as={viewer}") == "no"
    assert _can(cluster, "get", "secrets", "-n", "team", f"--as={viewer}") == "no"  # view reads no Secrets
    refused = _kubectl(cluster, "get", "pods", "-n", "default", f"--as={viewer}", check=False)
    assert "cannot list resource \"pods\" in API group \"\" in the namespace \"default\"" in refused.stderr

    editor = _account(cluster, "editor", "team")
    _kubectl(cluster, "create", "rolebinding", "editor-edit", "--clusterrole=edit", "--serviceaccount=team:editor",
             "-n", "team")
    _until_can(cluster, "create", "deployments.apps", "-n", "team", f"--as={editor}")
    _kubectl(cluster, "create", "deployment", "made-by-editor", "--image=busybox", "-n", "team", f"--as={editor}")
    got = json.loads(_kubectl(cluster, "get", "deployment", "made-by-editor", "-n", "team", "-o", "json",
                              f"--as={editor}").stdout)
    assert got["metadata"]["name"] == "made-by-editor"
    assert _can(cluster, "create", "rolebindings", "-n", "team", f"--as={editor}") == "no"  # admin's, not edit's
    assert _can(cluster, "create", "deployments.apps", "-n", "default", f"--as={editor}") == "no"


def test_resource_names_and_subresources(cluster):
    reader = _account(cluster, "one-map")
    _kubectl(cluster, "create", "configmap", "allowed", "--from-literal=k=v")
    _kubectl(cluster, "create", "configmap", "hidden", "--from-literal=k=v")
    _kubectl(cluster, "create", "role", "one-map", "--verb=get", "--resource=configmaps", "--resource-name=allowed")
    _kubectl(cluster, "create", "role", "logs", "--verb=get", "--resource=pods/log")
    _kubectl(cluster, "create", "rolebinding", "one-map", "--role=one-map", "--serviceaccount=default:one-map")
    _kubectl(cluster, "create", "rolebinding", "logs", "--role=logs", "--serviceaccount=default:one-map")
    _until_can(cluster, "get", "configmap/allowed", f"--as={reader}")
    assert _kubectl(cluster, "get", "configmap", "allowed", f"--as={reader}").returncode == 0
    hidden = _kubectl(cluster, "get", "configmap", "hidden", f"--as={reader}", check=False)
    assert hidden.stderr.strip() == (f'Error from server (Forbidden): configmaps "hidden" is forbidden: User '
                                     f'"{reader}" cannot get resource "configmaps" in API group "" in the namespace '
                                     '"default"')
    assert _can(cluster, "list", "configmaps", f"--as={reader}") == "no"  # a name is no list
    _until_can(cluster, "get", "pods", "--subresource=log", f"--as={reader}")
    assert _can(cluster, "get", "pods", f"--as={reader}") == "no"


def test_cluster_role_binding_holds_in_every_namespace(cluster):
    watcher = _account(cluster, "watcher")
    _kubectl(cluster, "create", "clusterrolebinding", "watcher-view", "--clusterrole=view",
             "--serviceaccount=default:watcher")
    _until_can(cluster, "list", "pods", "--all-namespaces", f"--as={watcher}")
    assert _kubectl(cluster, "get", "pods", "-A", f"--as={watcher}").returncode == 0
    assert _can(cluster, "list", "deployments.apps", "-n", "kube-system", f"--as={watcher}") == "yes"
    assert _can(cluster, "list", "nodes", f"--as={watcher}") == "no"  # view holds namespaced kinds only
    # a binding whose role is missing says so in the reason
    _kubectl(cluster, "create", "clusterrolebinding", "dangling", "--clusterrole=no-such-role",
             "--serviceaccount=default:watcher")

    def says_missing() -> bool:
        done = _kubectl(cluster, "get", "nodes", f"--as={watcher}", check=False)
        return 'RBAC: clusterrole.rbac.authorization.k8s.io "no-such-role" not found' in done.stderr

    wait_until(says_missing, timeout=20, what="the missing role in the refusal")


def test_can_i_for_the_admin_and_as_a_service_account(cluster):
    assert _can(cluster, "create", "pods") == "yes"
    assert _can(cluster, "delete", "nodes", "--all-namespaces") == "yes"
    assert _can(cluster, "impersonate", "users") == "yes"
    nobody = _account(cluster, "can-i-nobody")
    assert _can(cluster, "list", "pods", f"--as={nobody}") == "no"
    assert _can(cluster, "create", "selfsubjectaccessreviews.authorization.k8s.io", f"--as={nobody}") == "yes"
    assert _can(cluster, "get", "/version", f"--as={nobody}") == "yes"
    assert _can(cluster, "get", "/metrics", f"--as={nobody}") == "no"
    # groups given with --as-group are the user's groups (plus system:authenticated)
    assert _can(cluster, "list", "pods", "--as=someone", "--as-group=system:masters") == "yes"

    listed = _kubectl(cluster, "auth", "can-i", "--list", f"--as={nobody}").stdout
    lines = [line.split() for line in listed.splitlines()]
    assert lines[0] == ["Resources", "Non-Resource", "URLs", "Resource", "Names", "Verbs"]
    assert ["selfsubjectaccessreviews.authorization.k8s.io", "[]", "[]", "[create]"] in lines
    assert ["[/version]", "[]", "[get]"] in lines
    assert not any(line[0] == "pods" for line in lines)
    admin = _kubectl(cluster, "auth", "can-i", "--list").stdout
    assert any(line.split()[:1] == ["*.*"] for line in admin.splitlines())


def test_impersonation_needs_the_impersonate_verb(cluster):
    user = _account(cluster, "no-impersonating")
    token = _kubectl(cluster, "create", "token", "no-impersonating").stdout.strip()
    done = _kubectl(cluster, "get", "pods", f"--token={token}", "--as=someone-else", check=False)
    assert done.stderr.strip() == (f'Error from server (Forbidden): users "someone-else" is forbidden: User "{user}" '
                                   'cannot impersonate resource "users" in API group "" at the cluster scope')


def test_create_token_then_whoami_and_requests_with_it(cluster):
    user = _account(cluster, "tokened")
    token = _kubectl(cluster, "create", "token", "tokened", "--duration=15m").stdout.strip()
    assert token.count(".") == 2
    who = _kubectl(cluster, "auth", "whoami", f"--token={token}", "-o", "json")
    info = json.loads(who.stdout)["status"]["userInfo"]
    assert info["username"] == user
    assert info["groups"] == ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"]
    refused = _kubectl(cluster, "get", "pods", f"--token={token}", check=False)
    assert f'User "{user}" cannot list resource "pods"' in refused.stderr
    _kubectl(cluster, "create", "rolebinding", "tokened-view", "--clusterrole=view", "--serviceaccount=default:tokened")
    wait_until(lambda: _kubectl(cluster, "get", "pods", f"--token={token}", check=False).returncode == 0, timeout=20,
               what="the token's user listing pods once bound")
    assert _kubectl(cluster, "auth", "can-i", "list", "pods", f"--token={token}").stdout.strip() == "yes"
    short = _kubectl(cluster, "create", "token", "tokened", "--duration=5m", check=False)
    assert "may not specify a duration less than 10 minutes" in short.stderr
    missing = _kubectl(cluster, "create", "token", "no-such-account", check=False)
    assert 'serviceaccounts "no-such-account" not found' in missing.stderr
    # the admin's whoami
    admin = json.loads(_kubectl(cluster, "auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]
    assert admin["username"] == "kubernetes-admin" and "system:masters" in admin["groups"]


def test_token_of_a_deleted_account_is_refused(cluster):
    _account(cluster, "short-lived")
    token = _kubectl(cluster, "create", "token", "short-lived").stdout.strip()
    assert _kubectl(cluster, "auth", "whoami", f"--token={token}").returncode == 0
    _kubectl(cluster, "delete", "serviceaccount", "short-lived")
    _kubectl(cluster, "create", "serviceaccount", "short-lived")  # same name, another uid
    wait_until(lambda: "Unauthorized" in _kubectl(cluster, "auth", "whoami", f"--token={token}", check=False).stderr,
               timeout=30, what="the old account's token refused")


def test_subject_access_review_through_the_python_client(cluster):
    import kubernetes

    token = (cluster.data / "apiserver" / "token").read_text().strip()
    with _client(cluster, token) as api:
        authz = kubernetes.client.AuthorizationV1Api(api)
        review = kubernetes.client.V1SubjectAccessReview(spec=kubernetes.client.V1SubjectAccessReviewSpec(
            user=_sa("nobody"), groups=["system:serviceaccounts", "system:authenticated"],
            resource_attributes=kubernetes.client.V1ResourceAttributes(verb="list", resource="pods",
                                                                       namespace="default")))
        answered = authz.create_subject_access_review(review)
        assert answered.status.allowed is False
        review.spec.groups = ["system:masters"]
        assert authz.create_subject_access_review(review).status.allowed is True


def test_a_namespace_admin_grants_only_what_it_holds(cluster):
    _kubectl(cluster, "create", "namespace", "delegated")
    boss = _account(cluster, "boss", "delegated")
    _kubectl(cluster, "create", "rolebinding", "boss-admin", "--clusterrole=admin", "--serviceaccount=delegated:boss",
             "-n", "delegated")
    _until_can(cluster, "create", "rolebindings.rbac.authorization.k8s.io", "-n", "delegated", f"--as={boss}")
    # view is within admin: it may grant it, and a Role of rights it holds
    _kubectl(cluster, "create", "rolebinding", "helper-view", "--clusterrole=view",
             "--serviceaccount=delegated:helper", "-n", "delegated", f"--as={boss}")
    _kubectl(cluster, "create", "role", "reads-secrets", "--verb=get", "--resource=secrets", "-n", "delegated",
             f"--as={boss}")
    # cluster-admin is not
    done = _kubectl(cluster, "create", "rolebinding", "helper-root", "--clusterrole=cluster-admin",
                    "--serviceaccount=delegated:helper", "-n", "delegated", f"--as={boss}", check=False)
    groups = '["system:serviceaccounts" "system:serviceaccounts:delegated" "system:authenticated"]'
    assert done.returncode == 1
    assert (f'rolebindings.rbac.authorization.k8s.io "helper-root" is forbidden: user "{boss}" (groups={groups}) is '
            "attempting to grant RBAC permissions not currently held:\n"
            '{APIGroups:["*"], Resources:["*"], Verbs:["*"]}\n{NonResourceURLs:["*"], Verbs:["*"]}') in done.stderr
    role = _kubectl(cluster, "create", "role", "nodes-too", "--verb=delete", "--resource=resourcequotas", "-n",
                    "delegated", f"--as={boss}", check=False)
    assert role.returncode == 1 and ('roles.rbac.authorization.k8s.io "nodes-too" is forbidden' in role.stderr
                                     and '{APIGroups:[""], Resources:["resourcequotas"], Verbs:["delete"]}'
                                     in role.stderr), role.stderr
    # the admin may grant anything
    _kubectl(cluster, "create", "rolebinding", "helper-root", "--clusterrole=cluster-admin",
             "--serviceaccount=delegated:helper", "-n", "delegated")


def test_a_token_bound_to_a_pod_lives_with_it_and_local_reviews_answer(cluster):
    import kubernetes

    _account(cluster, "bound")
    _kubectl(cluster, "run", "holder", "--image=busybox", "--restart=Never", "--overrides",
             json.dumps({"spec": {"serviceAccountName": "bound"}}), "--", "sleep", "3600")
    token = _kubectl(cluster, "create", "token", "bound", "--bound-object-kind=Pod",
                     "--bound-object-name=holder").stdout.strip()
    who = json.loads(_kubectl(cluster, "auth", "whoami", f"--token={token}", "-o", "json").stdout)["status"]
    assert who["userInfo"]["extra"]["authentication.kubernetes.io/pod-name"] == ["holder"]
    wrong = _kubectl(cluster, "create", "token", "bound", "--bound-object-kind=Secret", "--bound-object-name=s",
                     check=False)
    assert wrong.returncode == 1 and 'spec.boundObjectRef.kind: Unsupported value: "Secret"' in wrong.stderr
    _kubectl(cluster, "delete", "pod", "holder", "--grace-period=0", "--force", "--wait=false")
    wait_until(lambda: "Unauthorized" in _kubectl(cluster, "auth", "whoami", f"--token={token}", check=False).stderr,
               timeout=30, what="the pod's token refused once the pod is gone")

    _kubectl(cluster, "create", "rolebinding", "bound-view", "--clusterrole=view", "--serviceaccount=default:bound")
    admin = (cluster.data / "apiserver" / "token").read_text().strip()
    with _client(cluster, admin) as api:
        authz = kubernetes.client.AuthorizationV1Api(api)
        review = kubernetes.client.V1LocalSubjectAccessReview(
            metadata=kubernetes.client.V1ObjectMeta(namespace="default"),
            spec=kubernetes.client.V1SubjectAccessReviewSpec(
                user=_sa("bound"), groups=["system:serviceaccounts", "system:authenticated"],
                resource_attributes=kubernetes.client.V1ResourceAttributes(verb="get", resource="pods",
                                                                           namespace="default")))
        wait_until(lambda: authz.create_namespaced_local_subject_access_review("default", review).status.allowed,
                   timeout=20, what="the bound account allowed to get pods")
        review.spec.resource_attributes.verb = "delete"
        answered = authz.create_namespaced_local_subject_access_review("default", review)
        assert answered.status.allowed is False


def test_token_review_for_those_bound_to_auth_delegator(cluster):
    import kubernetes

    user = _account(cluster, "reviewed")
    token = _kubectl(cluster, "create", "token", "reviewed").stdout.strip()
    _account(cluster, "delegate")
    delegate = _kubectl(cluster, "create", "token", "delegate").stdout.strip()

    def review(api, of: str):
        return kubernetes.client.AuthenticationV1Api(api).create_token_review(
            kubernetes.client.V1TokenReview(spec=kubernetes.client.V1TokenReviewSpec(token=of)))

    with _client(cluster, delegate) as api:
        with pytest.raises(kubernetes.client.ApiException) as e:
            review(api, token)
        assert e.value.status == 403 and json.loads(e.value.body)["details"] == {
            "kind": "tokenreviews", "group": "authentication.k8s.io"}
    _kubectl(cluster, "create", "clusterrolebinding", "delegate-auth", "--clusterrole=system:auth-delegator",
             "--serviceaccount=default:delegate")
    with _client(cluster, delegate) as api:
        def reviewed():
            try:
                return review(api, token)
            except kubernetes.client.ApiException:
                return None

        answered = wait_until(reviewed, timeout=20, what="the delegate allowed to review tokens")
        assert answered.status.authenticated is True and answered.status.user.username == user
        assert "system:serviceaccounts:default" in answered.status.user.groups
        bad = review(api, token[:-4] + "abcd")
        assert not bad.status.authenticated and bad.status.error == "invalid bearer token"


def test_exec_and_logs_as_a_service_account(cluster):
    _kubectl(cluster, "run", "shell", "--image=busybox", "--restart=Never", "--", "sh", "-c",
             "echo started; exec sleep 3600")
    wait_until(lambda: _kubectl(cluster, "get", "pod", "shell", "-o", "jsonpath={.status.phase}",
                                check=False).stdout == "Running", timeout=60, what="the pod running")
    reader = _account(cluster, "log-reader")
    _kubectl(cluster, "create", "rolebinding", "log-reader", "--clusterrole=view", "--serviceaccount=default:log-reader")
    _until_can(cluster, "get", "pods", "--subresource=log", f"--as={reader}")
    wait_until(lambda: "started" in _kubectl(cluster, "logs", "shell", f"--as={reader}", check=False).stdout,
               timeout=30, what="the log read as the viewer")
    refused = _kubectl(cluster, "exec", "shell", f"--as={reader}", "--", "echo", "hi", check=False)
    assert refused.returncode != 0
    assert f'pods "shell" is forbidden: User "{reader}" cannot' in refused.stderr, refused.stderr
    assert 'resource "pods/exec" in API group "" in the namespace "default"' in refused.stderr

    operator = _account(cluster, "operator")
    _kubectl(cluster, "create", "rolebinding", "operator", "--clusterrole=edit", "--serviceaccount=default:operator")
    _until_can(cluster, "get", "pods", "--subresource=exec", f"--as={operator}")
    assert _kubectl(cluster, "exec", "shell", f"--as={operator}", "--", "echo", "hi").stdout == "hi\n"
    _kubectl(cluster, "delete", "pod", "shell", "--grace-period=0", "--force", "--wait=false")
