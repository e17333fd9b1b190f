"""Properties of the cluster DNS answers, checked on the wire form dnslib parses back."""

from __future__ import annotations

import pytest
from dnslib import QTYPE, RCODE, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.core import Service, ServicePort, ServiceSpec
from schemas.discovery import Endpoint, EndpointConditions, EndpointSlice, EndpointSlicePort
from schemas.meta import ObjectMeta
from services.dns.plan import answer_bytes, build_zone


def svc(name: str, ip: str = "127.254.0.7", *, ns: str = "default", type_: str = "ClusterIP", external: str = "") -> Service:
    return Service(
        metadata=ObjectMeta(name=name, namespace=ns),
        spec=ServiceSpec(type=type_, clusterIP=ip, externalName=external,
                         ports=[ServicePort(name="http", port=80, targetPort=8080), ServicePort(port=81)]),
    )


def eps(name: str, ready: dict[str, bool], hostnames: dict[str, str] | None = None) -> EndpointSlice:
    return EndpointSlice(
        metadata=ObjectMeta(name=f"{name}-x", namespace="default", labels={"kubernetes.io/service-name": name}),
        endpoints=[Endpoint(addresses=[ip], conditions=EndpointConditions(ready=r), hostname=(hostnames or {}).get(ip))
                   for ip, r in ready.items()],
        ports=[EndpointSlicePort(name="http", port=8080)],
    )


def ask(zone, name: str, qtype: str = "A") -> DNSRecord:
    return DNSRecord.parse(answer_bytes(DNSRecord.question(name, qtype).pack(), zone))


def values(reply: DNSRecord, qtype: str = "A") -> list[str]:
    return sorted(str(rr.rdata) for rr in reply.rr if QTYPE[rr.rtype] == qtype)


def test_cluster_ip_service_and_srv():
    zone = build_zone([svc("web")], [])
    assert values(ask(zone, "web.default.svc.cluster.local")) == ["127.254.0.7"]
    assert values(ask(zone, "WEB.default.svc.cluster.local.")) == ["127.254.0.7"]  # case-insensitive
    srv = ask(zone, "_http._tcp.web.default.svc.cluster.local", "SRV")
    assert values(srv, "SRV") == ["0 100 80 web.default.svc.cluster.local."]
    assert [str(rr.rdata) for rr in srv.ar] == ["127.254.0.7"]


def test_headless_answers_ready_pods_and_their_hostnames():
    zone = build_zone([svc("db", "None")], [eps("db", {"127.1.0.1": True, "127.1.0.2": False, "127.1.0.3": True},
                                                  {"127.1.0.1": "db-0"})])
    assert values(ask(zone, "db.default.svc.cluster.local")) == ["127.1.0.1", "127.1.0.3"]
    assert values(ask(zone, "db-0.db.default.svc.cluster.local")) == ["127.1.0.1"]
    srv = values(ask(zone, "_http._tcp.db.default.svc.cluster.local", "SRV"), "SRV")
    assert srv == ["0 100 8080 127-1-0-3.db.default.svc.cluster.local.", "0 100 8080 db-0.db.default.svc.cluster.local."]


@pytest.mark.parametrize(
    "name,qtype,rcode,answers",
    [
        pytest.param("nope.default.svc.cluster.local", "A", RCODE.NXDOMAIN, [], id="unknown-service"),
        pytest.param("web.other.svc.cluster.local", "A", RCODE.NXDOMAIN, [], id="other-namespace"),
        pytest.param("web.default.svc.cluster.local", "AAAA", RCODE.NOERROR, [], id="nodata"),
        pytest.param("_x._tcp.web.default.svc.cluster.local", "SRV", RCODE.NXDOMAIN, [], id="unnamed-port"),
        pytest.param("127-1-2-3.default.pod.cluster.local", "A", RCODE.NOERROR, ["127.1.2.3"], id="pod-name"),
        pytest.param("example.com", "A", RCODE.REFUSED, [], id="outside-the-zone"),
        pytest.param("default.svc.cluster.local", "A", RCODE.NOERROR, [], id="empty-non-terminal"),
    ],
)
def test_negative_and_special_names(name, qtype, rcode, answers):
    reply = ask(build_zone([svc("web")], []), name, qtype)
    assert reply.header.rcode == rcode
    assert values(reply) == answers


def test_external_name_is_a_cname():
    zone = build_zone([svc("ext", "", type_="ExternalName", external="db.example.com")], [])
    reply = ask(zone, "ext.default.svc.cluster.local")
    assert values(reply, "CNAME") == ["db.example.com."]


names = st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(
    services=st.lists(st.tuples(names, st.integers(1, 250), st.booleans()), max_size=8, unique_by=lambda t: t[0]),
    probe=names,
)
def test_every_service_resolves_and_nothing_else_does(services, probe):
    objs = [svc(n, "None" if headless else f"127.254.0.{i}") for n, i, headless in services]
    ready = {n: {f"127.1.0.{i}": True} for n, i, headless in services if headless}
    zone = build_zone(objs, [eps(n, r) for n, r in ready.items()])
    for n, i, headless in services:
        got = values(ask(zone, f"{n}.default.svc.cluster.local"))
        assert got == [f"127.1.0.{i}" if headless else f"127.254.0.{i}"]
    if probe not in {n for n, _, _ in services}:
        assert ask(zone, f"{probe}.default.svc.cluster.local").header.rcode == RCODE.NXDOMAIN


@given(st.binary(max_size=64))
def test_garbage_never_crashes(packet):
    out = answer_bytes(packet, build_zone([svc("web")], []))
    assert out is None or DNSRecord.parse(out).header.qr == 1
