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
from dataclasses import dataclass

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
    def __init__(self, kind: KindCache) -> None:
        self.kind = kind
        self.queue: asyncio.Queue[Change | None] = asyncio.Queue()
        self.overflowed = False

    def push(self, change: Change) -> None:
        if self.queue.qsize() >= QUEUE:
            self.overflowed = True
            self.queue.put_nowait(None)
            self.kind.watchers.discard(self)
            return
        self.queue.put_nowait(change)

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
        for w in list(self.watchers):
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

    def snapshot(self, namespace: str | None) -> tuple[list[Object], int]:
        items = self.informer.list(namespace if self.info.namespaced else None)
        items.sort(key=lambda o: (o.metadata.namespace or "", o.metadata.name))
        return items, self.revision

    def watch(self, since: int | None, namespace: str | None) -> tuple[list[Change], Watcher]:
        """Changes to replay and the watcher following the live ones. ``since`` None: the
        current objects as ADDED first."""
        w = Watcher(self)
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
            w.queue.put_nowait(None)
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

    async def stop(self) -> None:
        for task in self._starting.values():
            task.cancel()
        for cache in self._kinds.values():
            await cache.stop()
        self._kinds.clear()
