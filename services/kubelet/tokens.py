"""Service account tokens for projected volumes, as Kubernetes' kubelet token manager keeps
them: one token per (pod, audience, lifetime), asked of whoever issues them (the api, on
``kyb.api.node.<node>.token``, like Kubernetes' TokenRequest), kept until 80% of its
lifetime has passed, then replaced. A refresh that fails keeps the old token while it is
still valid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from kyb import errors
from schemas.pod import Pod

REFRESH_AT = 0.8  # of a token's lifetime


class TokenNotIssued(Exception):
    """Nobody issues service account tokens here (no issuer, or the api has no signing key)."""


@dataclass(frozen=True)
class IssuedToken:
    token: str
    issued: datetime
    expires: datetime


class TokenIssuer(Protocol):
    async def token(self, pod: Pod, audience: str, expiration_seconds: int) -> IssuedToken:
        """A token for the pod's service account, bound to the pod; raises TokenNotIssued
        when tokens are not issued at all, a KybError when this one could not be."""
        ...


def needs_refresh(token: IssuedToken, now: datetime) -> bool:
    """Past 80% of its lifetime, as Kubernetes' token manager decides (or already expired)."""
    return now >= token.issued + (token.expires - token.issued) * REFRESH_AT


class Tokens:
    """The tokens of the pods on this node (see the module docstring)."""

    def __init__(self, issuer: TokenIssuer | None, clock: Callable[[], datetime]) -> None:
        self.issuer = issuer
        self.clock = clock
        self._held: dict[tuple[str, str, int], IssuedToken] = {}

    async def get(self, pod: Pod, audience: str, expiration_seconds: int) -> str:
        if self.issuer is None:
            raise TokenNotIssued("this kubelet has no token issuer")
        key = (pod.metadata.uid or "", audience, expiration_seconds)
        held = self._held.get(key)
        now = self.clock()
        if held is not None and not needs_refresh(held, now):
            return held.token
        try:
            fresh = await self.issuer.token(pod, audience, expiration_seconds)
        except errors.KybError:
            if held is not None and now < held.expires:
                return held.token  # try again at the next resync
            raise
        self._held[key] = fresh
        return fresh.token

    def forget(self, pod_uid: str) -> None:
        self._held = {k: v for k, v in self._held.items() if k[0] != pod_uid}
