"""nodeipam: the range allocator's properties (hypothesis) and the service on a real nats-server."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kyb.client import connect
from kyb.store import Store
from schemas.core import Node, NodeSpec
from schemas.meta import ObjectMeta
from services.nodeipam.reconcile import CidrExhausted, CidrSet, Settings, rebuild, with_cidr
from tests.cluster import FAST_LEASE, Services, wait_for

# -- pure ------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    mask=st.integers(min_value=24, max_value=28),
    ops=st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=40)), max_size=120),
)
def test_ranges_are_never_handed_out_twice(mask: int, ops: list[tuple[bool, int]]) -> None:
    cidrs = CidrSet("10.244.0.0/22", mask)
    held: dict[int, str] = {}
    for add, node in ops:
        if add and node not in held:
            try:
                held[node] = cidrs.allocate()
            except CidrExhausted:
                assert len(held) == cidrs.size
                continue
        elif not add and node in held:
            cidrs.release(held.pop(node))
        values = list(held.values())
        assert len(values) == len(set(values))  # never the same range twice
        nets = [ipaddress.ip_network(v) for v in values]
        assert all(n.prefixlen == mask and n.subnet_of(ipaddress.ip_network("10.244.0.0/22")) for n in nets)
        assert sorted(cidrs.taken()) == sorted(values)


@given(names=st.lists(st.sampled_from("abcdefgh"), unique=True, max_size=8), data=st.data())
def test_rebuild_takes_what_the_nodes_hold(names: list[str], data: st.DataObject) -> None:
    cidrs = CidrSet("10.244.0.0/16", 24)
    nodes = []
    for n in names:
        cidr = data.draw(st.sampled_from(["", "127.16.0.0/16", "10.244.3.0/24", cidrs.cidr(len(nodes) + 10)]))
        nodes.append(Node(metadata=ObjectMeta(name=n, creationTimestamp=f"2026-01-01T00:00:0{len(nodes)}Z"),
                          spec=NodeSpec(podCIDR=cidr, podCIDRs=[cidr] if cidr else [])))
    rebuilt, held = rebuild(nodes, Settings())
    assert len(set(held.values())) == len(held)
    assert all(c.startswith("10.244.") for c in held.values())
    claimed = [n for n in nodes if n.spec.podCIDR == "10.244.3.0/24"]
    if claimed:
        assert held.get(claimed[0].metadata.name) == "10.244.3.0/24"  # the oldest keeps a duplicate
    fresh = rebuilt.allocate()
    assert fresh not in held.values()


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        CidrSet("10.244.0.0/16", 12)
    assert CidrSet("10.244.0.0/16", 24).size == 256
    assert with_cidr(Node(metadata=ObjectMeta(name="n")), "10.244.1.0/24").spec.podCIDRs == ["10.244.1.0/24"]


# -- the service -----------------------------------------------------------------------------


async def _cidr(store: Store, name: str) -> str:
    return (await store.get("Node", None, name)).spec.podCIDR


async def test_service_assigns_releases_and_survives_a_restart(nats_url: str) -> None:
    nc = await connect(nats_url)
    store = Store(nc.jetstream())
    await store.ensure_buckets()
    options = {**FAST_LEASE, "cluster_cidr": "10.244.0.0/23", "node_cidr_mask_size": 24}
    services = Services(["nodeipam"], nats_url, options).start()
    try:
        for name in ("a", "b"):
            await store.create(Node(metadata=ObjectMeta(name=name)))
        a = await wait_for(lambda: _cidr(store, "a"), what="a's range")
        b = await wait_for(lambda: _cidr(store, "b"), what="b's range")
        assert {a, b} == {"10.244.0.0/24", "10.244.1.0/24"}
        assert (await store.get("Node", None, "a")).spec.podCIDRs == [a]
        await store.create(Node(metadata=ObjectMeta(name="c")))
        await asyncio.sleep(0.5)
        assert await _cidr(store, "c") == ""  # the cluster CIDR is full
        await services.stop()
        # a new term rebuilds from the Nodes: a and b keep theirs, c still waits
        services = Services(["nodeipam"], nats_url, options).start()
        await asyncio.sleep(1.0)
        assert (await _cidr(store, "a"), await _cidr(store, "b"), await _cidr(store, "c")) == (a, b, "")
        current = await store.get("Node", None, "a")
        await store.delete("Node", None, "a", resource_version=current.metadata.resourceVersion)
        assert await wait_for(lambda: _cidr(store, "c"), what="c's range once a is gone") == a
    finally:
        await services.stop()
        await nc.close()
