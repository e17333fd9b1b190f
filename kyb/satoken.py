"""Service account tokens: JWTs the api issues for a pod's service account (Kubernetes'
TokenRequest, bound to the pod) and the apiserver accepts as
``system:serviceaccount:<namespace>:<name>``.

They carry Kubernetes' claims (``iss``, ``sub``, ``aud``, ``exp``, ``iat``, ``nbf``, ``jti``
and ``kubernetes.io`` with the namespace, pod, node and service account) and are signed
ES256 with the cluster's service account key, ``<data-dir>/apiserver/sa.key`` (P-256,
PKCS#8, 0600; made by :func:`ensure_key` when the apiserver or the api first starts on the
data directory). The header's ``kid`` is the SHA-256 of the public key, as Kubernetes derives
it. Pure apart from the key file.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import hashlib
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ISSUER = "https://kubernetes.default.svc.cluster.local"  # Kubernetes' default --service-account-issuer
API_AUDIENCES = (ISSUER,)  # what the apiserver accepts; a token asked with no audience gets these
ALGORITHM = "ES256"
USER_PREFIX = "system:serviceaccount:"


class TokenInvalid(Exception):
    """Not a token of this cluster, or not (or no longer) valid for the apiserver."""


@dataclass(frozen=True)
class Binding:
    """Whom a token is for: the service account, and the pod (and node) it is bound to."""

    namespace: str
    service_account: str
    service_account_uid: str = ""
    pod: str = ""
    pod_uid: str = ""
    node: str = ""


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    return load_key_pem(Path(path).read_bytes())


def ensure_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The key at ``path``, made (0600) when missing. Two processes making it at once (the api
    and the apiserver starting together on one data directory) end up with the same key: each
    writes its own aside and links it into place, and the link only succeeds where none is."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(new_key_pem())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    return load_key(path)


def load_key_pem(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the service account key is not an EC private key")
    return key


def new_key_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def key_id(public: ec.EllipticCurvePublicKey) -> str:
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")


def username(namespace: str, service_account: str) -> str:
    return f"{USER_PREFIX}{namespace}:{service_account}"


def issue(key: ec.EllipticCurvePrivateKey, binding: Binding, *, audiences: tuple[str, ...] | list[str],
          expiration_seconds: int, now: _dt.datetime, issuer: str = ISSUER) -> tuple[str, _dt.datetime]:
    """A signed token and when it expires."""
    iat = int(now.timestamp())
    exp = iat + expiration_seconds
    claims: dict[str, Any] = {
        "aud": list(audiences or API_AUDIENCES),
        "exp": exp,
        "iat": iat,
        "iss": issuer,
        "jti": str(uuid.uuid4()),
        "nbf": iat,
        "sub": username(binding.namespace, binding.service_account),
        "kubernetes.io": _private_claims(binding),
    }
    token = jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": key_id(key.public_key())})
    return token, _dt.datetime.fromtimestamp(exp, _dt.UTC)


def _private_claims(b: Binding) -> dict[str, Any]:
    out: dict[str, Any] = {"namespace": b.namespace,
                           "serviceaccount": {"name": b.service_account, "uid": b.service_account_uid}}
    if b.pod:
        out["pod"] = {"name": b.pod, "uid": b.pod_uid}
    if b.node:
        out["node"] = {"name": b.node}
    return out


def verify(public: ec.EllipticCurvePublicKey, token: str, *, now: _dt.datetime,
           audiences: tuple[str, ...] = API_AUDIENCES, issuer: str = ISSUER) -> Binding:
    """Whom a valid token is for; TokenInvalid when the signature, issuer, audience or times
    do not hold (``now`` inside [nbf, exp))."""
    try:
        claims = jwt.decode(token, public, algorithms=[ALGORITHM], audience=list(audiences), issuer=issuer,
                            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                                     "require": ["exp", "iat", "nbf", "iss", "sub", "aud"]})
    except jwt.PyJWTError as e:
        raise TokenInvalid(str(e)) from None
    t = now.timestamp()
    if not claims["nbf"] <= t < claims["exp"]:
        raise TokenInvalid("the token is expired or not yet valid")
    private = claims.get("kubernetes.io")
    sub = str(claims["sub"])
    if not isinstance(private, dict) or not sub.startswith(USER_PREFIX):
        raise TokenInvalid("not a service account token")
    namespace, _, name = sub[len(USER_PREFIX):].partition(":")
    if private.get("namespace") != namespace or (private.get("serviceaccount") or {}).get("name") != name:
        raise TokenInvalid("the token's claims disagree about its service account")
    pod = private.get("pod") or {}
    return Binding(namespace=namespace, service_account=name,
                   service_account_uid=str((private.get("serviceaccount") or {}).get("uid", "")),
                   pod=str(pod.get("name", "")), pod_uid=str(pod.get("uid", "")),
                   node=str((private.get("node") or {}).get("name", "")))
