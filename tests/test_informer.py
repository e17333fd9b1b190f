"""The informer on a real nats-server: listing then changes, indexes, and a server restart
mid-watch with nothing missed and nothing duplicated."""

from __future__ import annotations

import asyncio
from collections import Counter

import msgspec
import nats

from kyb.informer import Informer, by_label, by_node_name
from kyb.store import Store
from schemas.pod import Pod
from tests.cluster import wait_for as eventually


def pod(name: str, node: str | None = None, **labels) -> Pod:
    spec = {"containers": [{"name": "c", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    return msgspec.convert(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": labels}, "spec": spec},
        Pod,
    )


async def test_lists_then_follows_changes_with_indexes(nc):
    store = Store(nc.jetstream())
    await store.ensure_buckets()
    await store.create(pod("a", node="n1", app="web"))
    await store.create(pod("b", app="db"))
    events: list[tuple[str, str]] = []
    inf = Informer(nc, "Pod", indexers={"node": by_node_name, "app": by_label("app")})
    inf.add_handler(lambda ev, new, old, h: events.append((ev, (new or old).metadata.name)))
    await inf.start()
    try:
        await inf.wait_synced(10)
        assert sorted(p.metadata.name for p in inf.list()) == ["a", "b"]
        assert [p.metadata.name for p in inf.by_index("node", "n1")] == ["a"]
        c = await store.create(pod("c", node="n1", app="web"))
        await store.delete("Pod", "default", "b")
        await eventually(lambda: len(inf) == 2 and inf.get("default.c") is not None, what="c added, b deleted")
        assert sorted(p.metadata.name for p in inf.by_index("app", "web")) == ["a", "c"]
        assert inf.by_index("app", "db") == []
        assert inf.get("default.c").metadata.resourceVersion == c.metadata.resourceVersion
        assert ("DELETED", "b") in events and ("ADDED", "c") in events
    finally:
        await inf.stop()


async def test_synced_on_an_empty_bucket(nc):
    inf = Informer(nc, "ConfigMap")
    await inf.start()
    try:
        await inf.wait_synced(10)
        assert inf.list() == []
    finally:
        await inf.stop()


async def test_survives_server_restart_mid_watch_nothing_missed_or_duplicated(nats_server):
    client = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    writer = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        store = Store(writer.jetstream())
        await store.ensure_buckets()
        seen: Counter[tuple[str, str, str]] = Counter()
        inf = Informer(client, "Pod", heartbeat=0.5)
        inf.add_handler(lambda ev, new, old, h: seen.update([(ev, (new or old).metadata.name, (new or old).metadata.resourceVersion)]))
        await inf.start()
        await inf.wait_synced(10)
        for i in range(20):
            await store.create(pod(f"p{i}"))
        await eventually(lambda: len(inf) == 20, what="20 pods before restart")

        await asyncio.to_thread(nats_server.restart)
        # Writes after the restart, while the informer's consumer is gone.
        for _attempt in range(100):
            try:
                await store.delete("Pod", "default", "p0")
                break
            except Exception:
                await asyncio.sleep(0.1)
        for i in range(20, 40):
            await store.create(pod(f"p{i}"))
        p5 = await store.get("Pod", "default", "p5")
        p5 = await store.update(msgspec.structs.replace(p5, metadata=msgspec.structs.replace(p5.metadata, labels={"v": "2"})))

        def converged() -> bool:
            cur = inf.get("default.p5")
            return len(inf) == 39 and inf.get("default.p0") is None and cur is not None and cur.metadata.labels == {"v": "2"}

        await eventually(converged, timeout=30, what="informer to catch up after restart")
        assert inf.restarts >= 1
        truth = {p.metadata.name: p.metadata.resourceVersion for p in await store.list("Pod")}
        assert {p.metadata.name: p.metadata.resourceVersion for p in inf.list()} == truth
        assert all(n == 1 for n in seen.values()), [k for k, n in seen.items() if n > 1]
        await inf.stop()
    finally:
        await client.close()
        await writer.close()


async def test_a_stop_whose_cancellation_never_arrives_still_ends_a_busy_watch(nc):
    """nats-py's next_msg can swallow the cancellation stop() sends (Python 3.11's wait_for):
    the watch must still end once stopping, though changes keep arriving, or stop() hangs."""
    store = Store(nc.jetstream())
    await store.ensure_buckets()
    inf = Informer(nc, "Pod")
    await inf.start()
    writes = 0

    async def writer() -> None:
        nonlocal writes
        while True:
            await store.create(pod(f"w{writes}"))
            writes += 1
            await asyncio.sleep(0.02)

    busy = asyncio.create_task(writer())
    try:
        await inf.wait_synced(10)
        task = inf._task
        assert task is not None
        inf._stopping = True  # what stop() sets; its cancel is the part that can be lost
        started = writes
        await eventually(lambda: task.done(), 10, "the watch ends while changes keep coming")
        assert writes > started, "no change arrived, so the test proved nothing"
    finally:
        busy.cancel()
        await asyncio.gather(busy, return_exceptions=True)
        await inf.stop()


async def test_every_informer_of_the_process_holds_one_decoded_object(nc):
    """No second copy per informer, per index or per handler: the services of ``kyb up`` each
    watch Pods, and all of them must hold the very same decoded object."""
    store = Store(nc.jetstream())
    await store.ensure_buckets()
    await store.create(pod("a", node="n1", app="web"))
    seen: list[Pod] = []
    one = Informer(nc, "Pod", indexers={"node": by_node_name})
    other = Informer(nc, "Pod", indexers={"app": by_label("app")})
    other.add_handler(lambda ev, new, old, h: new is not None and seen.append(new))
    await one.start()
    await other.start()
    try:
        await one.wait_synced(10)
        await other.wait_synced(10)
        a = one.get("default.a")
        assert a is not None and other.get("default.a") is a
        assert one.by_index("node", "n1")[0] is a and other.by_index("app", "web")[0] is a
        assert one.list("default")[0] is a and seen[-1] is a
        changed = await store.mutate("Pod", "default", "a", lambda p: msgspec.structs.replace(
            p, metadata=msgspec.structs.replace(p.metadata, labels={"app": "web", "v": "2"})))
        want = changed.metadata.resourceVersion
        await eventually(lambda: all(i.get("default.a").metadata.resourceVersion == want for i in (one, other)),
                         what="both informers at the update")
        assert one.get("default.a") is other.get("default.a") is seen[-1]
        assert one.get("default.a") is not a
    finally:
        await one.stop()
        await other.stop()


def test_shared_decode_tells_apart_messages_of_other_servers():
    from kyb.informer import shared_decode
    from kyb.store import kind_info

    info = kind_info("Pod")
    first = msgspec.json.encode(pod("a", app="web"))
    second = msgspec.json.encode(pod("a", app="db"))
    x = shared_decode(info, "default.a", first, 7)
    assert shared_decode(info, "default.a", first, 7) is x
    y = shared_decode(info, "default.a", second, 7)  # same key and sequence, another stream
    assert y is not x and y.metadata.labels == {"app": "db"}
