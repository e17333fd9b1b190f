"""The client side of the api request protocol: what `kyb` (and any Python caller) uses to
apply, read and delete objects over NATS, with errors rebuilt into the kyb.errors tree.

Each verb is one request-reply on ``kyb.api.<verb>``. The reply carries ``Kyb-Status``
(HTTP-like code) and, for apply, ``Kyb-Result`` (created | configured | unchanged);
failures carry a Status body that ``kyb.errors.from_status`` turns back into a typed error.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Literal

import msgspec
import nats
import nats.errors
from nats.aio.client import Client as NatsClient

from kyb import telemetry
from kyb.errors import KybError, Temporary, TooLarge, Unauthenticated, Unreachable, from_status

MAX_PAYLOAD = 1024 * 1024  # bytes; the api service refuses larger bodies with 413
DEFAULT_TIMEOUT = 5.0

ApplyResult = Literal["created", "configured", "unchanged"]
Propagation = Literal["Background", "Foreground", "Orphan"]


async def connect(url: str, *, timeout: float = 2.0, name: str = "kyb", **options: Any) -> NatsClient:
    """A NATS connection, or Unreachable with a one-line reason when nothing answers at ``url``.

    ``url`` may list the servers of a cluster, comma-separated. Every server failing once (or
    ``timeout``) ends the first attempt (a dead NATS is one clear error, not a retry storm); once
    connected, the client reconnects for as long as it lives, moving to another server of
    the list when its own goes away. The identity is the process's (--creds/--user, the
    environment, `kyb up`'s admin) unless ``options`` name a user or credentials.
    """
    servers = [u.strip() for u in url.split(",") if u.strip()]
    first_error: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()
    failures = 0

    async def on_error(e: Exception) -> None:
        # Every server failing once ends the attempt; errors after connecting are quiet.
        nonlocal failures
        failures += 1
        if failures >= len(servers) and not first_error.done():
            first_error.set_result(e)

    params: dict[str, Any] = dict(
        servers=servers,
        name=name,
        connect_timeout=timeout,
        reconnect_time_wait=0.25,
        error_cb=on_error,
    )
    if "user" not in options:
        from kyb import auth

        params.update(auth.client_options())
    params.update(options)
    nc = NatsClient()
    attempt = asyncio.ensure_future(nc.connect(**params))
    done, _ = await asyncio.wait({attempt, first_error}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if attempt in done and attempt.exception() is None:
        # Connected: from now on, reconnect for the life of the connection.
        nc.options["allow_reconnect"] = True
        nc.options["max_reconnect_attempts"] = -1
        return nc
    attempt.cancel()
    with contextlib.suppress(BaseException):  # the attempt was abandoned; its error is reported below
        await attempt
    with contextlib.suppress(Exception):
        await nc.close()
    if first_error.done():
        cause: BaseException = first_error.result()
    elif attempt in done and attempt.exception() is not None:
        cause = attempt.exception()  # type: ignore[assignment]
    else:
        cause = TimeoutError()
    if _refused_credentials(cause):
        from kyb import auth

        identity = auth.default() if "user" not in options else None
        raise Unauthenticated(auth.refusal_message(url, identity, options.get("user"))) from cause
    raise Unreachable(f"cannot reach NATS at {url}: {_reason(cause)}") from cause


def _refused_credentials(e: BaseException) -> bool:
    """NATS answered and refused the credentials (``-ERR 'Authorization Violation'``)."""
    if isinstance(e, nats.errors.AuthorizationError):
        return True
    text = str(e).lower()
    return "authorization violation" in text or "authentication" in text and "fail" in text


def _reason(e: BaseException) -> str:
    chain: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for err in chain:
        if isinstance(err, ConnectionRefusedError):
            return "connection refused"
        if isinstance(err, TimeoutError | nats.errors.TimeoutError):
            return "connection timed out"
        if isinstance(err, OSError) and err.strerror:
            return err.strerror.lower()
    text = str(e).strip().strip(":").strip()
    if isinstance(e, nats.errors.NoServersError) or not text:
        return "connection refused"
    return text


def _request_span(subject: str) -> contextlib.AbstractContextManager[Any]:
    """A client span around one request, so the api's work joins the caller's trace."""
    return telemetry.tracer("kyb.client").start_as_current_span(subject, kind=telemetry.SpanKind.CLIENT)


class ApiClient:
    """Typed access to the api service. Objects travel as their JSON form (dicts).

    Each request is a client span of the caller's trace, or the root of a new one; with
    ``start_traces=False`` a request outside any trace goes untraced (the apiserver's:
    a Kubernetes client that traces sends its ``traceparent``, and only those are followed)."""

    def __init__(self, nc: NatsClient, *, timeout: float = DEFAULT_TIMEOUT, start_traces: bool = True) -> None:
        self.nc = nc
        self.timeout = timeout
        self.start_traces = start_traces

    async def _request(self, verb: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[Any, dict[str, str]]:
        subject = f"kyb.api.{verb}"
        if len(body) > MAX_PAYLOAD:
            raise TooLarge(
                f"request of {len(body)} bytes exceeds the {MAX_PAYLOAD} byte limit of {subject}"
            )
        traced = self.start_traces or telemetry.in_trace()
        with _request_span(subject) if traced else contextlib.nullcontext():
            hdrs = telemetry.inject(dict(headers or {})) if traced else headers
            try:
                msg = await self.nc.request(subject, body, timeout=self.timeout, headers=hdrs or None)
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as e:
                raise Temporary(f"no api service answered on {subject} within {self.timeout:g}s") from e
            except nats.errors.ConnectionClosedError as e:
                raise Temporary(f"NATS connection closed while waiting for {subject}") from e
        reply_headers = dict(msg.headers or {})
        try:
            payload = msgspec.json.decode(msg.data) if msg.data else None
        except ValueError as e:
            raise KybError(f"undecodable reply on {subject}: {msg.data[:200]!r}") from e
        status = reply_headers.get("Kyb-Status", "")
        failed = (status and not status.startswith("2")) or (
            isinstance(payload, dict) and payload.get("kind") == "Status" and payload.get("status") == "Failure"
        )
        if failed:
            if isinstance(payload, dict):
                raise from_status(payload)
            raise KybError(f"{subject} failed with status {status}")
        return payload, reply_headers

    @staticmethod
    def _manifest_body(manifest: bytes | str | dict[str, Any]) -> bytes:
        if isinstance(manifest, dict):
            return msgspec.json.encode(manifest)
        if isinstance(manifest, str):
            return manifest.encode()
        return manifest

    @staticmethod
    def _ns_headers(namespace: str | None) -> dict[str, str]:
        return {"Kyb-Namespace": namespace} if namespace else {}

    async def apply(
        self, manifest: bytes | str | dict[str, Any], namespace: str | None = None
    ) -> tuple[dict[str, Any], ApplyResult]:
        obj, headers = await self._request("apply", self._manifest_body(manifest), self._ns_headers(namespace))
        result = headers.get("Kyb-Result", "configured")
        return obj, result  # type: ignore[return-value]

    async def create(self, manifest: bytes | str | dict[str, Any], namespace: str | None = None, *,
                     dry_run: bool = False) -> dict[str, Any]:
        """``dry_run``: admitted and validated, not stored (header ``Kyb-Dry-Run: All``)."""
        headers = self._ns_headers(namespace) | ({"Kyb-Dry-Run": "All"} if dry_run else {})
        obj, _ = await self._request("create", self._manifest_body(manifest), headers)
        return obj

    async def replace(self, manifest: bytes | str | dict[str, Any], namespace: str | None = None, *,
                      dry_run: bool = False) -> dict[str, Any]:
        headers = self._ns_headers(namespace) | ({"Kyb-Dry-Run": "All"} if dry_run else {})
        obj, _ = await self._request("replace", self._manifest_body(manifest), headers)
        return obj

    async def replace_status(self, manifest: bytes | str | dict[str, Any], namespace: str | None = None, *,
                             dry_run: bool = False) -> dict[str, Any]:
        """Write the object's status (the status subresource); the rest stays as stored."""
        headers = self._ns_headers(namespace) | ({"Kyb-Dry-Run": "All"} if dry_run else {})
        obj, _ = await self._request("status", self._manifest_body(manifest), headers)
        return obj

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        body = msgspec.json.encode({"kind": kind, "namespace": namespace, "name": name})
        obj, _ = await self._request("get", body)
        return obj

    async def list(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        *,
        page: int | None = None,  # items asked for per request (default: as many as fit in a message)
    ) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"kind": kind, "namespace": namespace, "labelSelector": label_selector,
                                 "fieldSelector": field_selector}
        if page:
            query["limit"] = page
        items: list[dict[str, Any]] = []
        while True:  # a list larger than a NATS message comes in pages
            reply, _ = await self._request("list", msgspec.json.encode(query))
            items += (reply or {}).get("items") or []
            token = ((reply or {}).get("metadata") or {}).get("continue")
            if not token:
                return items
            query["continue"] = token

    async def delete(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        propagation: Propagation = "Background",
        resource_version: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> dict[str, Any]:
        query: dict[str, Any] = {
            "kind": kind,
            "namespace": namespace,
            "name": name,
            "propagationPolicy": propagation,
            "resourceVersion": resource_version,
        }
        if grace_period_seconds is not None:
            query["gracePeriodSeconds"] = grace_period_seconds
        obj, _ = await self._request("delete", msgspec.json.encode(query))
        return obj

    async def evict(self, namespace: str | None, name: str, grace_period_seconds: int | None = None,
                    resource_version: str | None = None) -> dict[str, Any]:
        """Evict a pod: deleted unless that breaks its PodDisruptionBudget (TooManyRequests)."""
        query: dict[str, Any] = {"kind": "pod", "namespace": namespace, "name": name,
                                 "resourceVersion": resource_version}
        if grace_period_seconds is not None:
            query["gracePeriodSeconds"] = grace_period_seconds
        obj, _ = await self._request("evict", msgspec.json.encode(query))
        return obj

    async def token(self, namespace: str, name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
        """A TokenRequest for ServiceAccount ``name`` (``spec``: audiences, expirationSeconds,
        boundObjectRef), signed by the api; the reply's ``status.token`` is the token."""
        body = msgspec.json.encode({"namespace": namespace, "name": name, "spec": spec or {}})
        obj, _ = await self._request("token", body)
        return obj
