"""Properties of the proxy's pure parts: the routing table from Services and slices, and the
balancer's spreading, retries and ClientIP affinity."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.core import (
    ClientIPConfig,
    LoadBalancerIngress,
    LoadBalancerStatus,
    Service,
    ServicePort,
    ServiceSpec,
    ServiceStatus,
    SessionAffinityConfig,
)
from schemas.discovery import Endpoint, EndpointConditions, EndpointSlice, EndpointSlicePort
from schemas.meta import ObjectMeta
from services.proxy.balancer import Balancer
from services.proxy.plan import Frontend, diff, routes

backends_st = st.lists(
    st.tuples(st.sampled_from([f"127.1.0.{i}" for i in range(1, 9)]), st.sampled_from([80, 8080])),
    min_size=1,
    max_size=8,
    unique=True,
).map(lambda xs: tuple(sorted(xs)))


@settings(max_examples=200, deadline=None)
@given(backends=backends_st, rounds=st.integers(1, 5))
def test_round_robin_spreads_evenly(backends, rounds):
    b = Balancer(backends)
    picks = Counter(b.pick("127.0.0.1", 0.0) for _ in range(rounds * len(backends)))
    assert picks == {be: rounds for be in backends}


@settings(max_examples=200, deadline=None)
@given(backends=backends_st, data=st.data())
def test_never_picks_an_excluded_backend_and_gives_up_when_all_are(backends, data):
    b = Balancer(backends, affinity_seconds=data.draw(st.sampled_from([None, 10])))
    exclude = set(data.draw(st.lists(st.sampled_from(backends), unique=True)))
    for client in ("127.0.0.1", "127.0.0.2"):
        got = b.pick(client, 1.0, exclude)
        if len(exclude) == len(backends):
            assert got is None
        else:
            assert got in backends and got not in exclude


@settings(max_examples=200, deadline=None)
@given(backends=backends_st, timeout=st.integers(1, 100), gaps=st.lists(st.floats(0, 200), max_size=10))
def test_client_ip_affinity_holds_until_idle_for_the_timeout(backends, timeout, gaps):
    b = Balancer(backends, affinity_seconds=timeout)
    now = 0.0
    first = b.pick("127.9.9.9", now)
    for gap in gaps:
        now += gap
        other = b.pick("127.0.0.7", now)  # another client moves the round robin on
        assert other in backends
        got = b.pick("127.9.9.9", now)
        if gap <= timeout:
            assert got == first
        first = got


def test_affinity_dropped_when_its_backend_leaves():
    b = Balancer((("127.1.0.1", 80), ("127.1.0.2", 80)), affinity_seconds=100)
    held = b.pick("c", 0)
    remaining = tuple(x for x in b.backends if x != held)
    b.update(remaining, 100)
    assert b.pick("c", 1) == remaining[0]
    b.update((), 100)
    assert b.pick("c", 2) is None


def svc(name: str, type_: str = "ClusterIP", ip: str = "127.254.0.10", *, node_port: int | None = None,
        lb: str = "", affinity: int | None = None) -> Service:
    return Service(
        metadata=ObjectMeta(name=name, namespace="default"),
        spec=ServiceSpec(
            type=type_,
            clusterIP=ip,
            ports=[ServicePort(name="http", port=80, targetPort="http", nodePort=node_port),
                   ServicePort(name="dns", port=53, protocol="UDP")],
            sessionAffinity="ClientIP" if affinity is not None else "None",
            sessionAffinityConfig=SessionAffinityConfig(clientIP=ClientIPConfig(timeoutSeconds=affinity)) if affinity else None,
        ),
        status=ServiceStatus(loadBalancer=LoadBalancerStatus(ingress=[LoadBalancerIngress(ip=lb)] if lb else [])),
    )


def eps(name: str, ready: dict[str, bool]) -> EndpointSlice:
    return EndpointSlice(
        metadata=ObjectMeta(name=f"{name}-abc", namespace="default", labels={"kubernetes.io/service-name": name}),
        endpoints=[Endpoint(addresses=[ip], conditions=EndpointConditions(ready=r)) for ip, r in ready.items()],
        ports=[EndpointSlicePort(name="http", port=8080), EndpointSlicePort(name="dns", port=5353, protocol="UDP")],
    )


@pytest.mark.parametrize(
    "service,expected",
    [
        pytest.param(svc("a"), {Frontend("TCP", "127.254.0.10", 80), Frontend("UDP", "127.254.0.10", 53)}, id="cluster-ip"),
        pytest.param(svc("a", "NodePort", node_port=30001),
                     {Frontend("TCP", "127.254.0.10", 80), Frontend("UDP", "127.254.0.10", 53), Frontend("TCP", "127.0.0.1", 30001)},
                     id="node-port"),
        pytest.param(svc("a", "LoadBalancer", node_port=30002, lb="127.253.0.4"),
                     {Frontend("TCP", "127.254.0.10", 80), Frontend("UDP", "127.254.0.10", 53),
                      Frontend("TCP", "127.0.0.1", 30002), Frontend("TCP", "127.253.0.4", 80), Frontend("UDP", "127.253.0.4", 53)},
                     id="load-balancer"),
        pytest.param(svc("a", ip="None"), set(), id="headless"),
    ],
)
def test_frontends_per_service_type(service, expected):
    assert set(routes([service], [], "127.0.0.1")) == expected


def test_only_ready_endpoints_are_backends_and_affinity_is_carried():
    table = routes([svc("a", affinity=60)], [eps("a", {"127.1.0.1": True, "127.1.0.2": False})], "127.0.0.1")
    tcp = table[Frontend("TCP", "127.254.0.10", 80)]
    udp = table[Frontend("UDP", "127.254.0.10", 53)]
    assert tcp.backends == (("127.1.0.1", 8080),)
    assert udp.backends == (("127.1.0.1", 5353),)
    assert tcp.affinity_seconds == 60
    default = routes([svc("b", affinity=0)], [], "x")[Frontend("TCP", "127.254.0.10", 80)]
    assert default.affinity_seconds == 10800


def test_diff_opens_closes_and_retargets():
    before = routes([svc("a")], [eps("a", {"127.1.0.1": True})], "127.0.0.1")
    after = routes([svc("b", ip="127.254.0.11")], [], "127.0.0.1")
    d = diff(before, after)
    assert set(d.close) == set(before) and set(d.open) == set(after) and not d.retarget
    changed = routes([svc("a")], [eps("a", {"127.1.0.2": True})], "127.0.0.1")
    assert set(diff(before, changed).retarget) == set(before)
