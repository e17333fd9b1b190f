"""A per-key work queue, the heart of every controller loop.

Watches only enqueue keys; workers take keys from here and re-read the latest state.
The queue guarantees, as client-go's ``util/workqueue`` does:

- ``add(key)`` deduplicates: a key waiting to be processed is queued once;
- a key being processed is never handed out a second time at once; adds that arrive
  while it is in flight collapse into one rerun after ``done(key)``;
- ``add_rate_limited(key)`` re-adds after a per-key exponential back-off
  (``base_delay`` doubling up to ``max_delay``); ``forget(key)`` resets it after a success;
- ``add_after(key, delay)`` adds once the delay has passed (the earliest pending time wins);
- ``serve(handler, workers=N)`` runs at most N handlers at once;
- ``shutdown()`` stops new work and waits for what is in flight.

Each key may carry an opaque context (for us the trace context of whatever enqueued it);
the latest one given is handed to the worker with the key.

Time is injected through ``Clock``; ``ManualClock`` lets tests move time by hand.
The synchronous core (``add``, ``try_get``, ``done``) needs no running event loop.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import structlog

C = TypeVar("C")

log = structlog.get_logger(__name__)


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic time and one-shot timers."""

    def now(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer: ...


class LoopClock:
    """The real clock: ``time.monotonic`` and the running event loop's timers."""

    def now(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback)


@dataclass(order=True)
class _ManualTimer:
    when: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that only moves when ``advance`` is called; due timers fire inside ``advance``."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._timers: list[_ManualTimer] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = _ManualTimer(self._now + max(0.0, delay), next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        return timer

    def advance(self, seconds: float) -> None:
        target = self._now + seconds
        while self._timers and self._timers[0].when <= target:
            timer = heapq.heappop(self._timers)
            self._now = max(self._now, timer.when)
            if not timer.cancelled:
                timer.callback()
        self._now = target

    @property
    def pending(self) -> int:
        return sum(1 for t in self._timers if not t.cancelled)


class ShutDown(Exception):
    """Raised by ``get`` once the queue is shut down and has nothing more to hand out."""


class WorkQueue(Generic[C]):
    """Deduplicating, rate-limited, delaying queue of string keys (see the module docstring)."""

    def __init__(
        self,
        *,
        base_delay: float = 0.005,
        max_delay: float = 60.0,
        clock: Clock | None = None,
        name: str | None = None,
    ) -> None:
        self.name = name  # a named queue reports depth, adds and retries as Prometheus metrics
        self._adds: Any = None
        self._retries: Any = None
        if name is not None:
            from kyb import metrics

            metrics.QUEUE_DEPTH.labels(name).set_function(lambda: len(self._queue))
            self._adds = metrics.QUEUE_ADDS.labels(name)
            self._retries = metrics.QUEUE_RETRIES.labels(name)
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.clock: Clock = clock or LoopClock()
        self._queue: deque[str] = deque()  # ready, in order
        self._dirty: set[str] = set()  # needs processing (queued or to rerun)
        self._processing: set[str] = set()  # handed out, not yet done
        self._ctx: dict[str, C] = {}  # latest context per dirty key
        self._failures: dict[str, int] = {}
        self._waiting: dict[str, tuple[float, C | None]] = {}  # key -> (ready at, context)
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._timer: Timer | None = None
        self._timer_at: float | None = None
        self._shutting_down = False
        self._drain_pending = False
        self._waiters: list[asyncio.Future[None]] = []  # workers waiting for a key, oldest first

    # -- adding ---------------------------------------------------------------------------

    def add(self, key: str, ctx: C | None = None) -> None:
        """Queue ``key`` unless it is already queued; a ``ctx`` given replaces the one held."""
        if self._shutting_down:
            return
        if ctx is not None:
            self._ctx[key] = ctx
        if key in self._dirty:
            return
        self._dirty.add(key)
        if self._adds is not None:
            self._adds.inc()
        if key in self._processing:
            return  # rerun once after done()
        self._queue.append(key)
        self._wake_one()

    def add_after(self, key: str, delay: float, ctx: C | None = None) -> None:
        """Queue ``key`` once ``delay`` seconds have passed; an earlier pending time wins."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key, ctx)
            return
        ready_at = self.clock.now() + delay
        held = self._waiting.get(key)
        if held is not None:
            ctx = ctx if ctx is not None else held[1]
            if held[0] <= ready_at:
                self._waiting[key] = (held[0], ctx)
                return
        self._waiting[key] = (ready_at, ctx)
        heapq.heappush(self._heap, (ready_at, next(self._seq), key))
        self._arm()

    def when(self, key: str) -> float:
        """The back-off for the next failure of ``key`` (and count that failure)."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        if self._retries is not None:
            self._retries.inc()
        # exponent bounded so the float never overflows
        return min(self.base_delay * (2 ** min(failures, 62)), self.max_delay)

    def add_rate_limited(self, key: str, ctx: C | None = None) -> float:
        """Re-add ``key`` after its back-off; returns the delay chosen."""
        delay = self.when(key)
        self.add_after(key, delay, ctx)
        return delay

    def forget(self, key: str) -> None:
        """Reset the back-off of ``key`` (after it was processed successfully)."""
        self._failures.pop(key, None)

    def num_requeues(self, key: str) -> int:
        return self._failures.get(key, 0)

    # -- taking ---------------------------------------------------------------------------

    def try_get(self) -> tuple[str, C | None] | None:
        """Hand out the next ready key and its context, or None when nothing is ready."""
        if self._shutting_down and not self._drain_pending:
            return None
        if not self._queue:
            return None
        key = self._queue.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        return key, self._ctx.pop(key, None)

    async def get(self) -> tuple[str, C | None]:
        """Wait for the next ready key; raises ``ShutDown`` once shut down (and drained)."""
        while True:
            item = self.try_get()
            if item is not None:
                return item
            if self._shutting_down and not (self._drain_pending and (self._processing or self._queue)):
                raise ShutDown()
            await self._woken()

    def done(self, key: str) -> None:
        """Mark ``key`` finished; if it was added meanwhile, it is queued again."""
        self._processing.discard(key)
        if key in self._dirty:
            if self._shutting_down and not self._drain_pending:
                self._dirty.discard(key)
                self._ctx.pop(key, None)
            else:
                self._queue.append(key)
                self._wake_one()
        if self._shutting_down:
            self._wake()  # shutdown waits for the last key in flight; draining workers too

    # -- running --------------------------------------------------------------------------

    async def serve(self, handler: Callable[[str, C | None], Awaitable[None]], *, workers: int) -> None:
        """Run ``workers`` tasks that take keys and await ``handler(key, ctx)`` until shutdown.

        ``handler`` decides about retries itself; an exception escaping it is logged and the key
        re-added with back-off. Cancelling ``serve`` cancels the workers.
        """
        if workers < 1:
            raise ValueError("workers must be at least 1")

        async def worker() -> None:
            me = asyncio.current_task()
            while True:
                if me is not None and me.cancelling():
                    # A cancellation that a library swallowed (asyncio.wait_for in 3.11 can)
                    # must still end this worker, or cancelling ``serve`` would hang forever.
                    raise asyncio.CancelledError()
                try:
                    key, ctx = await self.get()
                except ShutDown:
                    return
                try:
                    await handler(key, ctx)
                except Exception:
                    log.exception("work item failed", key=key)
                    self.add_rate_limited(key)
                finally:
                    self.done(key)

        async with asyncio.TaskGroup() as tg:
            for _ in range(workers):
                tg.create_task(worker())

    async def shutdown(self, *, timeout: float | None = None, drain_pending: bool = False) -> bool:
        """Stop taking adds, drop delayed keys and wait for the keys in flight to be done.

        With ``drain_pending`` the keys already queued are still handed out and waited for.
        Returns False when ``timeout`` passed first.
        """
        self._shutting_down = True
        self._drain_pending = drain_pending
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waiting.clear()
        self._heap.clear()
        if not drain_pending:
            for key in self._queue:
                self._dirty.discard(key)
                self._ctx.pop(key, None)
            self._queue.clear()
        self._wake()

        async def idle() -> None:
            while self._processing or (drain_pending and self._queue):
                await self._woken()

        try:
            await asyncio.wait_for(idle(), timeout)
            return True
        except TimeoutError:
            return False

    # -- introspection --------------------------------------------------------------------

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def __len__(self) -> int:
        """Keys ready to be handed out."""
        return len(self._queue)

    @property
    def in_flight(self) -> frozenset[str]:
        return frozenset(self._processing)

    @property
    def delayed(self) -> dict[str, float]:
        """Keys waiting for a delay, with the time they become ready."""
        return {k: v[0] for k, v in self._waiting.items()}

    def is_idle(self) -> bool:
        return not (self._queue or self._processing or self._waiting or self._dirty)

    # -- internals ------------------------------------------------------------------------

    async def _woken(self) -> None:
        """Wait until woken: by ``_wake_one`` (a key became ready) or ``_wake`` (shutdown)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # woken for a key, then cancelled: another waiter takes it
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _wake_one(self) -> None:
        """Wake one waiter for one ready key: waking every idle worker for each key only has
        all but one find the queue empty again (with 64 workers, most of a busy loop's work)."""
        while self._waiters:
            w = self._waiters.pop(0)
            if not w.done():
                w.set_result(None)
                return

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def _arm(self) -> None:
        while self._heap and self._waiting.get(self._heap[0][2], (None,))[0] != self._heap[0][0]:
            heapq.heappop(self._heap)  # stale entry: superseded by an earlier time
        if not self._heap:
            return
        first = self._heap[0][0]
        if self._timer is not None and self._timer_at is not None and self._timer_at <= first:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = first
        self._timer = self.clock.call_later(first - self.clock.now(), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self.clock.now()
        while self._heap and self._heap[0][0] <= now:
            ready_at, _, key = heapq.heappop(self._heap)
            held = self._waiting.get(key)
            if held is None or held[0] != ready_at:
                continue
            del self._waiting[key]
            self.add(key, held[1])
        self._arm()
