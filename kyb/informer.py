"""A watch cache of one kind: current values, then every change, into a local cache.

The informer reads the bucket's stream with its own ephemeral push consumer (no acks, flow
control, idle heartbeats): first the last value of every key (``DeliverLastPerSubject``),
then each later write. It remembers the stream sequence of the last message it applied, so
whenever anything goes wrong — a missed heartbeat, a consumer-sequence gap, a NATS restart
or reconnect — it makes a new consumer starting right after that sequence: nothing is missed,
and a per-key revision check drops anything seen twice.

Decoded objects are held once per process: informers of the same kind (every service of ``kyb
up`` has its own) share the object decoded from one stream message, and indexes and handlers
get that same object, never a copy. Objects are frozen and never modified in place (STYLE.md
#5), so sharing them is safe; the table holds them weakly and forgets one when no informer
caches it any more.

"Synced" is explicit: ``wait_synced()`` returns once the initial listing has been applied.
Handlers receive ``(event, new, old, headers)`` and should only enqueue keys (STYLE.md #2);
headers carry the writer's ``traceparent``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable

import msgspec
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NATS
from nats.js import api

from kyb import metrics
from kyb.store import decode, ensure_bucket, kind_info, split_key
from schemas.helpers import scoped_key
from schemas.meta import Object
from schemas.registry import KindInfo

log = structlog.get_logger("kyb.informer")

Handler = Callable[[str, Object | None, Object | None, dict[str, str]], None]
Indexer = Callable[[Object], Iterable[str]]

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"

# (bucket, key, stream sequence, hash of the message) -> the object decoded from it, while any
# informer of this process caches it. The hash keeps apart equal sequences of different servers.
_decoded: weakref.WeakValueDictionary[tuple[str, str, int, int], Object] = weakref.WeakValueDictionary()


def shared_decode(info: KindInfo, key: str, data: bytes, seq: int) -> Object:
    """The object stored at ``seq`` under ``key``: the one another informer of this process
    already decoded from the same message, or a newly decoded one."""
    ident = (info.bucket, key, seq, hash(data))
    obj = _decoded.get(ident)
    if obj is None:
        obj = decode(info, data, seq)
        _decoded[ident] = obj
    return obj


def by_owner_uid(obj: Object) -> list[str]:
    return [ref.uid for ref in obj.metadata.ownerReferences]


def by_node_name(obj: Object) -> list[str]:
    node = getattr(getattr(obj, "spec", None), "nodeName", None)
    return [node] if node else []


def by_label(key: str) -> Indexer:
    def index(obj: Object) -> list[str]:
        value = obj.metadata.labels.get(key)
        return [value] if value is not None else []

    return index


def by_namespace(obj: Object) -> list[str]:
    return [obj.metadata.namespace or ""]


class Informer:
    """See the module docstring."""

    def __init__(
        self,
        nc: NATS,
        kind: str | KindInfo,
        *,
        indexers: dict[str, Indexer] | None = None,
        heartbeat: float = 1.0,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.info = kind_info(kind)
        self.heartbeat = heartbeat
        self._indexers: dict[str, Indexer] = {"owner": by_owner_uid, "namespace": by_namespace, **(indexers or {})}
        self._indexes: dict[str, dict[str, set[str]]] = {name: defaultdict(set) for name in self._indexers}
        self._cache: dict[str, Object] = {}
        self._revs: dict[str, int] = {}
        self._handlers: list[Handler] = []
        self._last_seq = 0
        self._synced = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False
        self.restarts = 0  # how many times the consumer was remade (reconnects, gaps)
        self._lag = metrics.WATCH_LAG.labels(self.info.kind)

    # -- public ---------------------------------------------------------------------------

    def add_handler(self, fn: Handler) -> None:
        self._handlers.append(fn)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def start(self) -> None:
        await ensure_bucket(self.js, self.info)
        self._task = asyncio.create_task(self._run(), name=f"informer-{self.info.plural}")

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._synced.wait(), timeout)

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def get(self, key: str) -> Object | None:
        return self._cache.get(key)

    def get_by_name(self, namespace: str | None, name: str) -> Object | None:
        return self._cache.get(scoped_key(self.info.namespaced, namespace, name))

    def keys(self) -> list[str]:
        return list(self._cache)

    def list(self, namespace: str | None = None) -> list[Object]:
        if namespace is None:
            return list(self._cache.values())
        return [self._cache[k] for k in self._indexes["namespace"].get(namespace, ())]

    def by_index(self, index: str, value: str) -> list[Object]:
        return [self._cache[k] for k in self._indexes[index].get(value, ())]

    def __len__(self) -> int:
        return len(self._cache)

    # -- the consumer loop ----------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.05
        while not self._stopping:
            try:
                await self._consume()
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except _Restart as e:
                log.debug("informer restarting", kind=self.info.plural, why=str(e), after_seq=self._last_seq)
            except Exception as e:  # NATS down, JetStream not ready, ...
                log.debug("informer consumer failed", kind=self.info.plural, error=repr(e))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            self.restarts += 1

    async def _consume(self) -> None:
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, pending_msgs_limit=1_000_000, pending_bytes_limit=1 << 30)
        consumer_name: str | None = None
        try:
            if self._last_seq == 0:
                policy = {"deliver_policy": api.DeliverPolicy.LAST_PER_SUBJECT}
            else:
                policy = {"deliver_policy": api.DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": self._last_seq + 1}
            cfg = api.ConsumerConfig(
                deliver_subject=inbox,
                ack_policy=api.AckPolicy.NONE,
                flow_control=True,
                idle_heartbeat=self.heartbeat,
                filter_subject=f"$KV.{self.info.bucket}.>",
                mem_storage=True,
                inactive_threshold=max(5.0, self.heartbeat * 5),
                **policy,
            )
            ci = await self.js.add_consumer(f"KV_{self.info.bucket}", cfg)
            consumer_name = ci.name
            if ci.num_pending == 0 and not self.synced:
                self._synced.set()
            expected_dseq = 1
            me = asyncio.current_task()
            while True:
                try:
                    msg = await sub.next_msg(timeout=self.heartbeat * 3)
                except nats.errors.TimeoutError:
                    raise _Restart("no heartbeat") from None
                if self._stopping or (me is not None and me.cancelling()):
                    # next_msg's wait_for can swallow a cancellation (Python 3.11); without this
                    # check stop() would wait for ever on a watch that keeps delivering.
                    raise asyncio.CancelledError()
                headers = msg.headers or {}
                if msg.data == b"" and headers.get("Status") == "100":
                    if msg.reply:  # flow control request
                        await self.nc.publish(msg.reply, b"")
                    last = headers.get("Nats-Last-Consumer")
                    if last is not None and int(last) != expected_dseq - 1:
                        raise _Restart("heartbeat shows a gap")
                    continue
                md = msg.metadata
                if md.sequence.consumer != expected_dseq:
                    raise _Restart(f"consumer sequence {md.sequence.consumer} != {expected_dseq}")
                expected_dseq += 1
                self._apply(msg.subject, msg.data, headers, md.sequence.stream)
                self._last_seq = md.sequence.stream
                if self.synced and md.timestamp is not None:
                    self._lag.observe(max(0.0, time.time() - md.timestamp.timestamp()))
                if md.num_pending == 0 and not self.synced:
                    self._synced.set()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if consumer_name is not None and self.nc.is_connected and not self._stopping:
                # Best effort and bounded: the server drops it after inactive_threshold anyway.
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(self.js.delete_consumer(f"KV_{self.info.bucket}", consumer_name), 0.5)

    # -- cache ----------------------------------------------------------------------------

    def _apply(self, subject: str, data: bytes, headers: dict[str, str], seq: int) -> None:
        key = subject[len(self.info.bucket) + 5 :]  # "$KV.<bucket>."
        if seq <= self._revs.get(key, 0):
            return  # seen already
        op = headers.get("KV-Operation")
        marker = headers.get("Nats-Marker-Reason")
        old = self._cache.get(key)
        if op in ("DEL", "PURGE") or marker in ("MaxAge", "Purge", "Remove"):
            self._revs[key] = seq
            if old is None:
                return
            del self._cache[key]
            self._unindex(key, old)
            self._emit(DELETED, None, old, headers)
            return
        try:
            obj = shared_decode(self.info, key, data, seq)
        except msgspec.DecodeError as e:
            ns, name = split_key(key)
            log.warning("undecodable object skipped", kind=self.info.plural, namespace=ns, name=name, error=str(e))
            self._revs[key] = seq
            return
        self._revs[key] = seq
        if old is not None:
            self._unindex(key, old)
        self._cache[key] = obj
        self._index(key, obj)
        self._emit(MODIFIED if old is not None else ADDED, obj, old, headers)

    def _index(self, key: str, obj: Object) -> None:
        for name, fn in self._indexers.items():
            for value in fn(obj):
                self._indexes[name][value].add(key)

    def _unindex(self, key: str, obj: Object) -> None:
        for name, fn in self._indexers.items():
            idx = self._indexes[name]
            for value in fn(obj):
                keys = idx.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del idx[value]

    def _emit(self, event: str, new: Object | None, old: Object | None, headers: dict[str, str]) -> None:
        for fn in self._handlers:
            try:
                fn(event, new, old, headers)
            except Exception:
                log.exception("informer handler failed", kind=self.info.plural)



async def start_all(informers: Iterable[Informer], timeout: float | None = 30) -> None:
    """Start every informer, then wait until each holds its initial list (all are started
    before the first wait, so their listings overlap)."""
    informers = list(informers)
    for inf in informers:
        await inf.start()
    for inf in informers:
        await inf.wait_synced(timeout)


async def stop_all(informers: Iterable[Informer]) -> None:
    for inf in informers:
        await inf.stop()


class _Restart(Exception):
    """Make a new consumer after the last applied sequence."""
