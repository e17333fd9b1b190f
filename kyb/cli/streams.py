"""The CLI's reads that are not api requests: Events from the KYB_EVENTS stream (for
`describe` and `kyb events`) and the change feed of a kind's bucket (for `get -w`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import api

from kyb.events import EVENTS_STREAM, events_subject
from schemas.registry import KindInfo


def events_filter(namespace: str | None, kind: str | None = None, name: str | None = None) -> str:
    """Subject filter for the events of one object, of a namespace (None: all namespaces)."""
    if kind and name:
        return events_subject(namespace, kind, name)
    return f"kyb.events.{namespace or '*'}.>"


async def read_events(nc: NatsClient, subject: str, *, limit: int = 200) -> list[dict[str, Any]]:
    """The stored Events on ``subject`` (oldest first, the last ``limit`` of them)."""
    out: list[dict[str, Any]] = []
    async for ev in _events(nc, subject, follow=False):
        out.append(ev)
    return out[-limit:]


async def follow_events(nc: NatsClient, subject: str) -> AsyncIterator[dict[str, Any]]:
    async for ev in _events(nc, subject, follow=True):
        yield ev


async def _events(nc: NatsClient, subject: str, *, follow: bool) -> AsyncIterator[dict[str, Any]]:
    js = nc.jetstream()
    try:
        sub = await js.subscribe(subject, stream=EVENTS_STREAM, ordered_consumer=True,
                                 deliver_policy=api.DeliverPolicy.ALL)
    except (nats.js.errors.NotFoundError, nats.js.errors.Error, nats.errors.Error):
        return  # no stream yet: no events were ever recorded
    try:
        info = await sub.consumer_info()
        # Messages already pushed to us are no longer "pending" on the server: count them too.
        delivered = info.delivered.consumer_seq if info.delivered is not None else 0
        remaining = (info.num_pending or 0) + (delivered or 0)
        while follow or remaining > 0:
            try:
                msg = await sub.next_msg(timeout=None if follow else 2.0)
            except nats.errors.TimeoutError:
                break
            if msg.metadata is not None:
                remaining = msg.metadata.num_pending
            with contextlib.suppress(ValueError):
                yield json.loads(msg.data)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


class KindWatch:
    """Every change of a kind as ("ADDED"|"MODIFIED"|"DELETED", object as users see it).

    ``start()`` returns once the current objects are known, so a listing taken after it
    misses nothing: changes made meanwhile are queued and come out of ``events()``.
    """

    def __init__(self, nc: NatsClient, info: KindInfo, namespace: str | None) -> None:
        from kyb.informer import Informer

        self.info = info
        self.namespace = namespace
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.informer = Informer(nc, info)
        self.informer.add_handler(self._handle)

    def _handle(self, event: str, new: Any, old: Any, _headers: dict[str, str]) -> None:
        from kyb.render import to_dict

        obj = new if new is not None else old
        if obj is None:
            return
        if self.namespace is not None and self.info.namespaced and obj.metadata.namespace != self.namespace:
            return
        self.queue.put_nowait((event, to_dict(obj)))

    async def start(self, timeout: float = 10.0) -> None:
        await self.informer.start()
        await self.informer.wait_synced(timeout)

    async def events(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        try:
            while True:
                yield await self.queue.get()
        finally:
            await self.informer.stop()

    async def stop(self) -> None:
        await self.informer.stop()
