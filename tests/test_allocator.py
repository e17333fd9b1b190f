"""The api's allocator on a real nats-server, past its random probes: a small range fills up,
each address and port goes out once, a full range is a field error, what a Service frees goes
out again, and repair frees only what stayed orphaned."""

from __future__ import annotations

import random

import msgspec
import pytest

from kyb import errors
from schemas.core import Service
from services.api.allocator import Allocator, Ranges


def service(name: str, kind: str = "ClusterIP", **spec) -> Service:
    body = {"type": kind, "ports": [{"port": 80}], **spec}
    return msgspec.convert({"metadata": {"name": name, "namespace": "default"}, "spec": body}, type=Service)


@pytest.fixture
def allocator(nc):
    # 6 ClusterIPs (127.254.0.1-6) and 4 node ports: most random probes hit a taken one
    return Allocator(nc.jetstream(), Ranges(service_cidr="127.254.0.0/29", node_port_range=(30000, 30003)),
                     rng=random.Random(7))


async def test_a_small_range_hands_out_every_address_once_then_is_full(allocator):
    assigned = [await allocator.assign(service(f"s{i}"), None) for i in range(6)]
    ips = [svc.spec.clusterIP for svc, _ in assigned]
    assert sorted(ips) == [f"127.254.0.{i}" for i in range(1, 7)]
    with pytest.raises(errors.Invalid) as full:
        await allocator.assign(service("s6"), None)
    assert full.value.details[0].field == "spec.clusterIP" and "is full" in full.value.message

    await allocator.release(assigned[2][0])
    again, _ = await allocator.assign(service("s6"), None)
    assert again.spec.clusterIP == ips[2]


async def test_node_ports_go_out_once_and_a_taken_one_is_a_field_error(allocator):
    ports = []
    for i in range(4):
        svc, _ = await allocator.assign(service(f"n{i}", "NodePort"), None)
        ports.append(svc.spec.ports[0].nodePort)
    assert sorted(ports) == [30000, 30001, 30002, 30003]
    with pytest.raises(errors.Invalid) as taken:
        await allocator.assign(service("x", "NodePort", ports=[{"port": 80, "nodePort": 30001}]), None)
    assert "already allocated" in taken.value.message
    with pytest.raises(errors.Invalid) as full:
        await allocator.assign(service("y", "NodePort"), None)
    assert "no free node port" in full.value.message


async def test_releasing_what_another_service_holds_frees_nothing(allocator):
    a, _ = await allocator.assign(service("a"), None)
    stranger = msgspec.structs.replace(service("b"), spec=a.spec)  # names a's address, held by a
    await allocator.release(stranger)
    with pytest.raises(errors.Invalid):
        await allocator.assign(service("c", clusterIP=a.spec.clusterIP), None)


async def test_repair_frees_an_orphan_only_once_it_stayed_orphaned(allocator):
    kept, _ = await allocator.assign(service("kept"), None)
    leaked, _ = await allocator.assign(service("leaked"), None)  # its write never happened
    assert await allocator.repair([kept], older_than=60, now=100.0) == 0
    assert await allocator.repair([kept], older_than=60, now=130.0) == 0
    assert await allocator.repair([kept], older_than=60, now=161.0) == 1
    again, _ = await allocator.assign(service("new", clusterIP=leaked.spec.clusterIP), None)
    assert again.spec.clusterIP == leaked.spec.clusterIP
    assert await allocator.repair([kept, again], older_than=60, now=300.0) == 0


async def test_the_scan_after_the_probes_skips_what_is_taken(allocator, nc):
    """With all but one address of a /24 held by others, the random probes may all miss; the
    scan then claims the free one without trying the 253 taken ones."""
    big = Allocator(nc.jetstream(), Ranges(service_cidr="127.254.0.0/24"), rng=random.Random(1))
    kv = await big._bucket()
    for i in range(1, 255):
        if i != 200:
            await kv.create(f"clusterip.127-254-0-{i}", b"other/svc")
    claims = []
    claim = big._claim

    async def counted(key, owner):
        claims.append(key)
        return await claim(key, owner)

    big._claim = counted
    svc, _ = await big.assign(service("last"), None)
    assert svc.spec.clusterIP == "127.254.0.200"
    assert len(claims) <= 65, f"{len(claims)} claims"
