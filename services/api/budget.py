"""Decoding and admitting a write so that one request cannot starve the others.

``schemas.limits`` bounds what a body can cost, but the bound of a 1 MiB YAML body is still
about a second of CPU, and the api answers every request on one event loop. So:

- a body up to ``INLINE_BYTES`` (64 KiB; manifests are a few KiB) is decoded and admitted
  inline, as before: one decode, no hop, the fast path;
- a larger body waits for one of ``HEAVY_CONCURRENCY`` slots (per process) and is decoded in a
  worker thread, so the loop keeps answering other requests meanwhile;
- at most ``HEAVY_QUEUE`` large bodies wait for a slot; one more, or one that waits longer
  than ``BUDGET_SECONDS``, is refused with 429 TooManyRequests, and one whose decoding takes
  longer than the budget with 503 ServiceUnavailable; both carry ``retryAfterSeconds`` and
  are logged. A slot is freed only when its thread is done, so the bound holds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from kyb import errors
from schemas.meta import Object
from schemas.registry import KindInfo
from services.api import admission

log = structlog.get_logger("api")

INLINE_BYTES = 64 * 1024
HEAVY_CONCURRENCY = 1
HEAVY_QUEUE = 8
BUDGET_SECONDS = 10.0
RETRY_AFTER_SECONDS = 1.0

Admitted = tuple[dict[str, Any], KindInfo, Object]


def _decode_and_admit(body: bytes, namespace: str) -> Admitted:
    doc = admission.parse_manifest(body)
    info, obj = admission.admit(doc, namespace)
    return doc, info, obj


class Lane:
    """The bounded lane large bodies go through (one per process: CPU is per process)."""

    def __init__(self, concurrency: int = HEAVY_CONCURRENCY, queue: int = HEAVY_QUEUE,
                 budget: float = BUDGET_SECONDS) -> None:
        self.concurrency = concurrency
        self.queue = queue
        self.budget = budget
        self._slots: asyncio.Semaphore | None = None
        self._waiting = 0
        self.running: set[asyncio.Future[Admitted]] = set()  # decodes in a thread, answered or not

    async def admit(self, body: bytes, namespace: str) -> Admitted:
        """The manifest, its kind and the admitted object; BadRequest/Invalid/TooLarge as
        ``admission`` raises them, TooManyRequests or Temporary when over budget."""
        if len(body) <= INLINE_BYTES:
            return _decode_and_admit(body, namespace)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        slots = self._slots
        if self._waiting >= self.queue:
            log.warning("large request refused: decode queue full", bytes=len(body), waiting=self._waiting)
            raise errors.TooManyRequests(
                f"too many large requests ({self._waiting}) are waiting to be decoded; retry later",
                RETRY_AFTER_SECONDS,
            )
        start = time.monotonic()
        self._waiting += 1
        try:
            await asyncio.wait_for(slots.acquire(), self.budget)
        except TimeoutError:
            log.warning("large request refused: no decode slot within the budget", bytes=len(body), budget=self.budget)
            raise errors.TooManyRequests(
                f"no decoding slot became free within the {self.budget:g} s budget; retry later", RETRY_AFTER_SECONDS
            ) from None
        finally:
            self._waiting -= 1
        task = asyncio.ensure_future(asyncio.to_thread(_decode_and_admit, body, namespace))
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        task.add_done_callback(lambda _: slots.release())
        done, _ = await asyncio.wait({task}, timeout=max(0.0, self.budget - (time.monotonic() - start)))
        if not done:
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # nobody awaits it any more
            log.warning("large request refused: decoding exceeded the budget", bytes=len(body), budget=self.budget)
            raise errors.Temporary(
                f"decoding the request took longer than the {self.budget:g} s budget", RETRY_AFTER_SECONDS
            )
        return task.result()


LANE = Lane()


async def admit(body: bytes, namespace: str) -> Admitted:
    return await LANE.admit(body, namespace)
