"""Typed, compare-and-set access to the object buckets.

One JetStream KV bucket per kind (``kyb-<plural>``), key ``<namespace>.<name>`` (``_.<name>``
for cluster-scoped kinds), value the whole object as msgspec JSON. ``metadata.resourceVersion``
is the KV revision (the stream sequence of the write) and every write names the revision it
read through ``Nats-Expected-Last-Subject-Sequence``: create = "must not exist", update and
delete = "the last revision must be N". Writes are published straight to ``$KV.<bucket>.<key>``
so they carry headers (the W3C ``traceparent`` of the writer) to whoever watches.

NATS exceptions become :mod:`kyb.errors` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import random
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, NoReturn

import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from kyb import buckets, bus, deletion, errors, events, metrics, secretbox, telemetry
from kyb.requester import Requester
from schemas.core import ServiceAccount
from schemas.defaults import with_scheduling_gated, with_service_account
from schemas.helpers import scoped_key, split_key
from schemas.limitrange import LimitRange, LimitRefused, with_limits
from schemas.meta import Object, ObjectMeta
from schemas.names import generated_name
from schemas.pod import Pod
from schemas.quota import QuotaRefused, ResourceQuota, charge, quotas_for
from schemas.registry import KindInfo, UnknownKind, all_kinds, by_kind, resolve
from schemas.scheduling import PriorityClass, PriorityRefused, global_default, with_priority
from schemas.serviceaccount import ROOT_CA_CONFIGMAP, SUFFIX_ALPHABET, wants_token, with_api_access

EVENTS_STREAM = events.EVENTS_STREAM
events_subject = events.events_subject  # kept here for the modules that read events
WRONG_LAST_SEQUENCE = 10071
DELETE_ATTEMPTS = 20  # a delete without a precondition, against writers that keep changing the object
STREAM_NOT_FOUND = 10059

_encoder = msgspec.json.Encoder()


def kind_info(kind: str | KindInfo) -> KindInfo:
    if isinstance(kind, KindInfo):
        return kind
    try:
        return by_kind(kind)
    except UnknownKind:
        try:
            return resolve(kind)
        except UnknownKind as e:
            raise errors.BadRequest(str(e)) from None


def key_of(info: KindInfo, namespace: str | None, name: str) -> str:
    if not name:
        raise errors.Invalid("name is required", [errors.FieldError("metadata.name", "Required value")])
    return scoped_key(info.namespaced, namespace, name)


_stamp: tuple[int, str] = (-1, "")
# Seconds a store trusts the objects admission reads (PriorityClasses, LimitRanges,
# ResourceQuotas) before it asks whether they changed (one stream-info request); its own writes
# of them reset them at once.
ADMISSION_FRESH = 1.0
# A quota charge's own write: it changes status.used only, so the quotas a KindCache holds stay
# good (the charge reads each quota afresh) and the cache moves past it instead of re-listing.
_CHARGE_WRITE: contextvars.ContextVar[bool] = contextvars.ContextVar("kyb_charge_write", default=False)
# The kinds every new pod's admission reads (Priority, LimitRanger, quotas), each through a KindCache.
ADMISSION_KINDS = ("PriorityClass", "LimitRange", "ResourceQuota", "ServiceAccount")
ROOT_CA_FRESH = 5.0  # seconds a namespace's kube-root-ca.crt, found or not, is taken as read


def now_rfc3339(now: datetime | None = None) -> str:
    """``now`` (default: the current time) to the second, as Kubernetes writes timestamps."""
    global _stamp
    if now is None:
        second = int(time.time())
    else:
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        second = int(now.timestamp())
    if _stamp[0] != second:  # formatted once a second, not once per write
        _stamp = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return _stamp[1]


def new_uid() -> str:
    """A random (version 4) UUID as text, as ``str(uuid.uuid4())`` gives, without the UUID object."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def with_revision(obj: Object, revision: int) -> Object:
    return msgspec.structs.replace(obj, metadata=msgspec.structs.replace(obj.metadata, resourceVersion=str(revision)))


def encode(obj: Object) -> bytes:
    """The stored form: the object without its resourceVersion (the KV revision is the truth)."""
    if obj.metadata.resourceVersion is not None:
        obj = msgspec.structs.replace(obj, metadata=msgspec.structs.replace(obj.metadata, resourceVersion=None))
    if obj.kind == "Secret":
        obj = secretbox.seal_object(obj)  # encryption at rest, when a key is configured
    return _encoder.encode(obj)


def decode(info: KindInfo, data: bytes, revision: int) -> Object:
    obj = msgspec.json.decode(data, type=info.type)
    if info.kind == "Secret":
        obj = secretbox.open_object(obj)
    return with_revision(obj, revision)


def spec_of(obj: Object) -> Any:
    """What generation tracks: spec, or everything but metadata and status for kinds without one.

    Compared by value (``==``), never by encoded bytes: the encoding leaves out fields equal to
    their defaults only when they are the very default object, so equal objects decoded along
    different paths (a manifest, a rendered object sent back) may encode differently."""
    if hasattr(obj, "spec"):
        return obj.spec
    return {f: getattr(obj, f) for f in obj.__struct_fields__ if f not in ("metadata", "status", "apiVersion", "kind")}


_tracer = trace.get_tracer("kyb.store")
_kv_timers: dict[tuple[str, str], Any] = {}


def _kv_seconds(bucket: str, op: str) -> Any:
    """The KV latency histogram of one bucket and operation (labels looked up once)."""
    timer = _kv_timers.get((bucket, op))
    if timer is None:
        timer = _kv_timers[(bucket, op)] = metrics.KV_SECONDS.labels(bucket, op)
    return timer


def _write_attributes(info: KindInfo, key: str, op: str) -> dict[str, str]:
    ns, name = split_key(key)
    return {"kyb.kind": info.kind, "kyb.namespace": ns or "", "kyb.name": name, "kyb.op": op}


def _trace_headers() -> dict[str, str]:
    """The current trace context as headers; nothing (and no work) outside a trace."""
    if not trace.get_current_span().get_span_context().is_valid:
        return {}
    return telemetry.inject({})


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    """JetStream's reply to a publish: the stream sequence, or an error."""

    seq: int = 0
    error: _ApiError | None = None


_decode_ack = msgspec.json.Decoder(_PubAck).decode


class KindCache:
    """Every object of one kind as a store last listed it, for what admission reads on every new
    pod. Concurrent readers share one listing (a pod created while one is in flight sees the
    objects as of that read, one round trip old at most), and the kind is listed again only when
    its stream has moved since the last listing, asked at most every ``ADMISSION_FRESH``
    seconds: one stream-info request per wave of new pods otherwise."""

    def __init__(self, store: Store, kind: str) -> None:
        self.store, self.kind = store, kind
        self._objects: tuple[int, list[Object]] | None = None  # (stream's last sequence, objects)
        self._checked = 0.0  # monotonic time the objects were last found current
        self._read: asyncio.Future[list[Object]] | None = None  # the read in flight

    @property
    def seen(self) -> bool:
        return self._objects is not None

    def forget(self) -> None:
        self._objects = None

    def written(self, revision: int) -> None:
        """This process wrote ``revision`` of the kind's stream and nothing the cache holds was
        changed by it: a cache current just before it stays current."""
        if self._objects is not None and self._objects[0] == revision - 1:
            self._objects = (revision, self._objects[1])

    async def get(self) -> list[Object]:
        while (pending := self._read) is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # we are the one cancelled
                # the reader was cancelled: read ourselves
        read: asyncio.Future[list[Object]] = asyncio.get_running_loop().create_future()
        self._read = read
        try:
            objects = await self._fetch()
        except Exception as e:
            read.set_exception(e)
            read.exception()  # retrieved: the waiters, if any, raise it too
            raise
        except BaseException:
            read.cancel()
            raise
        finally:
            self._read = None
        read.set_result(objects)
        return objects

    async def _fetch(self) -> list[Object]:
        now = time.monotonic()
        if self._objects is not None and now - self._checked < ADMISSION_FRESH:
            return self._objects[1]
        info = by_kind(self.kind)
        await self.store._bucket(info)
        try:
            last = (await self.store.js.stream_info(f"KV_{info.bucket}")).state.last_seq
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.Error) as e:
            raise errors.Temporary(f"reading {info.plural}: {type(e).__name__}", delay=0.5) from e
        self._checked = now
        if self._objects is not None and self._objects[0] == last:
            return self._objects[1]
        objects = await self.store.list(info)
        self._objects = (last, objects)
        return objects


class Store:
    """CAS reads and writes of typed objects; see the module docstring."""

    def __init__(self, js: JetStreamContext, *, replicas: int = 1, clock: Callable[[], datetime] | None = None) -> None:
        self.js = js
        self.replicas = replicas
        self.clock = clock or (lambda: datetime.now(UTC))
        self._given_clock = clock
        self._kv: dict[str, KeyValue] = {}
        self._ensured: set[str] = set()
        # Writes go out as plain requests on the context's connection, within its timeout.
        self._nc = js._nc
        self._requests = Requester(self._nc)
        self._timeout = float(js._timeout)
        self._admission = {kind: KindCache(self, kind) for kind in ADMISSION_KINDS}
        self._root_ca: dict[str, tuple[float, bool]] = {}  # namespace -> (when read, kube-root-ca.crt there)
        # new pods waiting to be charged to their namespace's quotas, and the task charging them
        self._quota_waiting: dict[str, list[tuple[Object, asyncio.Future[None]]]] = {}
        self._quota_chargers: dict[str, asyncio.Task[None]] = {}

    def _now(self) -> str:
        """Now as Kubernetes writes it: from the clock given, else the system's (no datetime made)."""
        return now_rfc3339(self._given_clock() if self._given_clock is not None else None)

    # -- buckets ---------------------------------------------------------------------------

    async def ensure_buckets(self, kinds: Iterable[KindInfo] | None = None) -> None:
        for info in kinds if kinds is not None else all_kinds():
            await self._bucket(info)
        await self.ensure_events_stream()

    async def ensure_events_stream(self) -> None:
        if EVENTS_STREAM in self._ensured:
            return
        # Looked at before created: a restricted component may read the stream's info but not
        # create or change it, and it must not stall on a request it may not make.
        await buckets.ensure_stream(self.js, events.stream_config(self.replicas))
        self._ensured.add(EVENTS_STREAM)

    async def _bucket(self, info: KindInfo) -> KeyValue:
        kv = self._kv.get(info.bucket)
        if kv is not None:
            return kv
        kv = await ensure_bucket(self.js, info, replicas=self.replicas)
        self._kv[info.bucket] = kv
        return kv

    # -- reads -----------------------------------------------------------------------------

    async def get(self, kind: str | KindInfo, namespace: str | None, name: str) -> Object:
        info = kind_info(kind)
        kv = await self._bucket(info)
        key = key_of(info, namespace, name)
        try:
            with _kv_seconds(info.bucket, "get").time():
                entry = await kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            raise errors.NotFound(f'{info.plural} "{name}" not found') from None
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as e:
            raise errors.Temporary(f"reading {info.plural} {key}: {type(e).__name__}", delay=0.5) from e
        return decode(info, entry.value, entry.revision)

    async def list(self, kind: str | KindInfo, namespace: str | None = None, selector: Any = None) -> list[Object]:
        info = kind_info(kind)
        kv = await self._bucket(info)
        pattern = f"{namespace}.>" if (namespace and info.namespaced) else ">"
        for attempt in range(8):
            try:
                out, seen = await self._snapshot(info, kv, pattern)
                # A listing taken while a clustered stream elects a new leader can come back
                # short; the stream's own count of keys (deleted ones included) tells.
                expected = await self._key_count(info, pattern)
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.Error) as e:
                if attempt == 7:
                    raise errors.Temporary(f"listing {info.plural}: {type(e).__name__}") from e
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
                continue
            if expected is None or seen >= expected:
                break
            if attempt == 7:
                raise errors.Temporary(f"listing {info.plural}: saw {seen} of {expected} keys")
            await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
        if selector is not None:
            out = [o for o in out if selector.matches(o.metadata.labels)]
        out.sort(key=lambda o: (o.metadata.namespace or "", o.metadata.name))
        return out

    async def _snapshot(self, info: KindInfo, kv: KeyValue, pattern: str) -> tuple[list[Object], int]:
        """The live objects under ``pattern`` and how many keys (deleted ones too) were seen."""
        out: list[Object] = []
        seen = 0
        watcher = await kv.watch(pattern)
        me = asyncio.current_task()
        try:
            while True:
                entry = await watcher.updates(timeout=10)
                if me is not None and me.cancelling():
                    # nats-py's wait_for can swallow a cancellation (Python 3.11): honour it.
                    raise asyncio.CancelledError()
                if entry is None:
                    break
                seen += 1
                if entry.operation is not None:
                    continue
                out.append(decode(info, entry.value, entry.revision))
        finally:
            await watcher.stop()
        return out, seen

    async def _key_count(self, info: KindInfo, pattern: str) -> int | None:
        """Keys under ``pattern`` the stream holds now (None when it does not say)."""
        return await bus.key_count(self.js, f"KV_{info.bucket}", f"$KV.{info.bucket}.{pattern}")

    # -- writes ----------------------------------------------------------------------------

    async def _publish(self, info: KindInfo, key: str, payload: bytes, expected: int, extra: dict[str, str] | None = None) -> int:
        await self._bucket(info)
        if info.kind in self._admission and not _CHARGE_WRITE.get():
            self._admission[info.kind].forget()  # this process sees its own writes at its next pod
        op = "delete" if (extra or {}).get("KV-Operation") == "DEL" else ("create" if expected == 0 else "update")
        # Inside a trace, the write is a span of its own naming the object, so `kyb trace`
        # can find the traces that touched an object; watchers continue from this span.
        span = (
            _tracer.start_as_current_span(f"kv.{op} {info.plural}", kind=SpanKind.PRODUCER, attributes=_write_attributes(info, key, op))
            if trace.get_current_span().is_recording()
            else contextlib.nullcontext()
        )
        with span, _kv_seconds(info.bucket, op).time():
            return await self._publish_now(info, key, payload, expected, op, extra)

    async def _publish_now(
        self, info: KindInfo, key: str, payload: bytes, expected: int, op: str, extra: dict[str, str] | None
    ) -> int:
        headers = {"Nats-Expected-Last-Subject-Sequence": str(expected), **_trace_headers(), **(extra or {})}
        subject = f"$KV.{info.bucket}.{key}"
        # A plain request rather than JetStreamContext.publish: the same message, with the
        # acknowledgement decoded by msgspec (the hot path of every write).
        try:
            msg = await self._requests.request(subject, payload, self._timeout, headers)
            ack = _decode_ack(msg.data) if msg.data else _PubAck()
        except nats.errors.MaxPayloadError as e:
            raise errors.TooLarge(f"{info.plural} {key}: object too large to store") from e
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as e:
            # No stream answered (a clustered stream electing a new leader, a reconnect):
            # retry soon rather than with a growing back-off.
            raise errors.Temporary(f"writing {info.plural} {key}: {type(e).__name__}", delay=0.5) from e
        except msgspec.DecodeError as e:
            raise errors.Permanent(f"writing {info.plural} {key}: undecodable acknowledgement: {e}") from e
        if ack.error is not None:
            self._write_failed(info, key, op, ack.error.code, ack.error.err_code, ack.error.description)
        if ack.seq <= 0:
            raise errors.Temporary(f"writing {info.plural} {key}: no acknowledgement from the stream", delay=0.5)
        return ack.seq

    def _write_failed(self, info: KindInfo, key: str, op: str, code: int, err_code: int, description: str) -> NoReturn:
        if err_code == WRONG_LAST_SEQUENCE:
            metrics.CONFLICTS.labels(info.bucket, op).inc()
            raise errors.Conflict(
                f'Operation cannot be fulfilled on {info.plural} "{split_key(key)[1]}": '
                "the object has been modified; please apply your changes to the latest version and try again"
            )
        if code == 503:  # JetStream unavailable for now (a stream electing its leader)
            raise errors.Temporary(f"writing {info.plural} {key}: {description or code}", delay=0.5)
        raise errors.Permanent(f"writing {info.plural} {key}: {description or code} (code {code}, err_code {err_code})")

    async def create(self, obj: Object) -> Object:
        info = kind_info(obj.kind)
        meta = obj.metadata
        if meta.name == "" and meta.generateName:
            for _ in range(8):  # a clash of the random suffix: draw again, as Kubernetes does
                named = msgspec.structs.replace(obj, metadata=msgspec.structs.replace(meta, name=generated_name(meta.generateName)))
                try:
                    return await self.create(named)
                except errors.AlreadyExists:
                    continue
            raise errors.AlreadyExists(f'{info.plural}: no free name for generateName "{meta.generateName}"')
        if info.namespaced and not meta.namespace:
            meta = msgspec.structs.replace(meta, namespace="default")
        if not info.namespaced and meta.namespace:
            meta = msgspec.structs.replace(meta, namespace=None)
        meta = msgspec.structs.replace(
            meta,
            uid=new_uid(),
            creationTimestamp=self._now(),
            generation=1,
            resourceVersion=None,
            deletionTimestamp=None,
        )
        obj = msgspec.structs.replace(obj, apiVersion=obj.apiVersion or info.api_version, kind=info.kind, metadata=meta)
        if isinstance(obj, Pod):  # what admission gives every new pod, also a controller's
            obj = await self.admit_pod(with_scheduling_gated(await self.with_api_access(with_service_account(obj))))
        if info.namespaced:
            await self.charge_quotas(obj)
        key = key_of(info, meta.namespace, meta.name)
        payload = encode(obj)
        try:
            rev = await self._publish(info, key, payload, 0)
        except errors.Conflict:
            # The key may hold a delete marker: then "must not exist" means "last is that marker".
            kv = await self._bucket(info)
            try:
                await kv.get(key)
            except nats.js.errors.KeyNotFoundError as missing:
                marker = getattr(missing, "entry", None)
                if marker is None:
                    raise errors.Temporary(f"{info.plural} {key}: create raced with a purge", delay=0.05) from None
                try:
                    rev = await self._publish(info, key, payload, marker.revision)
                except errors.Conflict:
                    raise self._exists(info, meta.name) from None
            else:
                raise self._exists(info, meta.name) from None
        return with_revision(obj, rev)

    async def with_api_access(self, pod: Pod) -> Pod:
        """Kubernetes' ServiceAccount admission mounting the API credentials
        (``schemas.serviceaccount``) on a new pod, where the cluster issues them: the pod's
        namespace holds ConfigMap ``kube-root-ca.crt``, which the api publishes when it has the
        apiserver's CA (read at most every ``ROOT_CA_FRESH`` seconds per namespace). The
        ServiceAccount comes from the admission cache; a pod whose account does not exist gets
        no credentials (Kubernetes refuses it)."""
        if pod.spec.automountServiceAccountToken is False:
            return pod
        namespace = pod.metadata.namespace or "default"
        seen = self._root_ca.get(namespace)
        now = time.monotonic()
        if seen is None or now - seen[0] > ROOT_CA_FRESH:
            try:
                await self.get("ConfigMap", namespace, ROOT_CA_CONFIGMAP)
                found = True
            except errors.NotFound:
                found = False
            seen = self._root_ca[namespace] = (now, found)
        if not seen[1]:
            return pod
        account = next((sa for sa in await self._admission["ServiceAccount"].get()
                        if sa.metadata.namespace == namespace and sa.metadata.name == pod.spec.serviceAccountName), None)
        if account is None or not wants_token(pod, account if isinstance(account, ServiceAccount) else None):
            return pod
        return with_api_access(pod, "".join(random.choice(SUFFIX_ALPHABET) for _ in range(5)))

    async def admit_pod(self, pod: Pod) -> Pod:
        """What admission does to every new pod, from a manifest or a controller: Kubernetes'
        Priority admission (``schemas.scheduling.with_priority``) and LimitRanger
        (``schemas.limitrange.with_limits``), against the PriorityClasses and LimitRanges as this
        store last saw them (at most ``ADMISSION_FRESH`` seconds ago, its own writes of
        them always; as Kubernetes' admission reads an informer's cache); a class named but not
        seen is read afresh before the pod is refused. Forbidden naming the field it refuses
        (Invalid when LimitRanger's defaults leave a request above its limit)."""
        name = pod.metadata.name or pod.metadata.generateName or ""
        classes_cache = self._admission["PriorityClass"]
        classes = [c for c in await classes_cache.get() if isinstance(c, PriorityClass)]
        wanted = pod.spec.priorityClassName
        named = next((c for c in classes if c.metadata.name == wanted), None) if wanted else None
        if wanted and named is None and classes_cache.seen:
            classes_cache.forget()  # made since the last look, perhaps by another process
            classes = [c for c in await classes_cache.get() if isinstance(c, PriorityClass)]
            named = next((c for c in classes if c.metadata.name == wanted), None)
        try:
            pod = with_priority(pod, named, global_default(classes))
        except PriorityRefused as e:
            raise errors.Forbidden(f'pods "{name}" is forbidden: {e.message}', [errors.FieldError(e.field, e.message)]) from None
        namespace = pod.metadata.namespace or "default"
        ranges = [r for r in await self._admission["LimitRange"].get()
                  if isinstance(r, LimitRange) and r.metadata.namespace == namespace]
        try:
            return with_limits(pod, ranges)
        except LimitRefused as e:
            details = [errors.FieldError(f, m) for f, m in e.problems]
            if not e.forbidden:
                joined = ", ".join(f"{f}: {m}" for f, m in e.problems)
                raise errors.Invalid(f'Pod "{name}" is invalid: {joined}', details) from None
            joined = e.problems[0][1] if len(e.problems) == 1 else "[" + ", ".join(m for _, m in e.problems) + "]"
            raise errors.Forbidden(f'pods "{name}" is forbidden: {joined}', details) from None

    async def charge_quotas(self, obj: Object) -> None:
        """Kubernetes' ResourceQuota admission of a new object: charge it to each quota of its
        namespace that limits it (a pod's count and compute, another kind's count:
        ``schemas.quota.charge``) by a compare-and-set of
        the quota's ``status.used`` at the revision read, so concurrent creates (on any path, in
        any process) cannot together pass ``hard``: a conflict re-reads and recomputes. As
        Kubernetes' quota evaluator does, the creates waiting in this process for one namespace
        are charged together, one quota write per round for all of them. Forbidden, naming the
        quota's resource, when one would be exceeded. The quotas a process knows are at most
        ``ADMISSION_FRESH`` seconds old."""
        namespace = obj.metadata.namespace or "default"
        if not quotas_for(await self._admission["ResourceQuota"].get(), namespace, obj.kind):
            return
        decided: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._quota_waiting.setdefault(namespace, []).append((obj, decided))
        if namespace not in self._quota_chargers:
            self._quota_chargers[namespace] = asyncio.create_task(self._charge_rounds(namespace))
        await decided

    async def _charge_rounds(self, namespace: str) -> None:
        """Charge the waiting creates of ``namespace`` round by round until none waits."""
        try:
            while batch := self._quota_waiting.pop(namespace, None):
                try:
                    refused = await self._charge_batch(namespace, [p for p, _ in batch])
                except Exception as e:
                    refused = dict.fromkeys(range(len(batch)), e)
                for i, (_, decided) in enumerate(batch):
                    if decided.done():
                        continue  # its create was cancelled meanwhile
                    if i in refused:
                        decided.set_exception(refused[i])
                    else:
                        decided.set_result(None)
        finally:
            self._quota_chargers.pop(namespace, None)
            for _, decided in self._quota_waiting.pop(namespace, []):
                if not decided.done():
                    decided.set_exception(errors.Temporary("quota admission stopped", delay=0.1))

    async def _charge_batch(self, namespace: str, objs: list[Object]) -> dict[int, Exception]:
        """Charge ``objs`` in order to each quota of ``namespace``; the ones refused, by index."""
        refused: dict[int, Exception] = {}
        info = by_kind("ResourceQuota")
        known_quotas = await self._admission["ResourceQuota"].get()
        kinds = {o.kind for o in objs}
        names = sorted({q.metadata.name for kind in kinds for q in quotas_for(known_quotas, namespace, kind)})
        for quota_name in names:
            for _ in range(60):
                try:
                    quota = await self.get(info, namespace, quota_name)
                except errors.NotFound:
                    break
                if not isinstance(quota, ResourceQuota):
                    break
                charged, here = quota, {}
                for i, obj in enumerate(objs):
                    if i in refused:
                        continue
                    try:
                        used = charge(charged, obj)
                    except QuotaRefused as e:
                        name = obj.metadata.name or obj.metadata.generateName or ""
                        plural = kind_info(obj.kind).plural
                        here[i] = errors.Forbidden(f'{plural} "{name}" is forbidden: {e.message}',
                                                   [errors.FieldError(e.field, e.message)])
                        continue
                    if used is not None:
                        charged = msgspec.structs.replace(charged, status=msgspec.structs.replace(charged.status,
                                                                                                  used=used))
                if charged is not quota:
                    token = _CHARGE_WRITE.set(True)
                    try:
                        written = await self.update(charged, current=quota)
                    except errors.Conflict:
                        await asyncio.sleep(random.uniform(0, 0.01))
                        continue
                    finally:
                        _CHARGE_WRITE.reset(token)
                    self._admission["ResourceQuota"].written(int(written.metadata.resourceVersion or 0))
                refused.update(here)
                break
            else:
                busy = errors.Conflict(f'resourcequotas "{quota_name}": too many concurrent charges, try again')
                refused.update({i: busy for i in range(len(objs)) if i not in refused})
        return refused

    @staticmethod
    def _exists(info: KindInfo, name: str) -> errors.AlreadyExists:
        return errors.AlreadyExists(f'{info.plural} "{name}" already exists')

    async def update(self, obj: Object, *, current: Object | None = None) -> Object:
        """Write ``obj`` at the revision it carries. ``current`` (the stored object at that
        revision) saves a read when the caller has it."""
        info = kind_info(obj.kind)
        meta = obj.metadata
        if meta.resourceVersion is None:
            raise errors.Invalid(
                f'{info.plural} "{meta.name}": an update must name the resourceVersion it read',
                [errors.FieldError("metadata.resourceVersion", "Required value for an update")],
            )
        if current is None:
            current = await self.get(info, meta.namespace, meta.name)
        if current.metadata.resourceVersion != meta.resourceVersion:
            metrics.CONFLICTS.labels(info.bucket, "update").inc()
            raise errors.Conflict(
                f'Operation cannot be fulfilled on {info.plural} "{meta.name}": '
                "the object has been modified; please apply your changes to the latest version and try again"
            )
        cur = current.metadata
        generation = cur.generation or 1
        if spec_of(obj) != spec_of(current):
            generation += 1
        meta = msgspec.structs.replace(
            meta,
            namespace=cur.namespace,
            uid=cur.uid,
            creationTimestamp=cur.creationTimestamp,
            generation=generation,
            deletionTimestamp=cur.deletionTimestamp or meta.deletionTimestamp,
            deletionGracePeriodSeconds=cur.deletionGracePeriodSeconds
            if cur.deletionTimestamp
            else meta.deletionGracePeriodSeconds,
        )
        obj = msgspec.structs.replace(obj, apiVersion=obj.apiVersion or current.apiVersion, kind=info.kind, metadata=meta)
        key = key_of(info, meta.namespace, meta.name)
        if meta.deletionTimestamp and not meta.finalizers and not deletion.held_for_graceful_removal(info.kind, obj):
            # The last finalizer went: the object goes.
            await self._remove(info, key, int(meta.resourceVersion))
            return obj
        rev = await self._publish(info, key, encode(obj), int(meta.resourceVersion))
        return with_revision(obj, rev)

    async def delete(
        self,
        kind: str | KindInfo,
        namespace: str | None,
        name: str,
        *,
        resource_version: str | None = None,
        grace_period_seconds: int | None = None,
        add_finalizers: Iterable[str] = (),
    ) -> Object:
        """Delete, Kubernetes style: an object with finalizers (or a pod still running on a
        node, unless the grace period is 0) is only marked with deletionTimestamp; otherwise
        it is removed at the revision read. Returns the object as last stored.

        Without a ``resource_version`` precondition a write that lost to another writer (a
        controller updating the status meanwhile) is retried on a fresh read, as Kubernetes'
        apiserver does; with one, the conflict is the answer."""
        info = kind_info(kind)
        add_finalizers = tuple(add_finalizers)
        for attempt in range(DELETE_ATTEMPTS):
            try:
                return await self._delete_once(info, namespace, name, resource_version, grace_period_seconds,
                                               add_finalizers)
            except errors.Conflict:
                if resource_version is not None or attempt == DELETE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(random.uniform(0, min(0.002 * 2**attempt, 0.2)))
        raise AssertionError("unreachable")

    async def _delete_once(
        self,
        info: KindInfo,
        namespace: str | None,
        name: str,
        resource_version: str | None,
        grace_period_seconds: int | None,
        add_finalizers: Iterable[str],
    ) -> Object:
        current = await self.get(info, namespace, name)
        if resource_version is not None and current.metadata.resourceVersion != resource_version:
            raise errors.Conflict(
                f'Precondition failed for {info.plural} "{name}": resourceVersion {resource_version} '
                f"is not the latest ({current.metadata.resourceVersion})"
            )
        meta = current.metadata
        key = key_of(info, meta.namespace, meta.name)
        outcome = deletion.decide(info.kind, current, grace_period_seconds, add_finalizers, self._now())
        if outcome.unchanged:
            return current  # already marked
        if outcome.marked is not None:
            rev = await self._publish(info, key, encode(outcome.marked), int(meta.resourceVersion))
            return with_revision(outcome.marked, rev)
        await self._remove(info, key, int(meta.resourceVersion))
        return current

    async def _remove(self, info: KindInfo, key: str, revision: int) -> None:
        await self._publish(info, key, b"", revision, {"KV-Operation": "DEL"})

    async def mutate(
        self,
        kind: str | KindInfo,
        namespace: str | None,
        name: str,
        fn: Callable[[Object], Object | None],
        *,
        attempts: int = 60,
    ) -> Object:
        """Read, apply ``fn``, write at the revision read; on Conflict re-read and recompute."""
        info = kind_info(kind)
        for attempt in range(attempts):
            current = await self.get(info, namespace, name)
            new = fn(current)
            if new is None:
                return current
            try:
                return await self.update(new, current=current)
            except errors.Conflict:
                await asyncio.sleep(random.uniform(0, min(0.002 * 2**attempt, 0.2)))
        raise errors.Conflict(f'{info.plural} "{name}": still conflicting after {attempts} attempts')

    # -- events ----------------------------------------------------------------------------

    async def record_event(
        self,
        obj: Object,
        reason: str,
        message: str,
        type: str = "Normal",
        source: str = "",
        *,
        nc: Any = None,
    ) -> None:
        """Publish a v1 Event about ``obj`` on kyb.events.<ns>.<kind>.<name> (kept in KYB_EVENTS)."""
        await self.ensure_events_stream()
        event = events.event_object(obj, reason, message, type, source, self._now())
        subject = events.events_subject(obj.metadata.namespace, obj.kind, obj.metadata.name)
        payload = _encoder.encode(event)
        if nc is not None:
            await nc.publish(subject, payload, headers=_trace_headers() or None)
            return
        try:
            await self.js.publish(subject, payload, headers=_trace_headers() or None)
        except (nats.errors.Error, nats.js.errors.Error):
            pass  # events are best effort


async def ensure_bucket(js: JetStreamContext, info: KindInfo, *, replicas: int = 1) -> KeyValue:
    """The kind's bucket, created (file storage, one revision kept, direct gets) if missing."""
    return await buckets.ensure_kv(js, info.bucket, replicas=replicas)


def empty_meta(name: str, namespace: str | None = None) -> ObjectMeta:
    return ObjectMeta(name=name, namespace=namespace)
