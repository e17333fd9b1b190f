"""Both ingress data planes (builtin asyncio proxy, nginx with graceful reloads) serving
routing tables built from Ingress objects, in front of hollow HTTP/WebSocket pods bound on
their own 127.x addresses."""

from __future__ import annotations

import asyncio
import base64
import json
import random

import httpx
import pytest

from schemas.core import Secret
from schemas.validation import decode
from services.ingress.nginx import nginx_binary
from services.ingress.plan import table
from tests.test_ingress_helpers import HttpBackend, WsBackend, self_signed, tls_get, until
from tests.test_ingress_plan import endpoints, ingress, rule, service

PLANES = [
    pytest.param("builtin", id="builtin"),
    pytest.param("nginx", id="nginx", marks=pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed")),
]


class Harness:
    """One data plane on a random 127.x address and the pods behind it."""

    def __init__(self, kind: str) -> None:
        net = f"127.{random.randint(100, 199)}.{random.randint(0, 255)}"
        self.kind = kind
        self.ip = f"{net}.1"
        self.net = net
        self.http_port, self.https_port = 18080, 18443
        self.backends: list = []
        self.objects: dict[str, list] = {"ingresses": [], "services": [], "slices": [], "secrets": []}
        self.errors: list[str] = []
        if kind == "builtin":
            from services.ingress.builtin import BuiltinPlane
            self.plane = BuiltinPlane(self.ip, self.http_port, self.https_port, on_error=self._error)
        else:
            from services.ingress.nginx import NginxPlane
            self.plane = NginxPlane(self.ip, self.http_port, self.https_port, on_error=self._error)
        self.client = httpx.AsyncClient(timeout=5)

    def _error(self, what: str, e: Exception) -> None:
        self.errors.append(f"{what}: {e}")

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.http_port}"

    async def pod(self, app: str, *, ws: bool = False, ready: bool = True) -> HttpBackend:
        ip = f"{self.net}.{len(self.backends) + 10}"
        b = await (WsBackend(f"{app}-{len(self.backends)}", ip) if ws else HttpBackend(f"{app}-{len(self.backends)}", ip)).start()
        self.backends.append(b)
        self.objects["services"].append(service(app))
        self.objects["slices"].append(endpoints(app, ip, ready=ready))
        return b

    async def apply(self, *ingresses) -> None:
        self.objects["ingresses"] = list(ingresses)
        t = table(self.objects["ingresses"], self.objects["services"], self.objects["slices"], self.objects["secrets"])
        await self.plane.apply(t)

    async def get(self, path: str, host: str = "x.example", **kw) -> httpx.Response:
        return await self.client.get(self.url + path, headers={"Host": host, **kw.pop("headers", {})}, **kw)

    async def expect(self, path: str, host: str, who: str | int) -> None:
        """Poll until ``host path`` answers from pod ``who`` (a name prefix) or with status ``who``."""
        async def ok():
            r = await self.get(path, host)
            if isinstance(who, int):
                return r.status_code == who
            return r.status_code == 200 and r.json()["name"].startswith(who)
        await until(ok, 10, f"{host}{path} -> {who}")

    async def close(self) -> None:
        await self.client.aclose()
        await self.plane.close()
        for b in self.backends:
            await b.stop()


@pytest.fixture(params=PLANES)
async def h(request):
    harness = Harness(request.param)
    await harness.plane.start()
    try:
        yield harness
    finally:
        await harness.close()


async def test_fanout_virtual_hosts_wildcard_and_path_types(h):
    for app in ("service1", "service2", "service3", "exact", "wild"):
        await h.pod(app)
    await h.apply(
        ingress("fanout", [rule("foo.bar.com", ("/foo", "Prefix", "service1"), ("/bar", "Prefix", "service2"),
                                ("/foo/exact", "Exact", "exact"))]),
        ingress("vhost", [rule("bar.foo.com", ("/", "Prefix", "service2")), rule("*.wild.com", ("/", "Prefix", "wild")),
                          rule("", ("/", "ImplementationSpecific", "service3"))]),
    )
    await h.expect("/foo", "foo.bar.com", "service1")
    cases = [
        ("/foo/x", "foo.bar.com", "service1"),
        ("/bar", "foo.bar.com:18080", "service2"),
        ("/foobar", "foo.bar.com", 404),  # element-wise prefix; no default backend
        ("/foo/exact", "foo.bar.com", "exact"),
        ("/foo/exact/more", "foo.bar.com", "service1"),
        ("/anything", "bar.foo.com", "service2"),
        ("/", "a.wild.com", "wild"),
        ("/", "a.b.wild.com", "service3"),  # one label only: falls to the host-less rule
        ("/", "unknown.example", "service3"),
    ]
    for path, host, who in cases:
        r = await h.get(path, host)
        if isinstance(who, int):
            assert r.status_code == who, (path, host)
        else:
            assert r.status_code == 200 and r.json()["name"].startswith(who), (path, host, r.text)
            assert r.json()["path"] == path


async def test_default_backend_404_and_503(h):
    await h.pod("api")
    await h.pod("fallback")
    await h.pod("down", ready=False)
    await h.apply(ingress("i", [rule("foo.com", ("/api", "Prefix", "api"), ("/down", "Prefix", "down"))]))
    await h.expect("/api", "foo.com", "api")
    assert (await h.get("/web", "foo.com")).status_code == 404
    assert (await h.get("/down/x", "foo.com")).status_code == 503
    await h.apply(ingress("i", [rule("foo.com", ("/api", "Prefix", "api"))], default="fallback"))
    await h.expect("/web", "foo.com", "fallback")
    await h.expect("/", "other.com", "fallback")


async def test_forwarded_headers_reach_the_backend(h):
    await h.pod("web")
    await h.apply(ingress("i", [rule("foo.com", ("/", "Prefix", "web"))]))
    await h.expect("/", "foo.com", "web")
    seen = (await h.get("/h", "foo.com", headers={"X-Forwarded-For": "10.1.2.3"})).json()["headers"]
    assert seen["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == "foo.com"
    assert seen["host"] == "foo.com"


async def test_backend_connections_are_kept_alive(h):
    backend = await h.pod("web")
    await h.apply(ingress("i", [rule("", ("/", "Prefix", "web"))]))
    await h.expect("/", "a", "web")
    before = backend.connections
    for _ in range(20):
        assert (await h.get("/", "a")).status_code == 200
    assert backend.connections - before <= 2  # one pooled connection (nginx: per worker)


async def test_streamed_response_first_chunk_before_backend_finishes(h):
    backend = await h.pod("web")
    await h.apply(ingress("i", [rule("", ("/", "Prefix", "web"))]))
    await h.expect("/", "a", "web")
    async with h.client.stream("GET", h.url + "/stream", headers={"Host": "a"}) as r:
        chunks = r.aiter_raw()
        first = await asyncio.wait_for(chunks.__anext__(), 5)
        assert first.startswith(b"first\n")
        assert not backend.release.is_set()  # the backend has not finished its response
        backend.release.set()
        rest = b"".join([c async for c in chunks])
    assert (first + rest) == b"first\nlast\n"


async def test_streamed_chunked_request_body(h):
    await h.pod("web")
    await h.apply(ingress("i", [rule("", ("/", "Prefix", "web"))]))
    await h.expect("/", "a", "web")

    async def body():
        for i in range(5):
            yield f"part{i};".encode()

    r = await h.client.post(h.url + "/upload", headers={"Host": "a"}, content=body())
    assert r.status_code == 200
    assert r.json()["body"] == "part0;part1;part2;part3;part4;"
    assert r.json()["method"] == "POST"


async def test_websocket_echo_through_the_ingress(h):
    from websockets.asyncio.client import connect

    await h.pod("ws", ws=True)
    await h.apply(ingress("i", [rule("", ("/chat", "Prefix", "ws"))]))

    async def echoed():
        from websockets.exceptions import InvalidStatus

        try:
            return await exchange()
        except InvalidStatus as e:  # the new rules not in place yet
            raise AssertionError(str(e)) from None

    async def exchange():
        async with connect(f"ws://{h.ip}:{h.http_port}/chat",
                           open_timeout=3) as ws:
            replies = []
            for m in ("hello", "again"):
                await ws.send(m)
                replies.append(await asyncio.wait_for(ws.recv(), 3))
            return replies

    assert await until(echoed, 10, "websocket echo") == ["ws-0:hello", "ws-0:again"]


async def test_rule_change_does_not_drop_a_request_in_flight(h):
    slow = await h.pod("old")
    await h.pod("new")
    await h.apply(ingress("i", [rule("", ("/", "Prefix", "old"))]))
    await h.expect("/", "a", "old")
    inflight = asyncio.ensure_future(h.get("/slow", "a"))
    await asyncio.wait_for(slow.waiting.wait(), 5)
    await h.apply(ingress("i", [rule("", ("/", "Prefix", "new"))]))
    await h.expect("/", "a", "new")
    slow.release.set()
    r = await asyncio.wait_for(inflight, 10)
    assert r.status_code == 200 and r.json()["name"].startswith("old")


async def test_tls_terminated_with_the_certificate_chosen_by_sni(h):
    await h.pod("a")
    await h.pod("b")
    for host, name in (("a.example", "tls-a"), ("b.example", "tls-b")):
        cert, key = self_signed(host)
        h.objects["secrets"].append(decode({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": "default"},
            "data": {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(key).decode()},
        }))
    assert all(isinstance(s, Secret) for s in h.objects["secrets"])
    await h.apply(ingress("i", [rule("a.example", ("/", "Prefix", "a")), rule("b.example", ("/", "Prefix", "b"))],
                          tls=[{"hosts": ["a.example"], "secretName": "tls-a"},
                               {"hosts": ["b.example"], "secretName": "tls-b"}]))

    async def served(host: str, pod: str):
        cn, status, body = await tls_get(h.ip, h.https_port, host)
        assert cn == host and status == 200, (cn, status)
        seen = json.loads(body)
        assert seen["name"].startswith(pod)
        assert seen["headers"]["x-forwarded-proto"] == "https"
        return True

    await until(lambda: served("a.example", "a"), 10, "TLS for a.example")
    assert await served("b.example", "b")
    assert h.errors == []


async def test_a_broken_tls_secret_is_reported_and_routing_still_updates(h):
    await h.pod("web")
    h.objects["secrets"].append(decode({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "broken", "namespace": "default"},
        "data": {"tls.crt": base64.b64encode(b"not a certificate").decode(),
                 "tls.key": base64.b64encode(b"not a key").decode()},
    }))
    await h.apply(ingress("i", [rule("web.example", ("/", "Prefix", "web"))],
                          tls=[{"hosts": ["web.example"], "secretName": "broken"}]))
    await h.expect("/", "web.example", "web")
    assert any("default/broken" in e for e in h.errors)


async def test_head_pipelined_requests_and_a_large_body(h):
    await h.pod("web")
    await h.apply(ingress("i", [rule("", ("/", "Prefix", "web"))]))
    await h.expect("/", "a", "web")
    head = await h.client.head(h.url + "/x", headers={"Host": "a"})
    assert head.status_code == 200 and int(head.headers["content-length"]) > 0
    assert (await h.get("/after-head", "a")).json()["path"] == "/after-head"
    reader, writer = await asyncio.open_connection(h.ip, h.http_port)
    writer.write(b"GET /p1 HTTP/1.1\r\nHost: a\r\n\r\nGET /p2 HTTP/1.1\r\nHost: a\r\n\r\n"
                 b"GET /p3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data.count(b"HTTP/1.1 200") == 3
    assert data.index(b'"/p1"') < data.index(b'"/p2"') < data.index(b'"/p3"')
    big = b"x" * (8 << 20)
    r = await h.client.post(h.url + "/big", headers={"Host": "a"}, content=big)
    assert r.status_code == 200 and len(r.json()["body"]) == len(big)
