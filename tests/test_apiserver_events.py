"""The apiserver's events resource on a real nats-server, below HTTP: the stored events of a
subject, and a watch from a resourceVersion (what `kubectl get events -w` sends after its
list) that starts after that sequence; none of it fails when no event was ever recorded."""

from __future__ import annotations

import asyncio
import datetime as _dt
import json

from kyb import buckets
from kyb.events import events_subject, stream_config
from services.apiserver.events import Events


def event(name: str) -> bytes:
    return json.dumps({"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": "default"},
                       "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
                       "reason": "Test"}).encode()


def clock() -> _dt.datetime:
    return _dt.datetime(2026, 1, 1, tzinfo=_dt.UTC)


async def test_no_stream_yet_means_no_events(nc):
    events = Events(nc, clock)
    assert await events.stored("kyb.events.default.>") == ([], 0)


async def test_stored_events_and_a_watch_from_a_resource_version(nc):
    js = nc.jetstream()
    await buckets.ensure_stream(js, stream_config())
    subject = events_subject("default", "Pod", "web")
    first = (await js.publish(subject, event("e1"))).seq
    second = (await js.publish(subject, event("e2"))).seq
    events = Events(nc, clock)

    stored, last = await events.stored("kyb.events.default.>")
    assert [(seq, doc["metadata"]["name"]) for seq, doc in stored] == [(first, "e1"), (second, "e2")]
    assert last == second

    watch = events._messages("kyb.events.default.>", first, until=None)
    try:
        seq, doc = await asyncio.wait_for(anext(watch), 5)
        assert (seq, doc["metadata"]["name"]) == (second, "e2")
        third = (await js.publish(subject, event("e3"))).seq
        seq, doc = await asyncio.wait_for(anext(watch), 5)
        assert (seq, doc["metadata"]["name"]) == (third, "e3")
    finally:
        await watch.aclose()
