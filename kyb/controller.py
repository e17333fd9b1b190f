"""The controller loop every service runs: informer handlers enqueue keys, workers reconcile them.

``reconcile(key, ctx)`` re-reads the latest state for ``key`` (level-triggered, never acting on
an event payload) and returns how many seconds to wait before looking again, or None.
Failures come back with back-off: ``Temporary`` after its own delay, ``Conflict`` (a lost
compare-and-set, a normal event) almost at once, anything else after the per-key exponential
back-off. Every ``resync_seconds`` all keys from ``keys()`` are enqueued again, so a missed
change is repaired eventually.

Each reconcile runs in a span ``reconcile <name>`` parented to the trace context that came with
the key, so the trace of a user's ``kyb apply`` continues here; the log context carries
controller, key, trace_id and span_id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import structlog
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from kyb import errors, metrics, telemetry
from kyb.workqueue import Clock, WorkQueue
from schemas.helpers import controller_of
from schemas.meta import Object

__all__ = ["Controller", "Reconcile", "controller_keys"]

Reconcile = Callable[[str, Context | None], Awaitable[float | None]]


def controller_keys(kind: str) -> Callable[[Object], list[str]]:
    """``keys_of`` for ``Controller.handler``: an object's controller of ``kind``, as the key
    ``<namespace>.<name>`` (by name, so it still names a controller that was deleted)."""

    def keys_of(obj: Object) -> list[str]:
        ref = controller_of(obj)
        if ref is None or ref.kind != kind:
            return []
        return [f"{obj.metadata.namespace or 'default'}.{ref.name}"]

    return keys_of


class Controller:
    """Runs ``reconcile`` over a per-key work queue with ``workers`` at once."""

    def __init__(
        self,
        name: str,
        reconcile: Reconcile,
        *,
        workers: int = 4,
        resync_seconds: float | None = 300,
        keys: Callable[[], Iterable[str]] | None = None,
        max_backoff: float = 60.0,
        base_backoff: float = 0.005,
        shutdown_timeout: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        self.name = name
        self._reconcile = reconcile
        self.workers = workers
        self.resync_seconds = resync_seconds
        self._keys = keys
        self.shutdown_timeout = shutdown_timeout
        self.queue: WorkQueue[Context] = WorkQueue(
            base_delay=base_backoff, max_delay=max_backoff, clock=clock, name=name
        )
        self._latency = metrics.RECONCILE_SECONDS.labels(name)
        self._tracer = telemetry.tracer(f"kyb.controller.{name}")
        self.log = structlog.get_logger("kyb.controller").bind(controller=name)

    # -- feeding ----------------------------------------------------------------------------

    def enqueue(self, key: str, ctx: Context | None = None) -> None:
        """Ask for ``key`` to be reconciled; ``ctx`` is the trace context to continue."""
        self.queue.add(key, ctx if telemetry.has_trace(ctx) else None)

    def enqueue_from_headers(self, key: str, headers: Mapping[str, str] | None) -> None:
        """``enqueue`` with the trace context carried in NATS message headers."""
        self.enqueue(key, telemetry.extract(headers) if headers else None)

    def handler(self, keys_of: Callable[[Any], Iterable[str]]) -> Callable[[str, Any, Any, Mapping[str, str]], None]:
        """An informer handler that only enqueues: the keys ``keys_of`` gives for the new and the
        old object (each once), with the trace the change came with."""

        def on_change(_event: str, new: Any, old: Any, headers: Mapping[str, str]) -> None:
            keys = {k for obj in (new, old) if obj is not None for k in keys_of(obj)}
            for key in keys:
                self.enqueue_from_headers(key, headers)

        return on_change

    def enqueue_after(self, key: str, delay: float, ctx: Context | None = None) -> None:
        self.queue.add_after(key, delay, ctx if telemetry.has_trace(ctx) else None)

    def resync(self) -> int:
        """Enqueue every key from ``keys()``; returns how many."""
        if self._keys is None:
            return 0
        n = 0
        for key in self._keys():
            self.queue.add(key)
            n += 1
        return n

    # -- running ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set, then let in-flight reconciles finish (bounded) and return.

        ``run`` may be called again after it returned (e.g. each time leadership is won): it
        starts from a fresh queue, and the first resync enqueues every key from ``keys()``.
        """
        if self.queue.shutting_down:
            old = self.queue
            self.queue = WorkQueue(
                base_delay=old.base_delay, max_delay=old.max_delay, clock=old.clock, name=old.name
            )
        self.log.info("controller started", workers=self.workers)
        serving = asyncio.create_task(self.queue.serve(self._process, workers=self.workers))
        resyncing = asyncio.create_task(self._resync_loop(stop)) if self._keys is not None else None
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if serving.done():
                serving.result()  # a worker crashed: surface it
            drained = await self.queue.shutdown(timeout=self.shutdown_timeout)
            if not drained:
                self.log.warning(
                    "reconciles still running at shutdown; cancelling", in_flight=sorted(self.queue.in_flight)
                )
        finally:
            for task in (stopping, resyncing, serving):
                if task is not None and not task.done():
                    task.cancel()
            await asyncio.gather(
                *(t for t in (stopping, resyncing, serving) if t is not None), return_exceptions=True
            )
            self.log.info("controller stopped")

    async def _resync_loop(self, stop: asyncio.Event) -> None:
        self.resync()
        if not self.resync_seconds:
            return
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.resync_seconds)
            except TimeoutError:
                n = self.resync()
                self.log.debug("resync", keys=n)

    async def _process(self, key: str, ctx: Context | None) -> None:
        started = time.perf_counter()
        result = await self._traced(key, ctx)
        self._latency.observe(time.perf_counter() - started)
        metrics.RECONCILES.labels(self.name, result).inc()

    async def _traced(self, key: str, ctx: Context | None) -> str:
        """One reconcile in its span; returns how it ended (the ``result`` label of the metrics)."""
        with self._tracer.start_as_current_span(
            f"reconcile {self.name}",
            context=ctx,
            kind=SpanKind.INTERNAL,
            attributes={"kyb.controller": self.name, "kyb.key": key},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            ids = telemetry.current_ids() or ("", "")
            with structlog.contextvars.bound_contextvars(
                controller=self.name, key=key, trace_id=ids[0], span_id=ids[1]
            ):
                try:
                    requeue = await self._reconcile(key, ctx)
                except asyncio.CancelledError:
                    raise
                except errors.Conflict as e:
                    delay = self.queue.add_rate_limited(key, ctx)
                    span.set_attribute("kyb.requeue_after", delay)
                    self.log.debug("conflict; retrying", key=key, error=str(e), retry_in=delay)
                    return "conflict"
                except errors.Temporary as e:
                    self.queue.when(key)  # count the failure
                    self.queue.add_after(key, e.delay, ctx)
                    span.set_attribute("kyb.requeue_after", e.delay)
                    span.set_status(Status(StatusCode.ERROR, str(e)))
                    self.log.info("temporary failure; retrying", key=key, error=str(e), retry_in=e.delay)
                    return "temporary"
                except Exception as e:
                    delay = self.queue.add_rate_limited(key, ctx)
                    span.record_exception(e)
                    span.set_status(Status(StatusCode.ERROR, f"{type(e).__name__}: {e}"))
                    span.set_attribute("kyb.requeue_after", delay)
                    self.log.exception(
                        "reconcile failed", key=key, retry_in=delay, failures=self.queue.num_requeues(key)
                    )
                    return "error"
                else:
                    self.queue.forget(key)
                    if requeue is not None:
                        span.set_attribute("kyb.requeue_after", requeue)
                        self.queue.add_after(key, requeue)
                        return "requeue"
                    return "success"
