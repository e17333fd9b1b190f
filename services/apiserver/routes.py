"""The Kubernetes HTTP API on aiohttp: discovery, OpenAPI, and every verb on every kind,
translated onto the bus. Writes go through ``kyb.api.*`` (ApiClient), so admission,
validation, compare-and-set and tracing stay in the api service; lists and watches are
served from the watch cache (services/apiserver/cache.py), single gets from ``kyb.api.get``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as _dt
import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog
from aiohttp import web

from kyb import errors, satoken, telemetry
from kyb.cli.nodeclient import latest_samples, pick_container, stream_logs
from kyb.client import ApiClient
from kyb.informer import ADDED, DELETED, MODIFIED
from kyb.render import to_dict
from schemas import limits, strict
from schemas.helpers import format_time
from schemas.meta import LabelSelector
from schemas.registry import KindInfo
from schemas.selector import SelectorError, from_label_selector, from_labels, parse, parse_fields
from services.apiserver import (
    authorization,
    discovery,
    fieldmanager,
    metricsapi,
    openapi,
    patch,
    portforward,
    protobuf,
    rbac,
    respond,
    reviews,
    streaming,
    tables,
)
from services.apiserver import status as st
from services.apiserver.cache import Change, Expired, WatchCache
from services.apiserver.custom import custom_scale, resize_of, scale_paths, set_path
from services.apiserver.events import Events
from services.apiserver.respond import Failure, json_response, not_found_path, status_response

log = structlog.get_logger("apiserver")

JSON = respond.JSON
PROTOBUF = "application/vnd.kubernetes.protobuf"
MAX_BODY = 3 * 1024 * 1024
ACCOUNT_RECHECK = 10.0  # seconds a service account token's bound pod is taken as still there
MAX_ACCOUNTS = 10_000  # tokens remembered as checked
# the kubeconfig's user: in system:masters, which RBAC always allows (as kubeadm's admin.conf)
ADMIN = rbac.UserInfo("kubernetes-admin", (rbac.MASTERS, rbac.AUTHENTICATED))
PATCH_ATTEMPTS = 10
WATCH_BATCH = 500  # events a watch sends in one write
FIELD_VALIDATION = ("Ignore", "Strict", "Warn")
WARNINGS = web.RequestKey("kyb.warnings", list[str])  # the request's warnings, sent as Warning headers
INITIAL_EVENTS_END = "k8s.io/initial-events-end"  # the annotation of a watch-list's closing bookmark
_encoder = msgspec.json.Encoder()


_json = json_response
_status = status_response
_not_found_path = not_found_path


@dataclass
class Target:
    """What a resource path names."""

    info: KindInfo
    namespace: str | None  # from the path; None: every namespace (or cluster-scoped)
    name: str | None
    sub: str | None
    version: str = ""  # the group version of the path ("apps/v1")

    def versioned(self, doc: dict[str, Any]) -> dict[str, Any]:
        """A custom object as the path's version shows it (conversion None: only apiVersion
        differs between the versions of a CRD)."""
        if self.info.custom is None or not self.version or doc.get("apiVersion") == self.version:
            return doc
        return {**doc, "apiVersion": self.version}

    @property
    def group(self) -> str:
        return self.info.group


def parse_target(group_version: str, tail: str) -> Target:
    segs = [s for s in tail.split("/") if s]
    if not segs:
        raise _not_found_path()
    namespace = None
    if segs[0] == "namespaces" and len(segs) >= 3 and not (len(segs) == 3 and segs[2] in ("status", "finalize")):
        namespace, segs = segs[1], segs[2:]
    info = discovery.lookup(group_version, segs[0])
    if info is None or len(segs) > 3 or (namespace is not None and not info.namespaced):
        raise _not_found_path()
    name = segs[1] if len(segs) > 1 else None
    sub = segs[2] if len(segs) > 2 else None
    if name is not None and info.namespaced and namespace is None:
        raise _not_found_path()
    return Target(info, namespace, name, sub, group_version)


def _bool(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


class Server:
    def __init__(self, nc: Any, token: str, *, bookmark_seconds: float = 60.0,
                 clock: Callable[[], _dt.datetime] | None = None, server_address: str = "127.0.0.1:6443",
                 service_account_key: Any = None) -> None:
        self.nc = nc
        self.token = token
        self.service_account_key = service_account_key  # checks pods' service account tokens; None: refused
        self._accounts: dict[str, tuple[float, rbac.UserInfo]] = {}  # token -> (when checked, user), see _service_account
        self.api = ApiClient(nc, timeout=15, start_traces=False)
        self.cache = WatchCache(nc)
        self.authz = authorization.Authorization(self.cache)
        self.bookmark_seconds = bookmark_seconds
        self.clock = clock or (lambda: _dt.datetime.now(_dt.UTC))
        self.server_address = server_address
        self.stopping = asyncio.Event()
        self.openapi = openapi.OpenApi()
        self.events = Events(nc, self.clock)
        self.kinds: Any = None  # kyb.customkinds.CustomKinds: the kinds CRDs make (set by the service)

    # -- the application ----------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._authenticate], client_max_size=MAX_BODY)
        r = app.router
        r.add_get("/version", self.version)
        r.add_get("/version/", self.version)
        r.add_get("/healthz", self.health)
        r.add_get("/livez", self.health)
        r.add_get("/readyz", self.health)
        r.add_get("/api", self.core_versions)
        r.add_get("/api/", self.core_versions)
        r.add_get("/api/v1", self.core_resources)
        r.add_get("/api/v1/", self.core_resources)
        r.add_get("/apis", self.groups)
        r.add_get("/apis/", self.groups)
        r.add_get("/apis/{group}", self.group)
        r.add_get("/apis/{group}/{version}", self.group_resources)
        r.add_get("/openapi/v2", self.openapi_v2)
        r.add_get("/openapi/v3", self.openapi_v3)
        r.add_get("/openapi/v3/{path:.+}", self.openapi_v3_gv)
        r.add_route("*", "/api/v1/{tail:.+}", self.core_resource)
        r.add_route("*", "/apis/{group}/{version}/{tail:.+}", self.group_resource)
        return app

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return _status(st.status(401, "Unauthorized", "Unauthorized"))
        user = await self._user_of(token.strip())
        if user is None:
            return _status(st.status(401, "Unauthorized", "Unauthorized"))
        try:
            try:
                await self.authz.admit(request, user)
            except errors.KybError as e:  # the RBAC caches are not ready
                return _status(st.from_error(e))
            if "traceparent" not in request.headers:
                return _warned(request, await handler(request))
            # A client that traces (client-go, OpenTelemetry-instrumented ones) sends its trace
            # context: the request joins that trace, and so does every bus request it makes.
            with telemetry.span_from_headers(f"{request.method} {request.path}", request.headers,
                                             telemetry.SpanKind.SERVER, tracer_name="kyb.apiserver"):
                return _warned(request, await handler(request))
        except Failure as f:
            return _status(f.doc)
        except web.HTTPException as e:
            if e.status == 404:
                return _status(_not_found_path().doc)
            if e.status == 405:
                return _status(st.status(405, "MethodNotAllowed", f"the server does not allow this method: {request.method}"))
            if e.status == 413:
                return _status(st.status(413, "RequestEntityTooLarge", "the request body is too large"))
            raise

    async def _user_of(self, token: str) -> rbac.UserInfo | None:
        """Whom a bearer token authenticates: the kubeconfig's, or a service account token; None
        for any other."""
        if hmac.compare_digest(token.encode(), self.token.encode()):
            return ADMIN
        return await self._service_account(token)

    async def _service_account(self, token: str) -> rbac.UserInfo | None:
        """The ``system:serviceaccount:<ns>:<name>`` a service account token authenticates, or None.

        As Kubernetes' service account authenticator: signature, issuer, audience and times,
        then the service account must still exist with the uid the token names, and the pod it
        is bound to (if any) with the same uid (checked at most once every ``ACCOUNT_RECHECK``
        seconds per token)."""
        if self.service_account_key is None or token.count(".") != 2:
            return None
        now = self.clock()
        try:
            binding = satoken.verify(self.service_account_key, token, now=now)
        except satoken.TokenInvalid:
            return None
        checked = self._accounts.get(token)
        if checked is not None and now.timestamp() - checked[0] < ACCOUNT_RECHECK:
            return checked[1]
        if binding.pod:
            try:
                pod = await self.api.get("Pod", binding.namespace, binding.pod)
            except errors.KybError:
                return None
            if (pod.get("metadata") or {}).get("uid") != binding.pod_uid:
                return None
        try:
            account = await self.api.get("ServiceAccount", binding.namespace, binding.service_account)
        except errors.KybError:
            return None
        if binding.service_account_uid and (account.get("metadata") or {}).get("uid") != binding.service_account_uid:
            return None
        extra = {"authentication.kubernetes.io/pod-name": (binding.pod,),
                 "authentication.kubernetes.io/pod-uid": (binding.pod_uid,)} if binding.pod else {}
        if binding.node:
            extra["authentication.kubernetes.io/node-name"] = (binding.node,)
        user = rbac.service_account_user(binding.namespace, binding.service_account, binding.service_account_uid,
                                         extra)
        if len(self._accounts) > MAX_ACCOUNTS:
            self._accounts.clear()
        self._accounts[token] = (now.timestamp(), user)
        return user

    # -- discovery ------------------------------------------------------------------------

    async def version(self, _request: web.Request) -> web.Response:
        return _json(discovery.version())

    async def health(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def core_versions(self, request: web.Request) -> web.Response:
        if discovery.wants_aggregated(request.headers.get("Accept", "")):
            return _json(discovery.aggregated(core=True), content_type=discovery.AGGREGATED_V2)
        return _json(discovery.api_versions(self.server_address))

    async def core_resources(self, _request: web.Request) -> web.Response:
        return _json(discovery.resource_list("v1"))

    async def groups(self, request: web.Request) -> web.Response:
        if discovery.wants_aggregated(request.headers.get("Accept", "")):
            return _json(discovery.aggregated(core=False), content_type=discovery.AGGREGATED_V2)
        return _json(discovery.api_group_list())

    async def group(self, request: web.Request) -> web.Response:
        doc = discovery.api_group(request.match_info["group"])
        if doc is None:
            raise _not_found_path()
        return _json(doc)

    async def group_resources(self, request: web.Request) -> web.Response:
        doc = discovery.resource_list(f"{request.match_info['group']}/{request.match_info['version']}")
        if doc is None:
            raise _not_found_path()
        return _json(doc)

    async def openapi_v2(self, request: web.Request) -> web.Response:
        accept = request.headers.get("Accept", "")
        if "protobuf" in accept and "json" not in accept:
            return _status(st.status(406, "NotAcceptable", "only application/json is served for /openapi/v2"))
        return web.Response(body=self.openapi.v2(), content_type=JSON)

    async def openapi_v3(self, _request: web.Request) -> web.Response:
        return _json(self.openapi.v3_index())

    async def openapi_v3_gv(self, request: web.Request) -> web.Response:
        body = self.openapi.v3(request.match_info["path"])
        if body is None:
            raise _not_found_path()
        return web.Response(body=body, content_type=JSON, headers={"Cache-Control": "public, immutable"}
                            if "hash" in request.query else None)

    # -- resources ------------------------------------------------------------------------

    async def core_resource(self, request: web.Request) -> web.StreamResponse:
        return await self._resource(request, "v1", request.match_info["tail"])

    async def group_resource(self, request: web.Request) -> web.StreamResponse:
        gv = f"{request.match_info['group']}/{request.match_info['version']}"
        return await self._resource(request, gv, request.match_info["tail"])

    async def _resource(self, request: web.Request, gv: str, tail: str) -> web.StreamResponse:
        extra = await self._extra(request, gv, [s for s in tail.split("/") if s])
        if extra is not None:
            return extra
        try:
            t = parse_target(gv, tail)
        except Failure:
            if self.kinds is None or not discovery.custom_group(gv):
                raise
            await self.kinds.refresh()  # a CRD made a moment ago, not yet in this process's watch
            t = parse_target(gv, tail)
        try:
            return await self._dispatch(request, t)
        except errors.KybError as e:
            return _status(st.from_error(e, kind=t.info.kind, plural=t.info.plural, group=t.group, name=t.name))

    async def _extra(self, request: web.Request, gv: str, segs: list[str]) -> web.StreamResponse | None:
        """The resources that are not kinds of the registry: events and access reviews."""
        namespace = None
        if len(segs) >= 3 and segs[0] == "namespaces":
            namespace, segs = segs[1], segs[2:]
        if not segs or segs[0] not in {e.name for e in discovery.extras(gv)}:
            return None
        if gv == metricsapi.GROUP_VERSION:
            return await self._metrics(request, segs, namespace)
        if segs[0] == "tokenreviews":
            if request.method != "POST" or len(segs) != 1 or namespace is not None:
                raise Failure(405, "MethodNotAllowed", "tokenreviews takes only POST")
            body = await self._body(request)
            token = ((body.get("spec") or {}).get("token") if isinstance(body, dict) else None) or ""
            if not isinstance(token, str) or not token:
                raise Failure(400, "BadRequest", "token is required for TokenReview in authentication.k8s.io")
            return reviews.token_review(body, await self._user_of(token))
        if segs[0] in reviews.KINDS:
            if request.method != "POST" or len(segs) != 1 or (namespace is None) == (segs[0] == "localsubjectaccessreviews"):
                raise Failure(405, "MethodNotAllowed", f"{segs[0]} takes only POST")
            body = await self._body(request)
            if not isinstance(body, dict):
                raise Failure(400, "BadRequest", "the request body must be a JSON object")
            return reviews.answer(segs[0], body, request[authorization.USER], await self.authz.policy(), namespace)
        if len(segs) > 2:
            raise _not_found_path()
        name = segs[1] if len(segs) == 2 else None
        method = request.method
        try:
            if name is None and method == "GET":
                if _bool(request.query.get("watch")):
                    return await self.events.watch(request, gv, namespace)
                return await self.events.list(request, gv, namespace)
            if name is not None and method == "GET" and namespace is not None:
                return await self.events.get(request, gv, namespace, name)
            if name is None and method == "POST" and namespace is not None:
                return await self.events.create(gv, namespace, await self._body(request))
        except errors.KybError as e:
            return _status(st.from_error(e, plural="events", name=name))
        raise Failure(405, "MethodNotAllowed", f"the server does not allow this method on events: {method}")

    async def _metrics(self, request: web.Request, segs: list[str], namespace: str | None) -> web.Response:
        """NodeMetrics and PodMetrics (``services/apiserver/metricsapi.py``): get and list."""
        resource = segs[0]
        kind = "NodeMetrics" if resource == "nodes" else "PodMetrics"
        if request.method != "GET":
            raise Failure(405, "MethodNotAllowed", f"{resource}.{metricsapi.GROUP_VERSION} takes only GET")
        if len(segs) > 2 or (resource == "nodes" and namespace is not None):
            raise _not_found_path()
        name = segs[1] if len(segs) == 2 else None
        try:
            try:
                samples = await latest_samples(self.nc)
            except errors.NotFound:
                samples = []  # no kubelet has published a sample yet
            labels: Any = None
            selector = request.query.get("labelSelector")
            if selector:  # the objects' own labels decide, as metrics-server filters
                found = await self.api.list(resource, namespace if resource == "pods" else None, label_selector=selector)
                if resource == "nodes":
                    labels = {o["metadata"]["name"]: o["metadata"].get("labels") or {} for o in found}
                else:
                    labels = {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o["metadata"].get("labels") or {}
                              for o in found}
            items = metricsapi.nodes(samples, labels) if resource == "nodes" else metricsapi.pods(samples, namespace, labels)
            if name is None:
                return json_response(metricsapi.metrics_list(kind, items))
            for item in items:
                if item["metadata"]["name"] == name:
                    return json_response(item)
            raise errors.NotFound(f'{kind.lower()}.metrics.k8s.io "{name}" not found')
        except errors.KybError as e:
            return _status(st.from_error(e, plural=resource, group="metrics.k8s.io", name=name))

    async def _dispatch(self, request: web.Request, t: Target) -> web.StreamResponse:
        method = request.method
        if t.sub is not None:
            return await self._subresource(request, t)
        if t.name is None:
            if method == "GET":
                if _bool(request.query.get("watch")):
                    return await self.watch(request, t)
                return await self.list(request, t)
            if method == "POST":
                return await self.create(request, t)
            if method == "DELETE":
                return await self.delete_collection(request, t)
        else:
            if method == "GET":
                return await self.render(request, t, await self._get(t))
            if method == "PUT":
                return await self.update(request, t)
            if method == "PATCH":
                return await self.patch(request, t)
            if method == "DELETE":
                return await self.delete(request, t)
        raise Failure(405, "MethodNotAllowed", f"the server does not allow this method on the requested resource: {method}")

    # -- helpers --------------------------------------------------------------------------

    def _ns(self, t: Target) -> str | None:
        return t.namespace if t.info.namespaced else None

    async def _get(self, t: Target) -> dict[str, Any]:
        return await self.api.get(t.info.kind, self._ns(t), t.name or "")

    async def _body(self, request: web.Request) -> Any:
        """The request's object, decoded under schemas.limits (JSON, YAML) or, for protobuf,
        within limits.MAX_BYTES by a decoder whose depth is its schema's."""
        raw = await request.read()
        ctype = request.headers.get("Content-Type", JSON).split(";")[0].strip().lower()
        if ctype == PROTOBUF:
            if len(raw) > limits.MAX_BYTES:
                raise Failure(413, "RequestEntityTooLarge", f"the request body is larger than {limits.MAX_BYTES} bytes")
            try:
                return protobuf.decode(raw)
            except (protobuf.Unsupported, UnicodeDecodeError) as e:
                raise Failure(415, "UnsupportedMediaType", f"{e}: send {JSON} (kubectl create -f, kubectl apply)") from None
        try:
            if ctype in ("application/yaml", "application/x-yaml", "text/yaml", patch.APPLY_PATCH):
                return limits.load_one_yaml(raw)
            return limits.decode_json(raw)
        except limits.InputError as e:
            raise _refused(e, "the request body") from None

    async def _json_body(self, request: web.Request, what: str) -> Any:
        """A JSON body (patches, DeleteOptions) under schemas.limits; None when empty."""
        raw = await request.read()
        if not raw.strip():
            return None
        try:
            return limits.decode_json(raw)
        except limits.InputError as e:
            raise _refused(e, what) from None

    def _dry_run(self, request: web.Request) -> bool:
        values = request.query.getall("dryRun", [])
        for v in values:
            if v != "All":
                raise Failure(400, "BadRequest", f'dryRun: Unsupported value: "{v}": supported values: "All"')
        return bool(values)

    def _object_body(self, t: Target, doc: Any) -> dict[str, Any]:
        if not isinstance(doc, dict):
            raise Failure(400, "BadRequest", "the request body must be a JSON object")
        doc.setdefault("apiVersion", t.info.api_version)
        doc.setdefault("kind", t.info.kind)
        if doc.get("kind") != t.info.kind:
            raise Failure(400, "BadRequest", f'the kind of the object ({doc.get("kind")}) does not match '
                          f'the resource ({t.info.plural})')
        meta = doc.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise Failure(400, "BadRequest", "metadata must be an object")
        if t.info.namespaced:
            if meta.get("namespace") and meta["namespace"] != t.namespace:
                raise Failure(400, "BadRequest", "the namespace of the provided object does not match the namespace "
                              "sent on the request")
            meta["namespace"] = t.namespace
        if t.name is not None:
            if meta.get("name") and meta["name"] != t.name:
                raise Failure(400, "BadRequest", "the name of the object "
                              f"({meta['name']}) does not match the name on the URL ({t.name})")
            meta["name"] = t.name
        return doc

    async def render(self, request: web.Request, t: Target, obj: dict[str, Any], code: int = 200) -> web.Response:
        obj = t.versioned(obj)
        if tables.wants_table(request.headers.get("Accept", "")):
            doc = tables.table(t.info.kind, [obj], self.clock(),
                               resource_version=(obj.get("metadata") or {}).get("resourceVersion"),
                               include_object=request.query.get("includeObject", "Metadata"))
            return _json(doc, code, tables.TABLE_MEDIA)
        return _json(obj, code)

    # -- read -----------------------------------------------------------------------------

    def _selectors(self, request: web.Request):
        label = field = None
        try:
            if request.query.get("labelSelector"):
                label = parse(request.query["labelSelector"])
            if request.query.get("fieldSelector"):
                field = parse_fields(request.query["fieldSelector"])
        except (SelectorError, ValueError) as e:
            raise Failure(400, "BadRequest", f"unable to parse requirement: {e}") from None

        def matches(obj: Any) -> bool:
            if label is not None and not label.matches(obj.metadata.labels):
                return False
            return field is None or field.matches(obj)

        return matches

    async def list(self, request: web.Request, t: Target) -> web.Response:
        matches = self._selectors(request)
        if "sendInitialEvents" in request.query:
            raise _list_options_invalid("sendInitialEvents", "Forbidden: sendInitialEvents is forbidden for list")
        start = _continue_key(request.query.get("continue"))
        cache = await self.cache.kind(t.info)
        rv = request.query.get("resourceVersion")
        match = _resource_version_match(request)
        if not rv:  # a consistent read
            await cache.consistent(self.cache.js)
        elif rv != "0":  # NotOlderThan (also without resourceVersionMatch), or Exact
            wanted = _int(rv, "resourceVersion") or 0
            if not await cache.caught_up(wanted):
                raise Failure(504, "Timeout", f"Too large resource version: {wanted}, current: {cache.revision}",
                              causes=[{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                              retry_after=1)
            if match == "Exact" and cache.revision != wanted:
                raise Failure(410, "Expired", f"too old resource version: {wanted} ({cache.revision}): "
                              "resourceVersionMatch=Exact is served only for the latest resourceVersion (the "
                              "watch cache keeps the state as it is now, not as it was)")
        objects, revision = cache.snapshot(self._ns(t))
        objects = [o for o in objects if matches(o)]
        if start is not None:
            objects = [o for o in objects if (o.metadata.namespace or "", o.metadata.name) > start]
        meta: dict[str, Any] = {"resourceVersion": str(revision)}
        limit = _int(request.query.get("limit"), "limit")
        if limit and len(objects) > limit:
            last = objects[limit - 1]
            meta["continue"] = _continue_token(last.metadata.namespace or "", last.metadata.name, revision)
            meta["remainingItemCount"] = len(objects) - limit
            objects = objects[:limit]
        items = [t.versioned(to_dict(o)) for o in objects]
        if tables.wants_table(request.headers.get("Accept", "")):
            doc = tables.table(t.info.kind, items, self.clock(), resource_version=str(revision),
                               include_object=request.query.get("includeObject", "Metadata"))
            if "continue" in meta:
                doc["metadata"]["continue"] = meta["continue"]
            return _json(doc, 200, tables.TABLE_MEDIA)
        list_kind = t.info.custom.list_kind if t.info.custom is not None else f"{t.info.kind}List"
        return _json({"kind": list_kind, "apiVersion": t.version if t.info.custom is not None else t.info.api_version,
                      "metadata": meta, "items": items})

    async def watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        matches = self._selectors(request)
        initial = _send_initial_events(request)
        cache = await self.cache.kind(t.info)
        raw_rv = request.query.get("resourceVersion")
        rv = None if raw_rv in (None, "", "0") else _int(raw_rv, "resourceVersion")
        if initial is None:  # the classic watch: from rv, or the current objects as ADDED first
            since = rv
        else:  # watch-list: the state is NotOlderThan rv (unset: the store's latest; "0": any)
            if not raw_rv:
                await cache.consistent(self.cache.js)
            elif rv is not None and not await cache.caught_up(rv):
                raise Failure(504, "Timeout", f"Too large resource version: {rv}, current: {cache.revision}",
                              causes=[{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                              retry_after=1)
            since = None if initial else (rv if rv is not None else cache.revision)
        try:
            replay, watcher = cache.watch(since, self._ns(t))
        except Expired as e:
            return _status(st.status(410, "Expired", e.message))
        listed = cache.revision  # what the replay of a watch-list shows: same step of the loop
        as_table = tables.wants_table(request.headers.get("Accept", ""))
        bookmarks = _bool(request.query.get("allowWatchBookmarks"))
        timeout = _int(request.query.get("timeoutSeconds"), "timeoutSeconds") or 1800
        ns = self._ns(t)
        resp = web.StreamResponse(headers={"Content-Type": tables.TABLE_MEDIA if as_table else JSON,
                                           "Transfer-Encoding": "chunked", "Cache-Control": "no-cache"})
        resp.enable_chunked_encoding()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_rv = since if since is not None else listed

        def events(changes: list[Change]) -> bytes:
            out = [self._event(t, c, ns, matches, as_table, request) for c in changes]
            return b"".join(e for e in out if e is not None)

        try:
            await resp.prepare(request)
            for at in range(0, len(replay), WATCH_BATCH):
                if chunk := events(replay[at:at + WATCH_BATCH]):
                    await resp.write(chunk)
            if replay:
                last_rv = max(last_rv, max(c.seq for c in replay))
            if initial and bookmarks:  # watch-list: the initial state is complete
                await resp.write(self._bookmark(t, listed, {INITIAL_EVENTS_END: "true"}))
            next_bookmark = loop.time() + self.bookmark_seconds
            while not self.stopping.is_set():
                if request.transport is None or request.transport.is_closing():
                    break  # the client has gone: nothing will read what is sent
                wait = min(deadline, next_bookmark) - loop.time()
                if wait <= 0:
                    if loop.time() >= deadline:
                        break
                    if bookmarks:
                        await resp.write(self._bookmark(t, max(last_rv, cache.revision)))
                    next_bookmark = loop.time() + self.bookmark_seconds
                    continue
                if not await watcher.wait(wait):
                    continue
                # Whatever else is pending goes out in the same write: one write per burst,
                # not per change, when a watcher falls behind a busy kind.
                batch, ended = watcher.take(WATCH_BATCH)
                if batch:
                    last_rv = batch[-1].seq
                    if chunk := events(batch):
                        await resp.write(chunk)
                if ended:
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            watcher.close()
        with contextlib.suppress(Exception):
            await resp.write_eof()
        return resp

    def _event(self, t: Target, change: Change, ns: str | None, matches: Callable[[Any], bool], as_table: bool,
               request: web.Request) -> bytes | None:
        obj = change.obj
        if ns is not None and obj.metadata.namespace != ns:
            return None
        now_in = matches(obj)
        kind = change.type
        if kind == MODIFIED:
            was_in = change.old is not None and matches(change.old)
            if not now_in and not was_in:
                return None
            if now_in and not was_in:
                kind = ADDED
            elif was_in and not now_in:
                kind = DELETED
        elif not now_in:
            return None
        if as_table:
            doc = tables.table(t.info.kind, [t.versioned(to_dict(obj))], self.clock(), resource_version=str(change.seq),
                               include_object=request.query.get("includeObject", "Metadata"))
            return _encoder.encode({"type": kind, "object": doc}) + b"\n"
        # Every watcher of the change sends the same bytes: encoded once, by the first.
        key = (kind, t.version) if t.info.custom is not None else kind
        encoded = change.encoded.get(key)
        if encoded is None:
            encoded = change.encoded[key] = _encoder.encode({"type": kind, "object": t.versioned(to_dict(obj))}) + b"\n"
        return encoded

    def _bookmark(self, t: Target, rv: int, annotations: dict[str, str] | None = None) -> bytes:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if annotations:
            meta["annotations"] = annotations
        obj = {"kind": t.info.kind, "apiVersion": t.info.api_version, "metadata": meta}
        return _encoder.encode({"type": "BOOKMARK", "object": obj}) + b"\n"

    # -- write ----------------------------------------------------------------------------

    def _tracked(self, request: web.Request, old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
        """``new`` with the fields its writer changed recorded as that manager's (an object
        that states managedFields of its own, other than the stored ones, keeps them)."""
        stated = (new.get("metadata") or {}).get("managedFields")
        if stated and stated != ((old or {}).get("metadata") or {}).get("managedFields"):
            return new
        manager = fieldmanager.manager_of(request.query.get("fieldManager"), request.headers.get("User-Agent", ""))
        return fieldmanager.update(old, new, manager, now=format_time(self.clock()))

    async def _checked(self, request: web.Request, t: Target, doc: dict[str, Any], *, body: bool = True
                       ) -> dict[str, Any]:
        """``doc`` as field validation (``fieldValidation``, Kubernetes' rules) lets it through:
        Strict refuses unknown and repeated fields (400, naming every one), Warn (the default)
        drops them with a ``Warning`` header each, Ignore drops them silently. ``body``: the
        request's body is the object's JSON text (checked for repeated fields too)."""
        mode = _field_validation(request)
        doc, unknown = strict.pruned(t.info.type, doc)
        if mode == "Ignore":
            return doc
        repeated: list[str] = []
        if body and request.headers.get("Content-Type", JSON).split(";")[0].strip().lower() in (
                JSON, patch.MERGE_PATCH, patch.STRATEGIC, patch.JSON_PATCH):
            repeated = strict.duplicate_fields(await request.read())
        problems = [f'unknown field "{p}"' for p in unknown] + [f'duplicate field "{p}"' for p in repeated]
        if not problems:
            return doc
        if mode == "Strict":
            version = t.info.api_version.rsplit("/", 1)[-1]
            raise Failure(400, "BadRequest", f'{t.info.kind} in version "{version}" cannot be handled as a '
                          f'{t.info.kind}: strict decoding error: {", ".join(problems)}')
        warnings = request.setdefault(WARNINGS, [])
        warnings += [w for w in problems if w not in warnings]
        return doc

    async def _granted(self, request: web.Request, t: Target, doc: dict[str, Any]) -> None:
        """RBAC's escalation check of a Role, ClusterRole or binding about to be written."""
        await self.authz.check_grant(request[authorization.USER], t.info.kind, doc)

    async def create(self, request: web.Request, t: Target) -> web.Response:
        doc = await self._checked(request, t, self._object_body(t, await self._body(request)))
        doc = self._tracked(request, None, doc)
        await self._granted(request, t, doc)
        obj = await self.api.create(doc, namespace=t.namespace, dry_run=self._dry_run(request))
        return await self.render(request, t, obj, 201)

    async def update(self, request: web.Request, t: Target) -> web.Response:
        doc = await self._checked(request, t, self._object_body(t, await self._body(request)))
        try:
            doc = self._tracked(request, await self._get(t), doc)
        except errors.NotFound:
            pass  # the api answers that
        await self._granted(request, t, doc)
        obj = await self.api.replace(doc, namespace=t.namespace, dry_run=self._dry_run(request))
        return await self.render(request, t, obj)

    async def server_side_apply(self, request: web.Request, t: Target) -> web.Response:
        """PATCH with application/apply-patch+yaml: the configuration applied by its field
        manager (required); conflicts with other managers are a 409 unless ``force``."""
        manager = request.query.get("fieldManager")
        if not manager:
            raise Failure(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                          "is required for apply patch", causes=[{"field": "fieldManager", "reason":
                                                                   "FieldValueRequired", "message": "Required value"}])
        force = _bool(request.query.get("force"))
        config = await self._checked(request, t, self._object_body(t, await self._body(request)), body=False)
        pinned = (config.get("metadata") or {}).get("resourceVersion")
        dry_run = self._dry_run(request)
        for attempt in range(PATCH_ATTEMPTS):
            try:
                live = await self._get(t)
            except errors.NotFound:
                live = None
            if pinned and live is not None and (live.get("metadata") or {}).get("resourceVersion") != pinned:
                raise errors.Conflict(f'Operation cannot be fulfilled on {t.info.plural} "{t.name}": the object has '
                                      "been modified; please apply your changes to the latest version and try again")
            try:
                obj = fieldmanager.apply(live, json.loads(json.dumps(config)), manager, force=force,
                                         now=format_time(self.clock()))
            except fieldmanager.Conflicts as c:
                causes = [{"reason": "FieldManagerConflict", "field": x.field,
                           "message": f'conflict with "{x.manager}" using {x.api_version}'} for x in c.conflicts]
                raise Failure(409, "Conflict", str(c), causes=causes) from None
            await self._granted(request, t, obj)
            try:
                if live is None:
                    made = await self.api.create(obj, namespace=t.namespace, dry_run=dry_run)
                    return await self.render(request, t, made, 201)
                obj["metadata"]["resourceVersion"] = live["metadata"].get("resourceVersion")
                return await self.render(request, t, await self.api.replace(obj, namespace=t.namespace,
                                                                            dry_run=dry_run))
            except (errors.Conflict, errors.AlreadyExists):
                if pinned or attempt == PATCH_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _patched(self, request: web.Request, t: Target, change: Callable[[dict[str, Any]], dict[str, Any]],
                       write: Callable[..., Awaitable[dict[str, Any]]] | None = None) -> dict[str, Any]:
        """Read, change, write (replace, or ``write``) at the revision read; a conflict the patch
        did not ask for (it named no resourceVersion) is retried on a fresh read."""
        write = write or self.api.replace
        dry_run = self._dry_run(request)
        for attempt in range(PATCH_ATTEMPTS):
            current = await self._get(t)
            rv = (current.get("metadata") or {}).get("resourceVersion")
            new = change(json.loads(json.dumps(current)))
            if isinstance(new, dict):
                new = self._tracked(request, current, new)
            meta = new.setdefault("metadata", {}) if isinstance(new.get("metadata"), dict | type(None)) else None
            if meta is None:
                raise Failure(422, "Invalid", "metadata must be an object")
            pinned = meta.get("resourceVersion") not in (None, rv)
            meta.setdefault("resourceVersion", rv)
            if meta.get("resourceVersion") is None:
                meta["resourceVersion"] = rv
            self._object_body(t, new)
            await self._granted(request, t, new)
            try:
                return await write(new, namespace=t.namespace, dry_run=dry_run)
            except errors.Conflict:
                if pinned or attempt == PATCH_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _patch_fn(self, request: web.Request, body: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
        ctype = request.headers.get("Content-Type", "")
        kind = ctype.split(";")[0].strip().lower()
        if kind not in (patch.MERGE_PATCH, patch.JSON_PATCH, patch.STRATEGIC):
            raise Failure(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                          f"accepted media types include: {patch.JSON_PATCH}, {patch.MERGE_PATCH}, {patch.STRATEGIC}")

        def change(current: dict[str, Any]) -> dict[str, Any]:
            try:
                return patch.apply(kind, current, json.loads(json.dumps(body)))
            except patch.PatchError as e:
                raise Failure(422 if kind == patch.JSON_PATCH else 400, "Invalid" if kind == patch.JSON_PATCH
                              else "BadRequest", str(e)) from None

        return change

    async def patch(self, request: web.Request, t: Target) -> web.Response:
        if request.headers.get("Content-Type", "").split(";")[0].strip().lower() == patch.APPLY_PATCH:
            return await self.server_side_apply(request, t)
        fn = await self._checked_patch(request, t, self._patch_fn(request, await self._patch_body(request)))
        return await self.render(request, t, await self._patched(request, t, fn))

    async def _checked_patch(self, request: web.Request, t: Target, fn: Callable[[dict[str, Any]], dict[str, Any]]
                             ) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """``fn`` with field validation of what it makes (the stored object has no unknown fields,
        so those found are the patch's); the patch's text is checked for repeated fields once."""
        if t.info.custom is not None and request.headers.get("Content-Type", "").split(";")[0].strip().lower() \
                == patch.STRATEGIC:
            raise Failure(415, "UnsupportedMediaType", "strategic merge patch is not supported for custom resources: "
                          f"use {patch.MERGE_PATCH} or {patch.JSON_PATCH}")
        mode = _field_validation(request)
        repeated = [] if mode == "Ignore" else strict.duplicate_fields(await request.read())
        if repeated and mode == "Strict":
            raise Failure(400, "BadRequest", "strict decoding error: " + ", ".join(
                f'duplicate field "{p}"' for p in repeated))
        if repeated:
            request.setdefault(WARNINGS, []).extend(f'duplicate field "{p}"' for p in repeated)

        def checked(current: dict[str, Any]) -> dict[str, Any]:
            new = fn(current)
            if not isinstance(new, dict):
                return new
            doc, unknown = strict.pruned(t.info.type, new)
            if unknown and mode == "Strict":
                raise Failure(400, "BadRequest", "strict decoding error: " + ", ".join(
                    f'unknown field "{p}"' for p in unknown))
            if unknown and mode == "Warn":
                warnings = request.setdefault(WARNINGS, [])
                warnings += [w for w in (f'unknown field "{p}"' for p in unknown) if w not in warnings]
            return doc

        return checked

    async def _patch_body(self, request: web.Request) -> Any:
        body = await self._json_body(request, "the patch")
        if body is None:
            raise Failure(400, "BadRequest", "the patch is empty")
        return body

    def _delete_options(self, request: web.Request, body: Any) -> dict[str, Any]:
        opts = dict(body) if isinstance(body, dict) else {}
        q = request.query
        if "propagationPolicy" in q:
            opts["propagationPolicy"] = q["propagationPolicy"]
        if "gracePeriodSeconds" in q:
            opts["gracePeriodSeconds"] = _int(q["gracePeriodSeconds"], "gracePeriodSeconds")
        if opts.get("orphanDependents") is not None and "propagationPolicy" not in opts:
            opts["propagationPolicy"] = "Orphan" if opts["orphanDependents"] else "Background"
        return opts

    async def delete(self, request: web.Request, t: Target) -> web.Response:
        opts = self._delete_options(request, await self._json_body(request, "the DeleteOptions"))
        dry_run = self._dry_run(request) or "All" in (opts.get("dryRun") or [])
        obj = await self._delete_one(t, t.name or "", opts, dry_run)
        meta = obj.get("metadata") or {}
        if meta.get("deletionTimestamp") or dry_run:
            return await self.render(request, t, obj, 200)
        return _json(st.success(t.name or "", t.info.plural, t.group, meta.get("uid")))

    async def _delete_one(self, t: Target, name: str, opts: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        pre = opts.get("preconditions") or {}
        rv = pre.get("resourceVersion")
        if pre.get("uid") or dry_run:
            current = await self.api.get(t.info.kind, self._ns(t), name)
            if pre.get("uid") and (current.get("metadata") or {}).get("uid") != pre["uid"]:
                raise errors.Conflict(
                    f'Precondition failed: UID in precondition: {pre["uid"]}, UID in object meta: '
                    f'{(current.get("metadata") or {}).get("uid")}')
            if dry_run:
                if rv and (current.get("metadata") or {}).get("resourceVersion") != rv:
                    raise errors.Conflict(f'Precondition failed for {t.info.plural} "{name}": resourceVersion {rv}')
                return current
        policy = opts.get("propagationPolicy") or "Background"
        grace = opts.get("gracePeriodSeconds")
        return await self.api.delete(t.info.kind, self._ns(t), name, propagation=policy, resource_version=rv,
                                     grace_period_seconds=grace)

    async def delete_collection(self, request: web.Request, t: Target) -> web.Response:
        matches = self._selectors(request)
        opts = self._delete_options(request, await self._json_body(request, "the DeleteOptions"))
        dry_run = self._dry_run(request)
        cache = await self.cache.kind(t.info)
        await cache.consistent(self.cache.js)
        objects, revision = cache.snapshot(self._ns(t))
        deleted = []
        for o in objects:
            if not matches(o):
                continue
            with contextlib.suppress(errors.NotFound):
                one = Target(t.info, o.metadata.namespace, o.metadata.name, None)
                deleted.append(await self._delete_one(one, o.metadata.name, opts, dry_run))
        return _json({"kind": f"{t.info.kind}List", "apiVersion": t.info.api_version,
                      "metadata": {"resourceVersion": str(revision)}, "items": deleted})

    # -- subresources ---------------------------------------------------------------------

    async def _subresource(self, request: web.Request, t: Target) -> web.StreamResponse:
        method = request.method
        if t.sub == "status" and method == "GET":
            return await self.render(request, t, await self._get(t))
        if t.sub == "scale" and discovery.scalable(t.info):
            return await self.scale(request, t)
        if t.sub == "log" and t.info.kind == "Pod" and method == "GET":
            return await self.pod_log(request, t)
        if t.sub == "status" and method == "PUT":
            doc = await self._checked(request, t, self._object_body(t, await self._body(request)))
            obj = await self.api.replace_status(doc, namespace=t.namespace, dry_run=self._dry_run(request))
            return await self.render(request, t, obj)
        if t.sub == "status" and method == "PATCH":
            fn = await self._checked_patch(request, t, self._patch_fn(request, await self._patch_body(request)))
            return await self.render(request, t, await self._patched(request, t, fn, self.api.replace_status))
        if t.info.kind == "Pod" and t.sub in ("exec", "attach") and method in ("GET", "POST"):
            pod = await self._get(t)
            run = streaming.exec_ if t.sub == "exec" else streaming.attach
            return await run(request, self.nc, pod, t.namespace or "default", t.name or "")
        if t.info.kind == "Pod" and t.sub == "portforward" and method in ("GET", "POST"):
            return await portforward.serve(request, self.nc, await self._get(t), t.namespace or "default",
                                           t.name or "")
        if t.info.kind == "ServiceAccount" and t.sub == "token":
            if method != "POST":
                raise Failure(405, "MethodNotAllowed", "serviceaccounts/token takes only POST")
            return await self.token_request(request, t)
        if t.info.kind == "Pod" and t.sub == "resize":
            return await self.resize(request, t)
        if t.info.kind == "Pod" and t.sub in ("eviction", "binding"):
            if method != "POST":
                raise Failure(405, "MethodNotAllowed", f"pods/{t.sub} takes only POST")
            return await (self.evict(request, t) if t.sub == "eviction" else self.bind(request, t))
        if t.sub == "status":
            raise Failure(405, "MethodNotAllowed", f"the server does not allow this method on {t.info.plural}/status: "
                          f"{method}")
        raise _not_found_path()

    def _sub_body(self, t: Target, doc: Any, kind: str) -> dict[str, Any]:
        if not isinstance(doc, dict) or doc.get("kind", kind) != kind:
            raise Failure(400, "BadRequest", f"the body of pods/{t.sub} must be a {kind}")
        named = (doc.get("metadata") or {}).get("name")
        if named and named != t.name:
            raise Failure(400, "BadRequest", f"name in URL does not match name in {kind} object")
        return doc

    async def resize(self, request: web.Request, t: Target) -> web.Response:
        """pods/resize (kubectl patch|edit|apply --subresource resize): only the containers' CPU
        and memory requests and limits change, as Kubernetes validates an in-place resize; the
        pod's kubelet applies them to the running containers."""
        if request.method == "GET":
            return await self.render(request, t, await self._get(t))
        if request.method not in ("PATCH", "PUT"):
            raise Failure(405, "MethodNotAllowed", f"the server does not allow this method on pods/resize: "
                          f"{request.method}")
        if request.method == "PATCH":
            fn = self._patch_fn(request, await self._patch_body(request))
        else:
            body = self._object_body(t, await self._body(request))
            fn = lambda _current: json.loads(json.dumps(body))  # noqa: E731

        def change(current: dict[str, Any]) -> dict[str, Any]:
            return resize_of(current, fn(current), t.name or "")

        return await self.render(request, t, await self._patched(request, t, change))

    async def evict(self, request: web.Request, t: Target) -> web.Response:
        """policy/v1 Eviction: the pod deleted with the Eviction's DeleteOptions unless its
        PodDisruptionBudget allows no disruption now (``kyb.api.evict``: 429, which kubectl
        drain retries)."""
        doc = self._sub_body(t, await self._body(request), "Eviction")
        opts = doc.get("deleteOptions") or {}
        if not isinstance(opts, dict):
            raise Failure(400, "BadRequest", "deleteOptions must be an object")
        opts = self._delete_options(request, opts)
        dry_run = self._dry_run(request) or "All" in (opts.get("dryRun") or [])
        pod = await self._get(t)
        pre = opts.get("preconditions") or {}
        if pre.get("uid") and (pod.get("metadata") or {}).get("uid") != pre["uid"]:
            raise errors.Conflict(f'Precondition failed: UID in precondition: {pre["uid"]}, UID in object meta: '
                                  f'{(pod.get("metadata") or {}).get("uid")}')
        if dry_run:
            if not (pod.get("metadata") or {}).get("deletionTimestamp"):
                await self._delete_one(t, t.name or "", opts, dry_run)
        else:
            await self.api.evict(self._ns(t), t.name or "", opts.get("gracePeriodSeconds"), pre.get("resourceVersion"))
        return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201)

    async def token_request(self, request: web.Request, t: Target) -> web.Response:
        """authentication.k8s.io/v1 TokenRequest (``kubectl create token``): a token of the
        service account, signed by the api (``kyb.api.token``)."""
        doc = await self._body(request)
        if not isinstance(doc, dict) or doc.get("kind", "TokenRequest") != "TokenRequest":
            raise Failure(400, "BadRequest", "the body of serviceaccounts/token must be a TokenRequest")
        spec = doc.get("spec") or {}
        if not isinstance(spec, dict):
            raise Failure(400, "BadRequest", "spec must be an object")
        known = {k: spec[k] for k in ("audiences", "expirationSeconds", "boundObjectRef") if spec.get(k) is not None}
        reply = await self.api.token(t.namespace or "default", t.name or "", known)
        return _json(reply, 201)

    async def bind(self, request: web.Request, t: Target) -> web.Response:
        """v1 Binding: the pod's spec.nodeName set to the target Node, once."""
        doc = self._sub_body(t, await self._body(request), "Binding")
        target = doc.get("target") or {}
        node = target.get("name") if isinstance(target, dict) else None
        if not node or target.get("kind", "Node") != "Node":
            raise Failure(422, "Invalid", f'Binding "{t.name}" is invalid: target: Required value: a Node',
                          causes=[{"field": "target", "message": "Required value", "reason": "FieldValueRequired"}])

        def change(current: dict[str, Any]) -> dict[str, Any]:
            spec = current.setdefault("spec", {})
            if spec.get("nodeName"):
                raise Failure(409, "Conflict", f'Operation cannot be fulfilled on pods/binding "{t.name}": pod '
                              f'{t.name} is already assigned to node "{spec["nodeName"]}"', name=t.name, kind="pods")
            spec["nodeName"] = node
            return current

        await self._patched(request, t, change)
        return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201)

    def kinds_changed(self, info: KindInfo, gone: bool) -> None:
        """A custom kind came, changed or went: its watch cache is made afresh on next use."""
        self.cache.forget(info, gone)

    @staticmethod
    def _scale_of(obj: dict[str, Any], info: KindInfo | None = None) -> dict[str, Any]:
        if info is not None and info.custom is not None:
            return custom_scale(obj, info)
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        selector = spec.get("selector") or {}
        if isinstance(selector, dict) and ("matchLabels" in selector or "matchExpressions" in selector):
            text = _selector_text(selector)
        else:  # a ReplicationController's map
            text = str(from_labels(selector if isinstance(selector, dict) else {}))
        return {
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in meta},
            "spec": {"replicas": spec.get("replicas", 1)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0), "selector": text},
        }

    async def scale(self, request: web.Request, t: Target) -> web.Response:
        if request.method == "GET":
            return _json(self._scale_of(await self._get(t), t.info))
        if request.method not in ("PUT", "PATCH"):
            raise Failure(405, "MethodNotAllowed", f"the server does not allow this method on scale: {request.method}")
        body = await self._patch_body(request)
        fn = self._patch_fn(request, body) if request.method == "PATCH" else None

        def change(current: dict[str, Any]) -> dict[str, Any]:
            scale = self._scale_of(current, t.info)
            wanted = fn(scale) if fn is not None else body
            if not isinstance(wanted, dict):
                raise Failure(400, "BadRequest", "a Scale is a JSON object")
            replicas = (wanted.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool):
                raise Failure(422, "Invalid", f'Scale.autoscaling "{t.name}" is invalid: spec.replicas: Required value',
                              causes=[{"field": "spec.replicas", "message": "Required value",
                                                 "reason": "FieldValueRequired"}])
            rv = (wanted.get("metadata") or {}).get("resourceVersion")
            if t.info.custom is not None:
                set_path(current, scale_paths(t.info, current)[0], replicas)
            else:
                current.setdefault("spec", {})["replicas"] = replicas
            if rv:
                current["metadata"]["resourceVersion"] = rv
            return current

        return _json(self._scale_of(await self._patched(request, t, change), t.info))

    async def pod_log(self, request: web.Request, t: Target) -> web.StreamResponse:
        since = _log_since(request, t.name or "")  # the options are checked before the pod is read
        pod = await self._get(t)
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            raise Failure(400, "BadRequest", f'pod "{t.name}" is not scheduled to a node yet')
        try:
            container = pick_container(pod, request.query.get("container"))
        except errors.KybError as e:
            return _status(st.from_error(e, name=t.name))
        follow = _bool(request.query.get("follow"))
        tail = _int(request.query.get("tailLines"), "tailLines")
        limit = _int(request.query.get("limitBytes"), "limitBytes")
        req = {"namespace": t.namespace, "pod": t.name, "container": container, "follow": follow,
               "previous": _bool(request.query.get("previous")), "tail": tail,
               "timestamps": _bool(request.query.get("timestamps")), **since}
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        started = False
        try:
            async for chunk in stream_logs(self.nc, node, req, idle_timeout=None if follow else 10.0):
                if not started:
                    await resp.prepare(request)
                    started = True
                if limit is not None:
                    chunk, limit = chunk[:limit], limit - min(limit, len(chunk))
                await resp.write(chunk)
                if limit == 0:
                    break
        except errors.KybError as e:
            if not started:
                return _status(st.from_error(e, kind="Pod", plural="pods", name=t.name))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        if not started:
            await resp.prepare(request)
        with contextlib.suppress(Exception):
            await resp.write_eof()
        return resp


def _field_validation(request: web.Request) -> str:
    """The request's fieldValidation; Warn when unset, as Kubernetes' default since 1.27."""
    mode = request.query.get("fieldValidation") or "Warn"
    if mode not in FIELD_VALIDATION:
        raise Failure(400, "BadRequest", f'fieldValidation: Unsupported value: "{mode}": supported values: '
                      + ", ".join(f'"{m}"' for m in FIELD_VALIDATION),
                      causes=[{"reason": "FieldValueNotSupported", "field": "fieldValidation",
                               "message": f'Unsupported value: "{mode}"'}])
    return mode


def _warned(request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
    """``resp`` with a ``Warning: 299 - "<text>"`` header per warning of the request (RFC 9111's
    form, which kubectl prints as ``Warning: <text>``)."""
    for text in request.get(WARNINGS) or ():
        if not resp.prepared:
            resp.headers.add("Warning", f"299 - {json.dumps(text)}")
    return resp


def _log_since(request: web.Request, pod: str) -> dict[str, Any]:
    """PodLogOptions' sinceSeconds or sinceTime, checked as Kubernetes checks them (422 naming
    the field); the pod's kubelet keeps a time for every line and starts there."""
    def invalid(field: str, message: str) -> Failure:
        return Failure(422, "Invalid", f'PodLogOptions "{pod}" is invalid: {field}: {message}', kind="PodLogOptions",
                       name=pod, causes=[{"reason": "FieldValueInvalid", "message": message, "field": field}])

    seconds = _int(request.query.get("sinceSeconds"), "sinceSeconds")
    since_time = request.query.get("sinceTime")
    if seconds is not None and since_time:
        raise invalid("sinceSeconds", "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified")
    if seconds is not None:
        if seconds < 1:
            raise invalid("sinceSeconds", f"Invalid value: {seconds}: must be greater than 0")
        return {"sinceSeconds": seconds}
    if since_time:
        try:
            _dt.datetime.fromisoformat(since_time.replace("Z", "+00:00"))
        except ValueError:
            raise invalid("sinceTime", f'Invalid value: "{since_time}": must be an RFC 3339 time') from None
        return {"sinceTime": since_time}
    return {}


def _list_options_invalid(field: str, message: str) -> Failure:
    return Failure(422, "Invalid", f'ListOptions.meta.k8s.io "" is invalid: {field}: {message}', group="meta.k8s.io",
                   kind="ListOptions", causes=[{"reason": "FieldValueForbidden" if message.startswith("Forbidden")
                                                else "FieldValueNotSupported", "message": message, "field": field}])


def _resource_version_match(request: web.Request) -> str:
    """A list's resourceVersionMatch, checked as Kubernetes checks ListOptions."""
    match = request.query.get("resourceVersionMatch", "")
    if not match:
        return ""
    if not request.query.get("resourceVersion"):
        raise _list_options_invalid("resourceVersionMatch", "Forbidden: resourceVersionMatch is forbidden unless "
                                    "resourceVersion is provided")
    if request.query.get("continue"):
        raise _list_options_invalid("resourceVersionMatch", "Forbidden: resourceVersionMatch is forbidden when "
                                    "continue is provided")
    if match not in ("Exact", "NotOlderThan"):
        raise _list_options_invalid("resourceVersionMatch", f'Unsupported value: "{match}": supported values: '
                                    '"Exact", "NotOlderThan", ""')
    if match == "Exact" and request.query.get("resourceVersion") == "0":
        raise _list_options_invalid("resourceVersionMatch", 'Forbidden: resourceVersionMatch "exact" is forbidden '
                                    'for resourceVersion "0"')
    return match


def _send_initial_events(request: web.Request) -> bool | None:
    """A watch's ``sendInitialEvents`` (None: not given), checked with ``resourceVersionMatch``
    as Kubernetes checks them: the one requires the other set to NotOlderThan."""
    raw = request.query.get("sendInitialEvents")
    match = request.query.get("resourceVersionMatch", "")
    initial = None if raw is None else raw.lower() in ("1", "true")
    if raw is not None and raw.lower() not in ("0", "1", "true", "false"):
        raise _list_options_invalid("sendInitialEvents", f'Invalid value: "{raw}": must be true or false')
    if initial is not None and match != "NotOlderThan":
        raise _list_options_invalid("resourceVersionMatch",
                                    "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan")
    if match and initial is None:
        raise _list_options_invalid("resourceVersionMatch",
                                    "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents "
                                    "is provided")
    if match and match != "NotOlderThan":
        raise _list_options_invalid("resourceVersionMatch",
                                    f'Unsupported value: "{match}": supported values: "NotOlderThan"')
    if match and request.query.get("continue"):
        raise _list_options_invalid("resourceVersionMatch", "Forbidden: resourceVersionMatch is forbidden when "
                                    "continue is provided")
    return initial


def _refused(e: limits.InputError, what: str) -> Failure:
    if isinstance(e, limits.InputTooLarge):
        return Failure(413, "RequestEntityTooLarge", f"{what} is too large: {e}")
    return Failure(400, "BadRequest", f"{what} is not valid: {e}")


def _selector_text(selector: dict[str, Any]) -> str:
    return str(from_label_selector(msgspec.convert(selector, LabelSelector)))


def _int(value: str | None, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise Failure(400, "BadRequest", f'{name}: Invalid value: "{value}": must be an integer') from None


def _continue_token(namespace: str, name: str, rv: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"ns": namespace, "name": name, "rv": rv}).encode()).decode()


def _continue_key(token: str | None) -> tuple[str, str] | None:
    if not token:
        return None
    try:
        doc = limits.decode_json(base64.urlsafe_b64decode(token.encode()), what="continue token")
        return str(doc["ns"]), str(doc["name"])
    except (ValueError, KeyError, TypeError, limits.InputError):
        raise Failure(400, "BadRequest", "continue: Invalid value: the continue token is not valid") from None
