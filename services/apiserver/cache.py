"""The apiserver's watch cache: one informer per kind, started on first use, plus a bounded
history of its changes, each with the stream sequence (the resourceVersion) it was written at.

A list is the informer's cache at the sequence it has applied; a plain list (no
resourceVersion) first waits until the informer has applied everything the stream held when
the request came (a consistent read, as Kubernetes serves them from its watch cache). A
watch from resourceVersion R replays the kept changes after R and then follows the live
ones; the replay and the registration happen in one step of the event loop, so a watcher
neither misses nor duplicates a change. R older than what is kept is 410 Gone.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from dataclasses import dataclass, field

from nats.aio.client import Client as NATS

from kyb import errors
from kyb.informer import ADDED, DELETED, MODIFIED, Informer
from kyb.store import with_revision
from schemas.meta import Object
from schemas.registry import KindInfo

HISTORY = 10_000  # changes kept per kind
QUEUE = 100_000  # changes a watcher may fall behind before it is closed


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    type: str  # ADDED | MODIFIED | DELETED
    obj: Object
    old: Object | None
    # the watch event as sent, by event type (a selector may show a MODIFIED as ADDED or
    # DELETED): encoded by the first watcher that sends it, reused by the others
    encoded: dict[str | tuple[str, str], bytes] = field(default_factory=dict, compare=False)


class Expired(errors.KybError):
    code = 410
    reason = "Expired"


class _SequencedInformer(Informer):
    """An informer that knows the stream sequence of the change it is emitting."""

    current_seq = 0

    def _apply(self, subject: str, data: bytes, headers: dict[str, str], seq: int) -> None:
        self.current_seq = seq
        super()._apply(subject, data, headers, seq)

    @property
    def applied(self) -> int:
        return max(self._last_seq, self.current_seq)


class Watcher:
    """The changes one watch has yet to send, in order; None at the end marks it closed
    (the cache stopped, or the watch fell ``QUEUE`` changes behind)."""

    def __init__(self, kind: KindCache, namespace: str | None) -> None:
        self.kind = kind
        self.namespace = namespace  # only this namespace's changes are pushed (None: all)
        self.pending: collections.deque[Change | None] = collections.deque()
        self.overflowed = False
        self._waiter: asyncio.Future[None] | None = None

    def push(self, change: Change) -> None:
        if len(self.pending) >= QUEUE:
            self.overflowed = True
            self.end()
            return
        self.pending.append(change)
        self._wake()

    def end(self) -> None:
        self.pending.append(None)
        self.kind.watchers.discard(self)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, timeout: float) -> bool:
        """Whether a change (or the end) is pending, waiting up to ``timeout`` seconds for one.
        One future and one timer per wait: a busy kind wakes every watcher for every change."""
        if self.pending:
            return True
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, lambda: waiter.done() or waiter.set_result(None))
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        return bool(self.pending)

    def take(self, most: int) -> tuple[list[Change], bool]:
        """Up to ``most`` pending changes, and whether the watch has ended after them."""
        out: list[Change] = []
        while self.pending and len(out) < most:
            change = self.pending.popleft()
            if change is None:
                return out, True
            out.append(change)
        return out, False

    def close(self) -> None:
        self.kind.watchers.discard(self)


class KindCache:
    def __init__(self, nc: NATS, info: KindInfo) -> None:
        self.nc = nc
        self.info = info
        self.informer = _SequencedInformer(nc, info)
        self.history: collections.deque[Change] = collections.deque(maxlen=HISTORY)
        self.watchers: set[Watcher] = set()
        self.oldest = 0  # a watch from a sequence >= this one is served
        self.informer.add_handler(self._on_change)

    async def start(self, timeout: float) -> None:
        await self.informer.start()
        await self.informer.wait_synced(timeout)
        self.oldest = self.informer.applied

    def _on_change(self, event: str, new: Object | None, old: Object | None, _headers: dict[str, str]) -> None:
        if not self.informer.synced:
            return
        seq = self.informer.current_seq
        if event == DELETED:
            assert old is not None
            change = Change(seq, DELETED, with_revision(old, seq), old)
        else:
            assert new is not None
            change = Change(seq, ADDED if event == ADDED else MODIFIED, new, old)
        if len(self.history) == self.history.maxlen:
            self.oldest = self.history[0].seq
        self.history.append(change)
        ns = change.obj.metadata.namespace
        for w in list(self.watchers):
            if w.namespace is None or w.namespace == ns:
                w.push(change)

    @property
    def revision(self) -> int:
        return self.informer.applied

    async def consistent(self, js, timeout: float = 5.0) -> None:
        """Wait until the informer has applied every write the stream held when called."""
        try:
            info = await js.stream_info(f"KV_{self.info.bucket}")
        except Exception as e:
            raise errors.Temporary(f"reading the {self.info.plural} stream: {e}") from e
        last = info.state.last_seq
        deadline = time.monotonic() + timeout
        while self.informer.applied < last:
            if time.monotonic() > deadline:
                raise errors.Temporary(f"the {self.info.plural} cache is behind the store; try again")
            await asyncio.sleep(0.005)

    async def caught_up(self, seq: int, timeout: float = 3.0) -> bool:
        """Whether the informer has applied ``seq``, waiting up to ``timeout`` for it."""
        deadline = time.monotonic() + timeout
        while self.informer.applied < seq:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    def snapshot(self, namespace: str | None) -> tuple[list[Object], int]:
        items = self.informer.list(namespace if self.info.namespaced else None)
        items.sort(key=lambda o: (o.metadata.namespace or "", o.metadata.name))
        return items, self.revision

    def watch(self, since: int | None, namespace: str | None) -> tuple[list[Change], Watcher]:
        """Changes to replay and the watcher following the live ones. ``since`` None: the
        current objects as ADDED first."""
        w = Watcher(self, namespace if self.info.namespaced else None)
        if since is None:
            items, _ = self.snapshot(namespace)
            replay = [Change(int(o.metadata.resourceVersion or 0), ADDED, o, None) for o in items]
        else:
            if since < self.oldest:
                raise Expired(f"too old resource version: {since} ({self.oldest})")
            replay = [c for c in self.history if c.seq > since]
        self.watchers.add(w)
        return replay, w

    async def stop(self) -> None:
        for w in list(self.watchers):
            w.end()
        self.watchers.clear()
        await self.informer.stop()


class WatchCache:
    """Every kind's :class:`KindCache`, made on first use."""

    def __init__(self, nc: NATS, *, sync_timeout: float = 30.0) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.sync_timeout = sync_timeout
        self._kinds: dict[str, KindCache] = {}
        self._starting: dict[str, asyncio.Task] = {}
        self._stopping: set[asyncio.Future[None]] = set()

    async def kind(self, info: KindInfo) -> KindCache:
        cache = self._kinds.get(info.kind)
        if cache is not None:
            return cache
        task = self._starting.get(info.kind)
        if task is None:
            task = self._starting[info.kind] = asyncio.ensure_future(self._start(info))
        try:
            return await asyncio.shield(task)
        except TimeoutError:
            raise errors.Temporary(f"the {info.plural} cache is not ready yet") from None

    async def _start(self, info: KindInfo) -> KindCache:
        cache = KindCache(self.nc, info)
        try:
            await cache.start(self.sync_timeout)
        except BaseException:
            self._starting.pop(info.kind, None)
            with contextlib.suppress(Exception):
                await cache.stop()
            raise
        self._kinds[info.kind] = cache
        self._starting.pop(info.kind, None)
        return cache

    def forget(self, info: KindInfo, gone: bool) -> None:
        """Drop a custom kind's cache when its CRD is gone or its objects' shape changed (its
        watchers end; clients watch again, as after any ended watch)."""
        cache = self._kinds.get(info.kind)
        if cache is None or (not gone and cache.info.type is info.type):
            return
        del self._kinds[info.kind]
        task = asyncio.ensure_future(cache.stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def stop(self) -> None:
        for task in self._starting.values():
            task.cancel()
        for cache in self._kinds.values():
            await cache.stop()
        self._kinds.clear()
