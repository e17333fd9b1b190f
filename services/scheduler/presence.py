"""A scheduler replica's presence Lease in ``kyb-leases``: announce, renew, watch the others.

The async shell around ``peers``: writes ``kube-system.kyb-scheduler-<identity>`` (create, then
compare-and-set renewals every ``renew_seconds``), follows every presence record through a KV
watch, and rewrites its own record whenever the set of live peers grows, once ``drain`` has
returned (the replica's bindings decided without reservations are all stored), so a newly
started peer knows when it may start binding. A graceful stop deletes the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from kyb import bus, errors
from kyb.leader import LEASE_BUCKET, rfc3339_micro
from services.scheduler.peers import (
    PRESENCE_NAMESPACE,
    PRESENCE_PREFIX,
    Peers,
    Presence,
    lease_name,
    presence,
)


class PresenceLease:
    """Announce this replica and keep ``peers`` up to date until ``stop``."""

    def __init__(
        self,
        js: Any,
        identity: str,
        *,
        lease_seconds: int = 10,
        renew_seconds: float = 3.0,
        drain: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        log: Any = None,
    ) -> None:
        self.js = js
        self.identity = identity
        self.key = f"{PRESENCE_NAMESPACE}.{lease_name(identity)}"
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.drain = drain
        self.clock = clock
        self.log = log
        self.peers = Peers(identity)
        self.changed = asyncio.Event()       # set whenever the peers' records change
        self._acked: frozenset[str] = frozenset()
        self._kv: bus.Bucket | None = None
        self._revision: int | None = None
        self._tasks: list[asyncio.Task] = []
        self._watcher: Any = None
        self._rewrite = asyncio.Event()

    @property
    def reserving(self) -> bool:
        """Another live replica exists: reserve before binding."""
        return bool(self.peers.live(self.clock()))

    async def start(self) -> None:
        self._kv = await bus.bucket(self.js, LEASE_BUCKET)
        self._watcher = await self._kv.watch(f"{PRESENCE_NAMESPACE}.>")
        await self._initial()
        await self._write()
        self._tasks = [asyncio.create_task(self._follow()), asyncio.create_task(self._renew())]

    async def wait_acknowledged(self, timeout: float) -> bool:
        """Until every live peer reserves for us (peers that stop renewing stop counting)."""
        deadline = self.clock() + timeout
        while not self.peers.acknowledged_by_all(self.clock()):
            left = deadline - self.clock()
            if left <= 0:
                return False
            expiry = self.peers.next_expiry(self.clock())
            wait = min(left, max(0.01, expiry - self.clock())) if expiry is not None else left
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), wait)
        return True

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()
        if self._kv is not None and self._revision is not None:
            with contextlib.suppress(errors.KybError, TimeoutError, OSError):  # the record expires anyway
                await asyncio.wait_for(self._kv.delete(self.key, last=self._revision), 2.0)

    # -- the watch ----------------------------------------------------------------------------

    async def _initial(self) -> None:
        """Apply the records that exist now (the watch sends None once they are all delivered)."""
        while True:
            entry = await self._watcher.updates(timeout=10)
            if entry is None:
                return
            self._apply(entry)

    async def _follow(self) -> None:
        async for entry in self._watcher:
            if entry is not None:
                self._apply(entry)

    def _apply(self, entry: Any) -> None:
        if not entry.key.startswith(f"{PRESENCE_NAMESPACE}.{PRESENCE_PREFIX}") or entry.key == self.key:
            return
        before = self.peers.live(self.clock())
        if entry.operation in ("DEL", "PURGE") or not entry.value:
            self.peers.removed(entry.key)
        else:
            try:
                record = msgspec.json.decode(entry.value, type=Presence)
            except msgspec.DecodeError:
                return
            self.peers.observe(entry.key, record, self.clock())
        if not self.peers.live(self.clock()) <= before | self._acked:
            self._rewrite.set()  # someone new: acknowledge once our unreserved bindings are stored
        self.changed.set()

    # -- our record ---------------------------------------------------------------------------

    async def _renew(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rewrite.wait(), self.renew_seconds)
            self._rewrite.clear()
            live = self.peers.live(self.clock())
            if live - self._acked and self.drain is not None:
                await self.drain()  # from here on every binding is reserved: the new peer may start
            try:
                await self._write(live)
            except Exception as e:  # keep renewing whatever happened: peers rely on it
                if self.log is not None:
                    self.log.info("presence not renewed", error=repr(e))

    async def _write(self, acked: frozenset[str] = frozenset()) -> None:
        record = presence(self.identity, acked, self.lease_seconds, rfc3339_micro(datetime.now(UTC)))
        payload = msgspec.json.encode(record)
        assert self._kv is not None, "start() opens the bucket"
        try:
            if self._revision is None:
                self._revision = await self._kv.create(self.key, payload)
            else:
                self._revision = await self._kv.update(self.key, payload, last=self._revision)
        except (errors.AlreadyExists, errors.Conflict):
            # A record of ours from before a restart, or our last write's ack was lost: write over
            # the revision stored now, a delete marker's included (the key is ours alone).
            last = await self._kv.last_revision(self.key)
            self._revision = await self._kv.update(self.key, payload, last=last)
        self._acked = acked
