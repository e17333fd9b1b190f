"""The access reviews, answered by the RBAC authorizer (services/apiserver/rbac.py):
authorization.k8s.io/v1 SelfSubjectAccessReview (``kubectl auth can-i``), SelfSubjectRulesReview
(``kubectl auth can-i --list``), SubjectAccessReview and LocalSubjectAccessReview (any user's,
for those allowed to create them), and authentication.k8s.io/v1 SelfSubjectReview (``kubectl
auth whoami``) and TokenReview (whom a bearer token authenticates, for those allowed to create
them). The self reviews are the requesting user's, or the one it impersonates.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from kyb import satoken
from services.apiserver import rbac
from services.apiserver.respond import Failure, json_response

AUTHORIZATION = "authorization.k8s.io/v1"
AUTHENTICATION = "authentication.k8s.io/v1"
KINDS = {"selfsubjectaccessreviews": "SelfSubjectAccessReview", "selfsubjectrulesreviews": "SelfSubjectRulesReview",
         "subjectaccessreviews": "SubjectAccessReview", "localsubjectaccessreviews": "LocalSubjectAccessReview",
         "selfsubjectreviews": "SelfSubjectReview"}


def _invalid(kind: str, field: str, message: str, name: str = "") -> Failure:
    return Failure(422, "Invalid", f'{kind}.authorization.k8s.io "{name}" is invalid: {field}: {message}',
                   kind=kind, group="authorization.k8s.io",
                   causes=[{"reason": "FieldValueInvalid", "field": field, "message": message}])


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _attributes(kind: str, spec: dict[str, Any], user: rbac.UserInfo) -> rbac.Attributes:
    """The attributes an access review's spec asks about, checked as Kubernetes checks them."""
    res, non = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if bool(res) == bool(non):
        raise _invalid(kind, "spec.resourceAttributes", "Invalid value: exactly one of nonResourceAttributes or "
                       "resourceAttributes must be specified")
    if isinstance(non, dict):
        return rbac.Attributes(user=user, verb=str(non.get("verb", "")), resource_request=False,
                               path=str(non.get("path", "")))
    if not isinstance(res, dict):
        raise Failure(400, "BadRequest", "spec.resourceAttributes must be an object")
    return rbac.Attributes(user=user, verb=str(res.get("verb", "")), resource_request=True,
                           api_group=str(res.get("group", "")), api_version=str(res.get("version", "")),
                           resource=str(res.get("resource", "")), subresource=str(res.get("subresource", "")),
                           namespace=str(res.get("namespace", "")), name=str(res.get("name", "")))


def _subject(kind: str, spec: dict[str, Any]) -> rbac.UserInfo:
    """The user a SubjectAccessReview names."""
    name = str(spec.get("user") or "")
    groups = _strings(spec.get("groups"))
    if not name and not groups:
        raise _invalid(kind, "spec.user", 'Invalid value: "": at least one of user or group must be specified')
    extra = spec.get("extra") if isinstance(spec.get("extra"), dict) else {}
    return rbac.UserInfo(name, groups, str(spec.get("uid") or ""), {str(k): _strings(v) for k, v in extra.items()})


def _user_info(user: rbac.UserInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"username": user.name, "groups": list(user.groups)}
    if user.uid:
        out["uid"] = user.uid
    if user.extra:
        out["extra"] = {k: list(v) for k, v in user.extra.items()}
    return out


def _rule(rule: Any) -> dict[str, Any]:
    out = {"verbs": rule.verbs}
    for key in ("apiGroups", "resources", "resourceNames", "nonResourceURLs"):
        if getattr(rule, key):
            out[key] = getattr(rule, key)
    return out


def token_review(body: dict[str, Any], user: rbac.UserInfo | None) -> web.Response:
    """A TokenReview with its status: ``user`` is whom the token authenticates (None: nobody).
    Only the apiserver's own audience is served: a review asking for others fails."""
    spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
    wanted = [str(a) for a in spec.get("audiences") or []]
    audiences = [a for a in wanted if a in satoken.API_AUDIENCES] if wanted else list(satoken.API_AUDIENCES)
    review: dict[str, Any] = {"kind": "TokenReview", "apiVersion": AUTHENTICATION,
                              "metadata": {"creationTimestamp": None, **(body.get("metadata") or {})}, "spec": spec}
    if user is None or not audiences:
        review["status"] = {"user": {}, "error": "invalid bearer token" if user is None else
                            "token audiences are invalid for the target audiences"}
    else:
        review["status"] = {"authenticated": True, "user": _user_info(user), "audiences": audiences}
    return json_response(review, 201)


def answer(resource: str, body: Any, user: rbac.UserInfo, policy: rbac.Policy, namespace: str | None = None
           ) -> web.Response:
    """The review ``resource`` (created in ``namespace``, a LocalSubjectAccessReview's) with its
    status filled in for ``user`` (the requester; a SubjectAccessReview names its own)."""
    if not isinstance(body, dict):
        raise Failure(400, "BadRequest", "the request body must be a JSON object")
    kind = KINDS[resource]
    meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
    review: dict[str, Any] = {"kind": kind, "apiVersion": AUTHENTICATION if resource == "selfsubjectreviews"
                              else AUTHORIZATION, "metadata": {"creationTimestamp": None, **meta}}
    if resource == "selfsubjectreviews":
        review["status"] = {"userInfo": _user_info(user)}
        return json_response(review, 201)
    review["spec"] = spec
    if resource == "selfsubjectrulesreviews":
        ns = str(spec.get("namespace") or "")
        if not ns:
            raise Failure(400, "BadRequest", "no namespace on request")
        rules, urls, error = rbac.rules_for(policy, user, ns)
        review["status"] = {"resourceRules": [_rule(r) for r in rules], "nonResourceRules": [_rule(r) for r in urls],
                            "incomplete": False, **({"evaluationError": error} if error else {})}
        return json_response(review, 201)
    if resource in ("subjectaccessreviews", "localsubjectaccessreviews"):
        user = _subject(kind, spec)
    attrs = _attributes(kind, spec, user)
    if resource == "localsubjectaccessreviews":
        if not attrs.resource_request:
            raise _invalid(kind, "spec.nonResourceAttributes", "Invalid value: disallowed on this kind of request")
        if attrs.namespace != namespace:
            raise _invalid(kind, "spec.resourceAttributes.namespace",
                           f'Invalid value: "{attrs.namespace}": must match metadata.namespace')
        review["metadata"]["namespace"] = namespace
    decision = rbac.authorize(policy, attrs)
    review["status"] = {"allowed": decision.allowed, **({"reason": decision.reason} if decision.reason else {})}
    return json_response(review, 201)
