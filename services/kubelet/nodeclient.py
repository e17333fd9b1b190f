"""The kubelet's side of the api's node-restricted verbs (``kyb.api.node.<node>.<verb>``).

With credentials, a kubelet may not write the pods bucket nor read the Secrets bucket: it
sends its pods' status and final deletes to the api, and fetches the Secrets its pods use
from it (services/api/noderestriction.py decides). :class:`NodeSecrets` stands in for the
Secret informer: a cache filled per pod before the pod is synced.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import msgspec

from kyb import bus, errors
from kyb.render import to_dict
from schemas.core import Secret
from schemas.helpers import parse_time
from schemas.meta import Object
from schemas.pod import Pod
from services.kubelet.tokens import IssuedToken, TokenNotIssued

PREFIX = "kyb.api.node"


class NodeApi:
    """Requests on behalf of one node."""

    def __init__(self, nc: Any, node: str, timeout: float = 10.0) -> None:
        self.nc = nc
        self.node = node
        self.timeout = timeout

    async def call(self, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            msg = await bus.request(self.nc, f"{PREFIX}.{self.node}.{verb}", msgspec.json.encode(body), self.timeout)
        except (errors.TimedOut, errors.NoResponders) as e:
            raise errors.Temporary(f"api node {verb}: {type(e).__name__}", delay=1.0) from e
        data = msgspec.json.decode(msg.data)
        if (msg.headers or {}).get("Kyb-Status", "200") not in ("200", "201"):
            raise errors.from_status(data)
        return data

    async def write_status(self, pod: Pod, status: Any) -> None:
        await self.call("status", {"namespace": pod.metadata.namespace or "default", "name": pod.metadata.name,
                                   "uid": pod.metadata.uid, "status": to_dict(status)})

    async def delete(self, pod: Pod, resource_version: str | None) -> None:
        await self.call("delete", {"namespace": pod.metadata.namespace or "default", "name": pod.metadata.name,
                                   "uid": pod.metadata.uid, "resourceVersion": resource_version})

    async def secret(self, namespace: str, name: str) -> Secret | None:
        try:
            return msgspec.convert(await self.call("secret", {"namespace": namespace, "name": name}), type=Secret)
        except (errors.NotFound, errors.Forbidden):
            return None


class NodeTokens:
    """Service account tokens for this node's pods, from the api (``token``: Kubernetes'
    TokenRequest, bound to the pod)."""

    def __init__(self, api: NodeApi) -> None:
        self.api = api

    async def token(self, pod: Pod, audience: str, expiration_seconds: int) -> IssuedToken:
        body = {"namespace": pod.metadata.namespace or "default", "name": pod.metadata.name, "uid": pod.metadata.uid,
                "audience": audience, "expirationSeconds": expiration_seconds}
        try:
            answer = await self.api.call("token", body)
        except (errors.NotFound, errors.Forbidden) as e:
            raise TokenNotIssued(str(e)) from e
        status = answer["status"]
        expires = parse_time(status["expirationTimestamp"])
        return IssuedToken(token=status["token"], issued=expires - timedelta(seconds=expiration_seconds),
                           expires=expires)


class NodeSecrets:
    """The Secret "informer" of a node-restricted kubelet: what its pods use, from the api."""

    def __init__(self, api: NodeApi) -> None:
        self.api = api
        self._cache: dict[str, Object] = {}
        self.synced = True

    def add_handler(self, fn: Callable[..., None]) -> None:
        return None  # refreshed per pod sync instead of watched

    async def start(self) -> None:
        return None

    async def wait_synced(self, timeout: float | None = None) -> None:
        return None

    async def stop(self) -> None:
        return None

    def get(self, key: str) -> Object | None:
        return self._cache.get(key)

    def get_by_name(self, namespace: str | None, name: str) -> Object | None:
        return self._cache.get(f"{namespace}.{name}")

    def list(self, namespace: str | None = None) -> list[Object]:
        return [o for o in self._cache.values() if namespace is None or o.metadata.namespace == namespace]

    async def refresh(self, pod: Pod, names: set[str]) -> None:
        ns = pod.metadata.namespace or "default"
        for name in names:
            with contextlib.suppress(errors.Temporary):
                found = await self.api.secret(ns, name)
                if found is None:
                    self._cache.pop(f"{ns}.{name}", None)
                else:
                    self._cache[f"{ns}.{name}"] = found
