"""Who a request is and whether it may do what it asks: the apiserver's side of Kubernetes'
impersonation filter and RBAC authorizer (the rules are services/apiserver/rbac.py's).

Roles and bindings are read from the apiserver's watch caches of the four RBAC kinds, so a
request costs no bus round trip; a binding made a moment ago holds once the cache has it, as
Kubernetes' informers do.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
from aiohttp import web

from kyb import errors
from schemas.helpers import scoped_key
from schemas.rbac import ClusterRole, ClusterRoleBinding, Role, RoleBinding
from schemas.registry import by_kind
from services.apiserver import rbac, requestinfo
from services.apiserver.cache import KindCache, WatchCache
from services.apiserver.respond import Failure

USER = web.RequestKey("kyb.user", rbac.UserInfo)  # the request's (acting) user
RBAC_KINDS = ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
IMPERSONATE_EXTRA = "impersonate-extra-"


class CachedPolicy:
    """:class:`rbac.Policy` over the watch caches."""

    def __init__(self, caches: dict[str, KindCache]) -> None:
        self.caches = caches

    def cluster_role_bindings(self) -> Iterable[ClusterRoleBinding]:
        return [b for b in self.caches["ClusterRoleBinding"].informer.list() if isinstance(b, ClusterRoleBinding)]

    def role_bindings(self, namespace: str) -> Iterable[RoleBinding]:
        return [b for b in self.caches["RoleBinding"].informer.list(namespace) if isinstance(b, RoleBinding)]

    def cluster_role(self, name: str) -> ClusterRole | None:
        role = self.caches["ClusterRole"].informer.get(scoped_key(False, None, name))
        return role if isinstance(role, ClusterRole) else None

    def role(self, namespace: str, name: str) -> Role | None:
        role = self.caches["Role"].informer.get(scoped_key(True, namespace, name))
        return role if isinstance(role, Role) else None


ROLE_TYPES: dict[str, type[Role | ClusterRole | RoleBinding | ClusterRoleBinding]] = {
    "Role": Role, "ClusterRole": ClusterRole, "RoleBinding": RoleBinding, "ClusterRoleBinding": ClusterRoleBinding}
PLURALS = {"Role": "roles", "ClusterRole": "clusterroles", "RoleBinding": "rolebindings",
           "ClusterRoleBinding": "clusterrolebindings"}


def forbidden(attrs: rbac.Attributes, reason: str = "") -> Failure:
    """Kubernetes' 403 for ``attrs``: reason Forbidden, details {kind, group, name}."""
    return Failure(403, "Forbidden", rbac.forbidden_message(attrs, reason), kind=attrs.resource or None,
                   group=attrs.api_group or None, name=attrs.name or None)


class Authorization:
    def __init__(self, cache: WatchCache) -> None:
        self.cache = cache

    async def policy(self) -> CachedPolicy:
        return CachedPolicy({k: await self.cache.kind(by_kind(k)) for k in RBAC_KINDS})

    async def decide(self, attrs: rbac.Attributes) -> rbac.Decision:
        """The authorizer's decision; ``system:masters`` is allowed without reading a cache."""
        if rbac.MASTERS in attrs.user.groups:
            return rbac.Decision(True)
        return rbac.authorize(await self.policy(), attrs)

    async def admit(self, request: web.Request, user: rbac.UserInfo) -> rbac.UserInfo:
        """The user ``request`` acts as (its impersonation headers allowed), once RBAC allows
        what it asks; Failure (403, or 400 for malformed impersonation) otherwise."""
        if rbac.MASTERS in user.groups and not any(k[:12].lower() == "impersonate-" for k in request.headers):
            request[USER] = user  # allowed whatever it asks: no attributes to work out
            return user
        user = await self.impersonated(request, user)
        attrs = requestinfo.attributes(user, request.method, request.path, request.query)
        decision = await self.decide(attrs)
        if not decision.allowed:
            raise forbidden(attrs, decision.reason)
        request[USER] = user
        return user

    async def impersonated(self, request: web.Request, user: rbac.UserInfo) -> rbac.UserInfo:
        """The user of ``request``'s impersonation headers (``user`` when it has none), once
        ``user`` may impersonate each of its parts."""
        headers = request.headers
        extra: dict[str, list[str]] = {}
        for key, value in headers.items():
            if key.lower().startswith(IMPERSONATE_EXTRA):
                extra.setdefault(key[len(IMPERSONATE_EXTRA):].lower(), []).append(value)
        try:
            acting = rbac.impersonation(user, headers.get("Impersonate-User"), headers.getall("Impersonate-Group", []),
                                        headers.get("Impersonate-Uid"), extra)
        except rbac.ImpersonationError as e:
            raise Failure(400, "BadRequest", str(e)) from None
        if acting is None:
            return user
        impersonated, checks = acting
        for attrs in checks:
            decision = await self.decide(attrs)
            if not decision.allowed:
                raise forbidden(attrs, decision.reason)
        return impersonated

    async def check_grant(self, user: rbac.UserInfo, kind: str, doc: dict[str, Any]) -> None:
        """Kubernetes' escalation check of a Role, ClusterRole or binding ``user`` writes (``doc``,
        as it will be sent to the api): Failure 403 when it grants what ``user`` does not hold,
        unless ``user`` may ``escalate`` the role or ``bind`` the bound one, or is in
        system:masters. Other kinds, and objects the api will refuse as invalid, pass."""
        if kind not in ROLE_TYPES or rbac.MASTERS in user.groups:
            return
        try:
            obj = msgspec.convert(doc, ROLE_TYPES[kind], strict=False)
        except (msgspec.ValidationError, TypeError):
            return  # the api says what is wrong with it
        refusal = rbac.grant_refusal(await self.policy(), user, obj)
        if refusal is None:
            return
        if refusal.missing_role:
            raise errors.NotFound(refusal.missing_role)
        raise self._refused(kind, obj.metadata.name, refusal.message)

    @staticmethod
    def _refused(kind: str, name: str, why: str) -> Failure:
        plural = PLURALS[kind]
        return Failure(403, "Forbidden", f'{plural}.rbac.authorization.k8s.io "{name}" is forbidden: {why}',
                       kind=plural, group="rbac.authorization.k8s.io", name=name or None)
