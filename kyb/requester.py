"""Requests on a hot path: one reply subscription per connection, a counter for the token.

``nats.aio.Client.request`` draws a NUID and random bytes for every request's token and waits
through ``asyncio.wait_for``; on the paths that make one request per object written (every
KV write of the api and the scheduler) that is a visible share of the CPU. A ``Requester``
replies into ``<inbox>.<n>`` under one wildcard subscription of its own, with ``n`` counted,
and times out with one timer handle. It answers as ``request`` does: the reply ``Msg``,
``nats.errors.TimeoutError`` when none came in time, ``nats.errors.NoRespondersError`` when
the server says nobody listens.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import nats.errors

NO_RESPONDERS = "503"


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(nats.errors.TimeoutError())


class Requester:
    """Requests over ``nc`` with replies on a subscription of its own (made on first use)."""

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self._prefix = ""
        self._waiting: dict[str, asyncio.Future] = {}
        self._tokens = itertools.count()
        self._starting: asyncio.Future | None = None

    async def _start(self) -> None:
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._subscribe())
        starting = self._starting
        try:
            await asyncio.shield(starting)
        except Exception:
            if starting.done() and self._starting is starting:
                self._starting = None  # a failed subscribe is tried again by the next request
            raise

    async def _subscribe(self) -> None:
        prefix = self.nc.new_inbox() + "."
        skip = len(prefix)
        waiting = self._waiting

        async def on_reply(msg: Any) -> None:
            future = waiting.get(msg.subject[skip:])
            if future is not None and not future.done():
                future.set_result(msg)

        await self.nc.subscribe(prefix + "*", cb=on_reply, pending_msgs_limit=1_000_000)
        self._prefix = prefix

    async def request(self, subject: str, payload: bytes, timeout: float, headers: dict[str, str] | None = None) -> Any:
        if not self._prefix:
            await self._start()
        token = str(next(self._tokens))
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting[token] = future
        timer = loop.call_later(timeout, _expire, future)
        try:
            await self.nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
            msg = await future
        finally:
            timer.cancel()
            del self._waiting[token]
        if not msg.data and msg.headers and msg.headers.get("Status") == NO_RESPONDERS:
            raise nats.errors.NoRespondersError
        return msg
