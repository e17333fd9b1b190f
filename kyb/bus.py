"""The NATS calls services make beside the store, with NATS's exceptions turned into
``kyb.errors`` here (``raise ... from e``), so no service imports ``nats.errors``:

    a key, stream or message that is not there     NotFound
    a create of a key that holds a value           AlreadyExists
    a write naming a revision no longer the last   Conflict
    nobody subscribes to a request's subject       NoResponders  (an Unreachable)
    no reply within a request's timeout            TimedOut      (a Temporary)
    a message over the server's payload limit      TooLarge
    JetStream unavailable for now (503)            Temporary
    JetStream refused otherwise                    Permanent
    any other failure of the connection            Unreachable

``Bucket`` is a key-value bucket whose every write is compare-and-set; the functions are
requests, publishes, and the stream reads and compare-and-set publishes the api server's
Events and the scheduler's reservations make.
"""

from __future__ import annotations

import asyncio
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from kyb import buckets, errors

# JSStreamWrongLastSequenceErrF and JSStreamWrongLastSequenceConstantErr: the subject's last
# message is not the one the write named.
WRONG_LAST_SEQUENCE = (10071, 10164)
EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"


def translate(e: nats.errors.Error, what: str) -> errors.KybError:
    """The kyb error for a NATS exception raised while doing ``what``."""
    if isinstance(e, nats.js.errors.NotFoundError):  # also a missing or deleted key, a missing bucket
        return errors.NotFound(f"{what}: not found")
    if isinstance(e, nats.js.errors.KeyWrongLastSequenceError) or (
        isinstance(e, nats.js.errors.APIError) and getattr(e, "err_code", None) in WRONG_LAST_SEQUENCE
    ):
        return errors.Conflict(f"{what}: the last revision is not the one named")
    if isinstance(e, nats.errors.NoRespondersError):
        return errors.NoResponders(f"{what}: no responders")
    if isinstance(e, nats.errors.TimeoutError):
        return errors.TimedOut(f"{what}: no reply in time")
    if isinstance(e, nats.errors.MaxPayloadError):
        return errors.TooLarge(f"{what}: {e}")
    if isinstance(e, nats.js.errors.APIError):
        if isinstance(e, nats.js.errors.ServiceUnavailableError) or getattr(e, "code", None) == 503:
            return errors.Temporary(f"{what}: {e}", delay=0.5)
        return errors.Permanent(f"{what}: {e}")
    return errors.Unreachable(f"{what}: {type(e).__name__}: {e}")


# -- core NATS ----------------------------------------------------------------------------------


async def request(nc: Any, subject: str, payload: bytes, timeout: float, headers: dict[str, str] | None = None) -> Any:
    """The reply ``Msg`` to ``payload`` on ``subject``; NoResponders when nobody subscribes,
    TimedOut when no reply came within ``timeout`` seconds."""
    try:
        return await nc.request(subject, payload, timeout=timeout, headers=headers)
    except nats.errors.Error as e:
        raise translate(e, f"request on {subject}") from e


async def publish(nc: Any, subject: str, payload: bytes, headers: dict[str, str] | None = None,
                  reply: str = "") -> None:
    """Publish ``payload`` on ``subject``, answers to ``reply`` if given (Unreachable when the
    connection cannot take it)."""
    try:
        await nc.publish(subject, payload, reply=reply, headers=headers)
    except nats.errors.Error as e:
        raise translate(e, f"publish on {subject}") from e


# -- JetStream streams --------------------------------------------------------------------------


async def last_sequence(js: JetStreamContext, stream: str) -> int:
    """The last sequence of ``stream``; 0 when there is no such stream."""
    try:
        return int((await js.stream_info(stream)).state.last_seq)
    except nats.js.errors.NotFoundError:
        return 0
    except nats.errors.Error as e:
        raise translate(e, f"stream {stream}") from e


async def last_message(js: JetStreamContext, stream: str, subject: str) -> Any:
    """The last message of ``stream`` on ``subject`` (NotFound when it holds none)."""
    try:
        return await js.get_last_msg(stream, subject)
    except nats.errors.Error as e:
        raise translate(e, f"stream {stream} subject {subject}") from e


async def subscribe_ordered(js: JetStreamContext, subject: str, *, stream: str, after: int = 0) -> Any:
    """An ordered consumer of ``stream``'s messages on ``subject``, from the first one after
    sequence ``after`` (all of them when 0); NotFound when there is no such stream."""
    config = (
        api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL)
        if not after
        else api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1)
    )
    try:
        return await js.subscribe(subject, stream=stream, ordered_consumer=True, config=config)
    except nats.errors.Error as e:
        raise translate(e, f"stream {stream}") from e


async def publish_after(js: JetStreamContext, subject: str, payload: bytes, last: int) -> int:
    """Store ``payload`` on ``subject`` only if the subject's last message in its stream has
    sequence ``last`` (0: it has none); its sequence, Conflict when another came since."""
    try:
        ack = await js.publish(subject, payload, headers={EXPECTED_LAST_SUBJECT_SEQUENCE: str(last)})
    except nats.errors.Error as e:
        raise translate(e, f"publish on {subject}") from e
    return int(ack.seq)


# -- key-value buckets --------------------------------------------------------------------------


async def key_count(js: JetStreamContext, stream: str, subject: str) -> int | None:
    """How many keys the stream holds under ``subject`` now, deleted ones included (None when
    it does not say): what a complete replay of them must have seen."""
    si = await js.stream_info(stream, subjects_filter=subject)
    if si.state.subjects is None:
        return 0 if si.state.messages == 0 else None
    return len(si.state.subjects)


LISTING_TRIES = 8  # replays of a listing that came back short before giving up (Temporary)


class Bucket:
    """A key-value bucket: reads, and writes that are compare-and-set."""

    def __init__(self, js: JetStreamContext, kv: KeyValue, name: str) -> None:
        self.js = js
        self.kv = kv
        self.name = name

    def _what(self, key: str) -> str:
        return f'key "{key}" of {self.name}'

    async def get(self, key: str) -> KeyValue.Entry:
        """The key's value and revision (NotFound when missing or deleted)."""
        try:
            return await self.kv.get(key)
        except nats.errors.Error as e:
            raise translate(e, self._what(key)) from e

    async def create(self, key: str, value: bytes) -> int:
        """Write a key that holds no value (AlreadyExists when it does); its revision."""
        try:
            return await self.kv.create(key, value)
        except nats.js.errors.KeyWrongLastSequenceError as e:
            raise errors.AlreadyExists(f"{self._what(key)}: already exists") from e
        except nats.errors.Error as e:
            raise translate(e, self._what(key)) from e

    async def update(self, key: str, value: bytes, last: int) -> int:
        """Write a key whose last revision is ``last`` (Conflict when it is not); its revision."""
        try:
            return await self.kv.update(key, value, last=last)
        except nats.errors.Error as e:
            raise translate(e, self._what(key)) from e

    async def delete(self, key: str, last: int | None = None) -> None:
        """Delete a key, only if its last revision is ``last`` when given (Conflict when not)."""
        try:
            await self.kv.delete(key, last=last)
        except nats.errors.Error as e:
            raise translate(e, self._what(key)) from e

    async def last_revision(self, key: str) -> int:
        """The revision of the key's last write, a delete's included; 0 when it has none."""
        try:
            return (await self.kv.get(key)).revision or 0
        except nats.js.errors.KeyNotFoundError as e:
            marker = getattr(e, "entry", None)  # deleted: the delete marker's revision
            return marker.revision if marker is not None and marker.revision else 0
        except nats.errors.Error as e:
            raise translate(e, self._what(key)) from e

    async def keys(self) -> list[str]:
        """The keys holding a value; [] when none. Not ``KeyValue.keys``: its watcher can end
        its first replay early and come back short (nats.py #842), and its ``filters`` match as
        substrings of the key. The replay here is checked against the stream's own count of keys
        (deleted ones included) and taken again while it falls short, as ``Store.list`` does."""
        for attempt in range(LISTING_TRIES):
            try:
                seen, live = await self._replay()
                expected = await key_count(self.js, f"KV_{self.name}", f"$KV.{self.name}.>")
            except nats.errors.Error as e:
                raise translate(e, f"keys of {self.name}") from e
            if expected is None or seen >= expected:
                return live
            await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
        raise errors.Temporary(f"keys of {self.name}: saw {seen} of {expected} keys")

    async def _replay(self) -> tuple[int, list[str]]:
        """(keys seen, deleted ones included; keys holding a value) of one replay."""
        seen, live = 0, []
        watcher = await self.kv.watch(">", meta_only=True)
        try:
            while (entry := await watcher.updates(timeout=10)) is not None:
                seen += 1
                if entry.operation is None:
                    live.append(entry.key)
        finally:
            await watcher.stop()
        return seen, live

    async def watch(self, pattern: str) -> KeyValue.KeyWatcher:
        """A watcher of the keys matching ``pattern``: their current values, None, then changes."""
        try:
            return await self.kv.watch(pattern)
        except nats.errors.Error as e:
            raise translate(e, f"watch of {self.name}") from e


async def bucket(js: JetStreamContext, name: str, *, replicas: int = 1) -> Bucket:
    """The bucket ``name``, created if missing (``kyb.buckets.ensure_kv``)."""
    return Bucket(js, await buckets.ensure_kv(js, name, replicas=replicas), name)
