"""kyb.bus against a real nats-server: what a caller tells apart is a kyb error, never a NATS
exception — a missing key is NotFound, a create over a value AlreadyExists, a write naming an
old revision Conflict, a request nobody listens to NoResponders and a silent one TimedOut."""

from __future__ import annotations

import pytest
from nats.js import api

from kyb import bus, errors


async def ignore(msg) -> None:
    """A responder that listens and never answers."""


@pytest.fixture
async def kv(nc):
    return await bus.bucket(nc.jetstream(), "kyb-test")


async def test_a_missing_key_is_not_found(kv):
    with pytest.raises(errors.NotFound):
        await kv.get("a.missing")


async def test_a_deleted_key_is_not_found_and_can_be_created_again(kv):
    rev = await kv.create("a.k", b"1")
    await kv.delete("a.k", last=rev)
    with pytest.raises(errors.NotFound):
        await kv.get("a.k")
    assert await kv.create("a.k", b"2") > rev
    assert (await kv.get("a.k")).value == b"2"


async def test_creating_a_key_that_holds_a_value_is_already_exists(kv):
    await kv.create("a.k", b"1")
    with pytest.raises(errors.AlreadyExists):
        await kv.create("a.k", b"2")
    assert (await kv.get("a.k")).value == b"1"


async def test_writes_naming_an_old_revision_conflict(kv):
    first = await kv.create("a.k", b"1")
    second = await kv.update("a.k", b"2", last=first)
    with pytest.raises(errors.Conflict):
        await kv.update("a.k", b"3", last=first)
    with pytest.raises(errors.Conflict):
        await kv.delete("a.k", last=first)
    assert (await kv.get("a.k")).value == b"2"
    await kv.delete("a.k", last=second)


async def test_last_revision_counts_a_delete_marker_and_is_zero_for_a_new_key(kv):
    assert await kv.last_revision("a.k") == 0
    rev = await kv.create("a.k", b"1")
    assert await kv.last_revision("a.k") == rev
    await kv.delete("a.k")
    marker = await kv.last_revision("a.k")
    assert marker > rev
    assert await kv.update("a.k", b"2", last=marker) > marker  # over the delete marker


async def test_keys_of_an_empty_bucket_are_none(kv):
    assert await kv.keys() == []
    await kv.create("a.k", b"1")
    await kv.create("b.k", b"1")
    assert sorted(await kv.keys()) == ["a.k", "b.k"]


async def test_a_request_nobody_listens_to_is_no_responders_and_a_silent_one_timed_out(nc):
    with pytest.raises(errors.NoResponders) as nobody:
        await bus.request(nc, "t.nobody", b"x", 5)
    assert isinstance(nobody.value, errors.Unreachable)
    await nc.subscribe("t.silent", cb=ignore)
    with pytest.raises(errors.TimedOut) as silent:
        await bus.request(nc, "t.silent", b"x", 0.2)
    assert isinstance(silent.value, errors.Temporary) and not isinstance(silent.value, errors.Unreachable)


async def test_a_request_gets_its_reply(nc):
    async def echo(msg):
        await nc.publish(msg.reply, b"re:" + msg.data)

    await nc.subscribe("t.echo", cb=echo)
    assert (await bus.request(nc, "t.echo", b"x", 5)).data == b"re:x"


async def test_publishing_over_the_payload_limit_is_too_large(nc):
    with pytest.raises(errors.TooLarge):
        await bus.publish(nc, "t.big", b"x" * (nc.max_payload + 1))


async def test_publishing_on_a_closed_connection_is_unreachable(nats_url):
    import nats

    closed = await nats.connect(nats_url)
    await closed.close()
    with pytest.raises(errors.Unreachable):
        await bus.publish(closed, "t.any", b"x")


async def test_stream_reads_and_compare_and_set_publishes(nc):
    js = nc.jetstream()
    assert await bus.last_sequence(js, "KYB_TEST") == 0  # no such stream
    with pytest.raises(errors.NotFound):
        await bus.subscribe_ordered(js, "t.s.>", stream="KYB_TEST")
    await js.add_stream(api.StreamConfig(name="KYB_TEST", subjects=["t.s.>"]))
    with pytest.raises(errors.NotFound):
        await bus.last_message(js, "KYB_TEST", "t.s.a")

    first = await bus.publish_after(js, "t.s.a", b"1", 0)
    with pytest.raises(errors.Conflict):
        await bus.publish_after(js, "t.s.a", b"2", 0)  # another came since
    second = await bus.publish_after(js, "t.s.a", b"2", first)
    assert (await bus.last_message(js, "KYB_TEST", "t.s.a")).data == b"2"
    assert await bus.last_sequence(js, "KYB_TEST") == second

    for after, data in ((0, b"1"), (first, b"2")):  # from the start; from the message after ``first``
        sub = await bus.subscribe_ordered(js, "t.s.>", stream="KYB_TEST", after=after)
        try:
            assert (await sub.next_msg(timeout=5)).data == data
        finally:
            await sub.unsubscribe()
