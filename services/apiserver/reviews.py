"""authorization.k8s.io/v1 self-reviews (`kubectl auth can-i`). Every authenticated user is
cluster admin until RBAC arrives, so every review is allowed and the rules are everything.
Pure apart from the response."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.apiserver.respond import Failure, json_response

REASON = "every authenticated user is cluster admin (kybernetes has no RBAC yet)"


def answer(resource: str, body: Any) -> web.Response:
    if not isinstance(body, dict):
        raise Failure(400, "BadRequest", "the request body must be a JSON object")
    review = {"apiVersion": "authorization.k8s.io/v1", "metadata": {}, **{k: v for k, v in body.items()
                                                                          if k in ("kind", "spec", "metadata")}}
    review["metadata"] = {"creationTimestamp": None, **(body.get("metadata") or {})}
    if resource == "selfsubjectaccessreviews":
        spec = review.get("spec") or {}
        if not spec.get("resourceAttributes") and not spec.get("nonResourceAttributes"):
            raise Failure(422, "Invalid", "SelfSubjectAccessReview.authorization.k8s.io is invalid: "
                          "spec.resourceAttributes: Invalid value: exactly one of nonResourceAttributes or "
                          "resourceAttributes must be specified")
        review["kind"] = "SelfSubjectAccessReview"
        review["status"] = {"allowed": True, "reason": REASON}
    else:
        review["kind"] = "SelfSubjectRulesReview"
        review["status"] = {
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": False,
        }
    return json_response(review, 201)
