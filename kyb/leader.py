"""Leader election for controllers that run as several replicas, over the ``kyb-leases`` bucket.

The record is a ``coordination.k8s.io/v1`` Lease stored as JSON under ``kube-system.<name>``,
and the rules are client-go's ``leaderelection``:

- a candidate that finds no record creates one (``kv.create``: must not exist);
- a candidate that finds a record held by someone else takes it over only when that record
  has not changed for ``leaseDurationSeconds`` as seen on the candidate's own monotonic clock
  (no clocks are compared between machines), or when the holder is empty (released);
- every write names the revision it read (``kv.update(..., last=revision)``), so of two
  candidates racing for an expired lease exactly one wins;
- the leader renews every ``renew_seconds``; if it cannot renew for ``renew_deadline`` seconds
  (shorter than the lease, so nobody else can have taken over yet) it steps down and
  cancels its work;
- on a graceful stop the leader clears the holder, so a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import structlog
from nats.js.client import JetStreamContext

from kyb import bus, errors

__all__ = ["LEASE_BUCKET", "LeaderElector", "Lease", "LeaseSpec", "rfc3339_micro"]

LEASE_BUCKET = "kyb-leases"
LEASE_NAMESPACE = "kube-system"

log = structlog.get_logger(__name__)

# failures of one attempt that mean "could not reach the bus", not "lost the race" (kyb.bus
# turns NATS's into kyb errors; a lost race is AlreadyExists or Conflict, handled in the attempt)
_TRANSIENT = (errors.KybError, TimeoutError, OSError)


class LeaseMeta(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    name: str
    namespace: str = LEASE_NAMESPACE


class LeaseSpec(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    holderIdentity: str | None = None
    leaseDurationSeconds: int | None = None
    acquireTime: str | None = None
    renewTime: str | None = None
    leaseTransitions: int | None = None


class Lease(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The part of coordination.k8s.io/v1 Lease that leader election reads and writes."""

    apiVersion: str = "coordination.k8s.io/v1"
    kind: str = "Lease"
    metadata: LeaseMeta
    spec: LeaseSpec = LeaseSpec()


def rfc3339_micro(t: datetime) -> str:
    """Kubernetes' MicroTime format: ``2024-05-01T12:00:00.123456Z``."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utcnow() -> datetime:
    return datetime.now(UTC)


StartedLeading = Callable[[asyncio.Event], Awaitable[None]]


class LeaderElector:
    """Campaign for the lease ``name``; run the leader's work only while holding it."""

    def __init__(
        self,
        nc_or_js: Any,
        name: str,
        identity: str,
        *,
        lease_seconds: float = 15,
        renew_seconds: float = 5,
        retry_seconds: float = 2,
        renew_deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = _utcnow,
        bucket: str = LEASE_BUCKET,
        release_timeout: float = 10.0,
    ) -> None:
        if not identity:
            raise ValueError("identity must not be empty")
        self.renew_deadline = renew_deadline if renew_deadline is not None else lease_seconds - retry_seconds
        if not (0 < renew_seconds < self.renew_deadline < lease_seconds):
            raise ValueError("need 0 < renew_seconds < renew_deadline < lease_seconds")
        self._js: JetStreamContext = nc_or_js.jetstream() if hasattr(nc_or_js, "jetstream") else nc_or_js
        self.name = name
        self.identity = identity
        self.key = f"{LEASE_NAMESPACE}.{name}"
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.retry_seconds = retry_seconds
        self.release_timeout = release_timeout
        self.bucket = bucket
        self._clock = clock
        self._wall = wall_clock
        self._kv: bus.Bucket | None = None
        self._observed: Lease | None = None
        self._observed_revision: int | None = None
        self._observed_at: float = 0.0
        self._renewed_at: float | None = None
        self.is_leader = False
        self.log = log.bind(lease=name, identity=identity)

    # -- state --------------------------------------------------------------------------------

    @property
    def holder(self) -> str | None:
        """The holder seen in the last record read or written (None before the first read)."""
        if self._observed is None:
            return None
        return self._observed.spec.holderIdentity or ""

    async def read(self) -> Lease | None:
        """The lease as stored now (None when there is none)."""
        kv = await self._bucket()
        try:
            entry = await kv.get(self.key)
        except errors.NotFound:
            return None
        return self._decode(entry.value or b"")

    # -- one attempt ----------------------------------------------------------------------------

    async def try_acquire_or_renew(self) -> bool:
        """One compare-and-set attempt to take or keep the lease; True when we hold it now."""
        kv = await self._bucket()
        started = self._clock()
        now = rfc3339_micro(self._wall())
        duration = max(1, math.ceil(self.lease_seconds))
        try:
            entry = await kv.get(self.key)
        except errors.NotFound:
            entry = None
        if entry is None:
            lease = Lease(
                metadata=LeaseMeta(name=self.name),
                spec=LeaseSpec(
                    holderIdentity=self.identity,
                    leaseDurationSeconds=duration,
                    acquireTime=now,
                    renewTime=now,
                    leaseTransitions=0,
                ),
            )
            try:
                revision = await kv.create(self.key, msgspec.json.encode(lease))
            except errors.AlreadyExists:
                return False
            self._observe(lease, revision, started)
            self._renewed_at = started
            return True

        old = self._decode(entry.value or b"")
        if entry.revision != self._observed_revision:
            self._observe(old, entry.revision, started)
        holder = old.spec.holderIdentity or ""
        held_for = old.spec.leaseDurationSeconds or duration
        if holder and holder != self.identity and self._observed_at + held_for > started:
            return False  # someone else holds a lease that is still valid
        mine = holder == self.identity
        lease = Lease(
            metadata=old.metadata,
            spec=LeaseSpec(
                holderIdentity=self.identity,
                leaseDurationSeconds=duration,
                acquireTime=old.spec.acquireTime if mine and old.spec.acquireTime else now,
                renewTime=now,
                leaseTransitions=(old.spec.leaseTransitions or 0) + (0 if mine else 1),
            ),
        )
        try:
            revision = await kv.update(self.key, msgspec.json.encode(lease), last=entry.revision)
        except errors.Conflict:
            return False
        self._observe(lease, revision, started)
        self._renewed_at = started
        return True

    async def release(self) -> bool:
        """Give the lease up (holder cleared) if we hold it; True when released."""
        kv = await self._bucket()
        try:
            entry = await kv.get(self.key)
        except errors.NotFound:
            return False
        old = self._decode(entry.value or b"")
        if old.spec.holderIdentity != self.identity:
            return False
        now = rfc3339_micro(self._wall())
        lease = Lease(
            metadata=old.metadata,
            spec=LeaseSpec(
                holderIdentity="",
                leaseDurationSeconds=1,
                acquireTime=now,
                renewTime=now,
                leaseTransitions=old.spec.leaseTransitions or 0,
            ),
        )
        try:
            revision = await kv.update(self.key, msgspec.json.encode(lease), last=entry.revision)
        except errors.Conflict:
            return False
        self._observe(lease, revision, self._clock())
        self.log.info("released leadership")
        return True

    # -- the campaign -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, on_started_leading: StartedLeading) -> None:
        """Campaign until ``stop`` is set, running ``on_started_leading(stop_leading)`` while leader.

        ``stop_leading`` is set when leadership ends; the work is cancelled when the lease is lost,
        and on a graceful stop it gets up to ``release_timeout`` seconds (never past the renew
        deadline) to finish before the lease is released. After losing the lease the elector campaigns again. If the work returns by
        itself the lease is released and ``run`` returns (raising what the work raised).
        Cancelling ``run`` cancels the work and does not release: the lease expires.
        """
        stop_wait = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                if not await self._acquire(stop_wait):
                    return
                self.is_leader = True
                self.log.info("started leading")
                stop_leading = asyncio.Event()
                work = asyncio.create_task(on_started_leading(stop_leading))
                outcome = "cancelled"
                try:
                    outcome = await self._renew_loop(stop_wait, work)
                finally:
                    stop_leading.set()
                    self.is_leader = False
                    if not work.done():
                        # a graceful stop lets the work finish (bounded); a lost lease or a cancel stops it now
                        # (never past the renew deadline: the lease is not renewed meanwhile)
                        if outcome == "stopped":
                            left = (self._renewed_at or 0.0) + self.renew_deadline - self._clock()
                            await asyncio.wait({work}, timeout=max(0.0, min(self.release_timeout, left)))
                        work.cancel()
                        await asyncio.gather(work, return_exceptions=True)
                if outcome == "lost":
                    self.log.warning("lost leadership")
                    continue
                await self._release_quietly()
                if outcome == "work-ended" and not work.cancelled() and work.exception() is not None:
                    raise work.exception()  # type: ignore[misc]
                return
        finally:
            stop_wait.cancel()
            await asyncio.gather(stop_wait, return_exceptions=True)

    async def _acquire(self, stop_wait: asyncio.Task[Any]) -> bool:
        while not stop_wait.done():
            try:
                if await asyncio.wait_for(self.try_acquire_or_renew(), self.retry_seconds * 5 + 1):
                    return True
            except _TRANSIENT as e:
                self.log.info("lease not reachable", error=repr(e))
            delay = self.retry_seconds * (1 + random.random() * 0.2)
            await asyncio.wait({stop_wait}, timeout=delay)
        return False

    async def _renew_loop(self, stop_wait: asyncio.Task[Any], work: asyncio.Task[None]) -> str:
        delay = self.renew_seconds
        while True:
            await asyncio.wait({stop_wait, work}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            if stop_wait.done():
                return "stopped"
            if work.done():
                return "work-ended"
            renewed_at = self._renewed_at or 0.0
            left = renewed_at + self.renew_deadline - self._clock()
            ok = False
            if left > 0:
                try:
                    ok = await asyncio.wait_for(self.try_acquire_or_renew(), left)
                except _TRANSIENT as e:
                    self.log.info("renew failed", error=repr(e))
            if ok:
                delay = self.renew_seconds
                continue
            if self.holder not in (None, self.identity):
                return "lost"  # someone else holds it: our lease lapsed
            if (self._renewed_at or 0.0) + self.renew_deadline <= self._clock():
                return "lost"  # could not renew in time; others may take over soon
            delay = self.retry_seconds

    async def _release_quietly(self) -> None:
        try:
            await asyncio.wait_for(self.release(), self.release_timeout)
        except _TRANSIENT as e:
            self.log.warning("could not release the lease; it will expire", error=repr(e))

    # -- plumbing -----------------------------------------------------------------------------

    def _observe(self, lease: Lease, revision: int, at: float) -> None:
        self._observed = lease
        self._observed_revision = revision
        self._observed_at = at

    def _decode(self, raw: bytes) -> Lease:
        try:
            return msgspec.json.decode(raw, type=Lease)
        except msgspec.DecodeError:
            # unreadable: treat as held by an unknown holder, so it is taken over only once it stays unchanged
            return Lease(metadata=LeaseMeta(name=self.name), spec=LeaseSpec(holderIdentity="<unreadable>"))

    async def _bucket(self) -> bus.Bucket:
        if self._kv is not None:
            return self._kv
        self._kv = await bus.bucket(self._js, self.bucket)
        return self._kv
