"""authentication.k8s.io/v1 TokenRequest: what ``serviceaccounts/<name>/token`` (``kubectl
create token``) asks of a service account's token. The apiserver sends it to the api on
``kyb.api.token``; the api signs the token (kyb.satoken).
"""

from __future__ import annotations

from schemas.meta import Base


class BoundObjectReference(Base, kw_only=True, frozen=True):
    """The object a token lives and dies with (a Pod here)."""

    kind: str = ""
    apiVersion: str = ""
    name: str = ""
    uid: str = ""


class TokenRequestSpec(Base, kw_only=True, frozen=True):
    audiences: list[str] = []  # none: the apiserver's own
    expirationSeconds: int | None = None  # None: an hour, as Kubernetes defaults it
    boundObjectRef: BoundObjectReference | None = None


class TokenQuery(Base, kw_only=True, frozen=True):
    """The body of ``kyb.api.token``: the service account, and the TokenRequest's spec."""

    namespace: str
    name: str
    spec: TokenRequestSpec = TokenRequestSpec()
