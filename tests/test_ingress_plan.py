"""Ingress routing as pure functions: the matching examples of the Kubernetes Ingress
documentation, class selection, and precedence properties (hypothesis)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.core import Secret, Service
from schemas.discovery import EndpointSlice
from schemas.networking import Ingress, IngressClass
from schemas.validation import decode
from services.ingress import nginxconf
from services.ingress.plan import (
    PathRule,
    Table,
    Target,
    is_ours,
    prefix_matches,
    table,
    wants_status,
)


def ingress(name: str, rules: list[dict[str, Any]] | None = None, *, default: str | None = None,
            cls: str | None = "kyb", tls: list[dict[str, Any]] | None = None, created: str | None = None,
            annotations: dict[str, str] | None = None) -> Ingress:
    spec: dict[str, Any] = {"rules": rules or []}
    if cls is not None:
        spec["ingressClassName"] = cls
    if default:
        spec["defaultBackend"] = {"service": {"name": default, "port": {"number": 80}}}
    if tls:
        spec["tls"] = tls
    meta: dict[str, Any] = {"name": name, "namespace": "default", "annotations": annotations or {}}
    obj = decode({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec})
    assert isinstance(obj, Ingress)
    if created:
        import msgspec
        obj = msgspec.structs.replace(obj, metadata=msgspec.structs.replace(obj.metadata, creationTimestamp=created))
    return obj


def rule(host: str, *paths: tuple[str, str, str]) -> dict[str, Any]:
    """``rule("foo.com", ("/a", "Prefix", "svc"))``"""
    out: dict[str, Any] = {"http": {"paths": [
        {"path": p, "pathType": t, "backend": {"service": {"name": s, "port": {"number": 80}}}} for p, t, s in paths
    ]}}
    if host:
        out["host"] = host
    return out


def service(name: str) -> Service:
    obj = decode({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
                  "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    assert isinstance(obj, Service)
    return obj


def endpoints(name: str, *ips: str, ready: bool = True) -> EndpointSlice:
    obj = decode({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{name}-x", "namespace": "default", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip in ips],
    })
    assert isinstance(obj, EndpointSlice)
    return obj


def routed(t: Table, host: str, path: str) -> str | None:
    target = t.route(host, path)
    return None if target is None else target.service


# -- the Kubernetes documentation's examples ---------------------------------------------

# https://kubernetes.io/docs/concepts/services-networking/ingress/#examples (path types)
EXAMPLES = [
    pytest.param("Prefix", "/", "/aaa/bbb", True, id="prefix-root-matches-all"),
    pytest.param("Exact", "/foo", "/foo", True, id="exact-same"),
    pytest.param("Exact", "/foo", "/bar", False, id="exact-other"),
    pytest.param("Exact", "/foo", "/foo/", False, id="exact-trailing-slash-request"),
    pytest.param("Exact", "/foo/", "/foo", False, id="exact-trailing-slash-rule"),
    pytest.param("Prefix", "/foo", "/foo", True, id="prefix-same"),
    pytest.param("Prefix", "/foo", "/foo/", True, id="prefix-request-slash"),
    pytest.param("Prefix", "/foo/", "/foo", True, id="prefix-rule-slash"),
    pytest.param("Prefix", "/foo/", "/foo/", True, id="prefix-both-slash"),
    pytest.param("Prefix", "/aaa/bb", "/aaa/bbb", False, id="prefix-not-element"),
    pytest.param("Prefix", "/aaa/bbb", "/aaa/bbb", True, id="prefix-element"),
    pytest.param("Prefix", "/aaa/bbb/", "/aaa/bbb", True, id="prefix-ignores-rule-slash"),
    pytest.param("Prefix", "/aaa/bbb", "/aaa/bbb/", True, id="prefix-request-trailing"),
    pytest.param("Prefix", "/aaa/bbb", "/aaa/bbb/ccc", True, id="prefix-subpath"),
    pytest.param("Prefix", "/aaa/bbb", "/aaa/bbbxyz", False, id="prefix-string-not-element"),
    pytest.param("ImplementationSpecific", "/aaa", "/aaa/ccc", True, id="implementation-specific-is-prefix"),
    pytest.param("ImplementationSpecific", "/aaa", "/aaaccc", False, id="implementation-specific-element"),
]


@pytest.mark.parametrize("kind,path,request_path,matches", EXAMPLES)
def test_path_types_as_documented(kind, path, request_path, matches):
    t = table([ingress("i", [rule("", (path, kind, "svc"))])], [service("svc")], [])
    assert (routed(t, "any.example", request_path) == "svc") is matches


def test_multiple_matches_longest_path_then_exact():
    # Documentation table: Prefix / and /aaa, request /aaa/ccc -> /aaa; Prefix /aaa and Exact /aaa -> Exact.
    t = table([ingress("i", [rule("", ("/", "Prefix", "root"), ("/aaa", "Prefix", "aaa"),
                                   ("/aaa", "Exact", "exact"), ("/aaa/bbb", "Prefix", "deep"))])], [], [])
    assert routed(t, "h", "/aaa/ccc") == "aaa"
    assert routed(t, "h", "/aaa") == "exact"
    assert routed(t, "h", "/aaa/bbb/c") == "deep"
    assert routed(t, "h", "/ccc") == "root"


def test_simple_fanout():
    t = table([ingress("fanout", [rule("foo.bar.com", ("/foo", "Prefix", "service1"), ("/bar", "Prefix", "service2"))])],
              [], [])
    assert routed(t, "foo.bar.com", "/foo/x") == "service1"
    assert routed(t, "foo.bar.com:8080", "/bar") == "service2"
    assert routed(t, "foo.bar.com", "/baz") is None
    assert routed(t, "other.com", "/foo") is None


def test_name_based_virtual_hosting_with_catch_all():
    t = table([ingress("vhost", [rule("foo.bar.com", ("/", "Prefix", "service1")),
                                 rule("bar.foo.com", ("/", "Prefix", "service2")),
                                 rule("", ("/", "Prefix", "service3"))])], [], [])
    assert routed(t, "FOO.bar.com", "/") == "service1"
    assert routed(t, "bar.foo.com", "/x") == "service2"
    assert routed(t, "unknown.example", "/") == "service3"
    assert routed(t, "", "/") == "service3"


def test_wildcard_host_matches_exactly_one_label():
    t = table([ingress("wild", [rule("foo.bar.com", ("/bar", "Prefix", "service1")),
                                rule("*.foo.com", ("/foo", "Prefix", "service2"))])], [], [])
    assert routed(t, "bar.foo.com", "/foo") == "service2"
    assert routed(t, "baz.bar.foo.com", "/foo") is None
    assert routed(t, "foo.com", "/foo") is None
    assert routed(t, "foo.bar.com", "/bar") == "service1"


def test_exact_host_before_wildcard_before_any_host():
    t = table([ingress("i", [rule("*.foo.com", ("/", "Prefix", "wild")), rule("a.foo.com", ("/", "Prefix", "exact")),
                             rule("", ("/", "Prefix", "any"))])], [], [])
    assert routed(t, "a.foo.com", "/") == "exact"
    assert routed(t, "b.foo.com", "/") == "wild"
    assert routed(t, "b.bar.com", "/") == "any"


def test_default_backend_when_no_rule_matches():
    t = table([ingress("i", [rule("foo.com", ("/api", "Prefix", "api"))], default="fallback")], [], [])
    assert routed(t, "foo.com", "/api/v1") == "api"
    assert routed(t, "foo.com", "/web") == "fallback"
    assert routed(t, "other.com", "/") == "fallback"


def test_oldest_ingress_wins_a_clash_and_rules_merge():
    old = ingress("old", [rule("foo.com", ("/", "Prefix", "old"))], created="2024-01-01T00:00:00Z")
    new = ingress("new", [rule("foo.com", ("/", "Prefix", "new"), ("/new", "Prefix", "newpath"))],
                  created="2025-01-01T00:00:00Z")
    t = table([new, old], [], [])
    assert routed(t, "foo.com", "/") == "old"
    assert routed(t, "foo.com", "/new/x") == "newpath"


def test_backends_are_ready_endpoints_of_the_named_service_port():
    t = table([ingress("i", [rule("", ("/", "Prefix", "web"))])], [service("web")],
              [endpoints("web", "127.9.0.1", "127.9.0.2"), endpoints("other", "127.9.0.3")])
    target = t.route("h", "/")
    assert target is not None and target.backends == (("127.9.0.1", 8080), ("127.9.0.2", 8080))
    t = table([ingress("i", [rule("", ("/", "Prefix", "web"))])], [service("web")], [endpoints("web", "127.9.0.1", ready=False)])
    target = t.route("h", "/")
    assert target is not None and target.backends == ()  # -> 503


# -- classes ------------------------------------------------------------------------------


def ingress_class(name: str, controller: str, default: bool = False) -> IngressClass:
    ann = {"ingressclass.kubernetes.io/is-default-class": "true"} if default else {}
    obj = decode({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                  "metadata": {"name": name, "annotations": ann}, "spec": {"controller": controller}})
    assert isinstance(obj, IngressClass)
    return obj


def test_class_filtering():
    nginx = ingress_class("nginx", "k8s.io/ingress-nginx")
    ours = ingress_class("public", "kybernetes.io/ingress")
    assert is_ours(ingress("a", cls="kyb"), [])
    assert not is_ours(ingress("a", cls="nginx"), [nginx])
    assert is_ours(ingress("a", cls="public"), [ours])
    assert not is_ours(ingress("a", cls=None), [nginx])
    assert is_ours(ingress("a", cls=None), [nginx], watch_without_class=True)
    assert is_ours(ingress("a", cls=None), [ingress_class("public", "kybernetes.io/ingress", default=True)])
    assert not is_ours(ingress("a", cls=None), [ingress_class("nginx", "k8s.io/ingress-nginx", default=True)],
                       watch_without_class=True)
    assert is_ours(ingress("a", cls=None, annotations={"kubernetes.io/ingress.class": "kyb"}), [])


def test_status_written_for_ours_and_cleared_when_it_leaves():
    import msgspec

    from schemas.core import LoadBalancerIngress, LoadBalancerStatus
    from schemas.networking import IngressStatus

    ing = ingress("a")
    assert wants_status(ing, True, "127.0.0.1") == ["127.0.0.1"]
    assert wants_status(ing, False, "127.0.0.1") is None
    served = msgspec.structs.replace(ing, status=IngressStatus(
        loadBalancer=LoadBalancerStatus(ingress=[LoadBalancerIngress(ip="127.0.0.1")])))
    assert wants_status(served, True, "127.0.0.1") is None
    assert wants_status(served, False, "127.0.0.1") == []


def test_tls_certificate_by_host_and_wildcard():
    def secret(name: str, pem: bytes) -> Secret:
        obj = decode({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                      "metadata": {"name": name, "namespace": "default"},
                      "data": {"tls.crt": base64.b64encode(pem).decode(), "tls.key": base64.b64encode(b"k").decode()}})
        assert isinstance(obj, Secret)
        return obj

    ing = ingress("i", [rule("a.com", ("/", "Prefix", "s"))],
                  tls=[{"hosts": ["a.com"], "secretName": "a"}, {"hosts": ["*.b.com"], "secretName": "b"}])
    t = table([ing], [], [], [secret("a", b"A"), secret("b", b"B")])
    assert t.certificate("a.com").cert == b"A"
    assert t.certificate("x.b.com").cert == b"B"
    assert t.certificate("x.y.b.com") is None


# -- properties ---------------------------------------------------------------------------

segment = st.sampled_from(["a", "b", "aa", "ab", "x"])
paths = st.lists(segment, min_size=0, max_size=4).map(lambda s: "/" + "/".join(s))
kinds = st.sampled_from(["Exact", "Prefix"])


@given(st.lists(st.tuples(paths, kinds), min_size=1, max_size=8, unique=True), paths)
def test_the_chosen_rule_matches_and_no_better_rule_matches(rules, request_path):
    rows = [(p, k, f"s{i}") for i, (p, k) in enumerate(rules)]
    t = table([ingress("i", [rule("h.com", *rows)])], [], [])
    chosen = t.route("h.com", request_path)
    candidates = [r for r in t.exact["h.com"] if r.matches(request_path)]
    if chosen is None:
        assert candidates == []
        return
    best = next(r for r in candidates if r.target == chosen)
    for r in candidates:
        assert len(r.path) <= len(best.path)
        if len(r.path) == len(best.path) and r.kind == "Exact":
            assert best.kind == "Exact"


@given(paths, paths)
def test_prefix_is_element_wise(prefix, path):
    matches = prefix_matches(prefix, path)
    p_elems = [e for e in prefix.split("/") if e]
    r_elems = [e for e in path.split("/") if e]
    assert matches == (r_elems[: len(p_elems)] == p_elems)


@given(st.lists(st.tuples(paths, kinds), min_size=1, max_size=6, unique=True), paths)
def test_nginx_locations_pick_the_same_rule(rules, request_path):
    """The nginx plane's locations, resolved the way nginx does (``=`` first, then the longest
    prefix), choose the same backend as the builtin plane."""
    rows = [(p, k, f"s{i}") for i, (p, k) in enumerate(rules)]
    t = table([ingress("i", [rule("h.com", *rows)])], [], [])
    expected = t.route("h.com", request_path)
    locs = nginxconf.locations(t.exact["h.com"], None)
    exact = {a[3:-1]: tgt for a, tgt in locs if a.startswith("= ")}
    if request_path in exact:
        got = exact[request_path]
    else:
        prefixes = [(a.strip('"'), tgt) for a, tgt in locs if not a.startswith("= ")]
        got = max((p for p in prefixes if request_path.startswith(p[0])), key=lambda p: len(p[0]))[1]
    assert got == expected


def test_prefix_rule_matches_whole_elements():
    r = PathRule(path="/a", kind="Prefix", target=Target(namespace="d", service="s", port="80", backends=()))
    assert r.matches("/a/b") and not r.matches("/ab")
