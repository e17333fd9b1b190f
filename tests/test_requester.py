"""kyb.requester against a real nats-server: replies reach their own request, a missing
responder and a slow one are told apart, and nothing stays waiting afterwards."""

from __future__ import annotations

import asyncio

import nats.errors
import pytest

from kyb.requester import Requester


async def ignore(msg) -> None:
    """A responder that listens and never answers."""


async def test_concurrent_requests_get_their_own_replies(nc):
    async def echo(msg):
        await asyncio.sleep(0.001 * (int(msg.data) % 7))  # answered out of order
        await nc.publish(msg.reply, b"re:" + msg.data)

    await nc.subscribe("t.echo", cb=echo)
    requests = Requester(nc)
    replies = await asyncio.gather(*(requests.request("t.echo", str(i).encode(), 5) for i in range(200)))
    assert [r.data for r in replies] == [f"re:{i}".encode() for i in range(200)]
    assert requests._waiting == {}


async def test_headers_go_out_and_come_back(nc):
    async def echo(msg):
        await nc.publish(msg.reply, b"", headers={"Seen": msg.headers["Want"]})

    await nc.subscribe("t.headers", cb=echo)
    reply = await Requester(nc).request("t.headers", b"x", 5, {"Want": "yes"})
    assert reply.headers["Seen"] == "yes"


async def test_no_responders_is_told_apart_from_a_timeout(nc):
    requests = Requester(nc)
    with pytest.raises(nats.errors.NoRespondersError):
        await requests.request("t.nobody", b"x", 5)

    await nc.subscribe("t.silent", cb=ignore)
    with pytest.raises(nats.errors.TimeoutError):
        await requests.request("t.silent", b"x", 0.2)
    assert requests._waiting == {}


async def test_a_cancelled_request_leaves_nothing_waiting(nc):
    await nc.subscribe("t.slow", cb=ignore)
    requests = Requester(nc)
    task = asyncio.ensure_future(requests.request("t.slow", b"x", 30))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert requests._waiting == {}


async def test_a_failed_subscribe_is_tried_again(nc):
    async def echo(msg):
        await nc.publish(msg.reply, msg.data)

    await nc.subscribe("t.again", cb=echo)
    requests = Requester(nc)
    real = nc.subscribe
    calls = 0

    async def failing_once(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise nats.errors.ConnectionReconnectingError()
        return await real(*args, **kwargs)

    nc.subscribe = failing_once
    try:
        with pytest.raises(nats.errors.ConnectionReconnectingError):
            await requests.request("t.again", b"1", 5)
        assert (await requests.request("t.again", b"2", 5)).data == b"2"
    finally:
        nc.subscribe = real
