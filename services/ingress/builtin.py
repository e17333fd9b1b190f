"""The builtin data plane: an asyncio HTTP/1.1 reverse proxy inside the ingress service.

HTTP parsing is httptools (llhttp); the rest is asyncio Protocols so bytes go from one
transport's read straight to the other's ``write``. Requests and responses stream (a body
chunk is forwarded as it arrives; chunked framing is kept or added as needed), transports
pause each other when a write buffer fills, connections to backends are kept alive and pooled,
and an ``Upgrade`` request (WebSocket) gets its own backend connection that turns into a
bidirectional byte relay after ``101 Switching Protocols``.

The routing :class:`~services.ingress.plan.Table` is swapped whole by :meth:`BuiltinPlane.apply`;
a request is routed once, when its headers arrive, so a rule change never touches one in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import ssl
import tempfile
from collections import deque
from collections.abc import Callable
from typing import Any

import httptools

from services.ingress.plan import Address, Certificate, Table, Target

CONNECT_TIMEOUT = 2.0
MAX_IDLE_PER_BACKEND = 128
HIGH_WATER = 1 << 20
HOP_BY_HOP = {
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"proxy-authenticate", b"proxy-authorization",
}
REASONS = {400: b"Bad Request", 404: b"Not Found", 502: b"Bad Gateway", 503: b"Service Unavailable"}


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def simple_response(status: int, *, close: bool = False) -> bytes:
    body = b"%d %b\n" % (status, REASONS.get(status, b""))
    head = b"HTTP/1.1 %d %b\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % (status, REASONS.get(status, b""), len(body))
    return head + (b"Connection: close\r\n" if close else b"") + b"\r\n" + body


class Exchange:
    """One request on a client connection, from its headers to the end of its response."""

    __slots__ = ("method", "url", "headers", "version", "keep_alive", "upgrade", "chunked", "length",
                 "buffer", "request_done", "sink", "done", "leftover")

    def __init__(self) -> None:
        self.method = b""
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.version = "1.1"
        self.keep_alive = True
        self.upgrade = False
        self.chunked = False
        self.length: bytes | None = None
        self.buffer: list[bytes] = []  # request body that arrived before a backend was connected
        self.request_done = False
        self.sink: Upstream | None = None
        self.done: asyncio.Future[str] | None = None
        self.leftover = b""

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    @property
    def has_body(self) -> bool:
        return self.chunked or (self.length is not None and self.length != b"0")


class Upstream(asyncio.Protocol):
    """A connection to one backend; serves one exchange at a time, then goes back to the pool."""

    def __init__(self, plane: BuiltinPlane, backend: Address) -> None:
        self.plane = plane
        self.backend = backend
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.down: Downstream | None = None
        self.exchange: Exchange | None = None
        self.reused = False
        self.started = False  # response bytes went to the client
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.out_chunked = False
        self.close_delimited = False
        self.keep_alive = True
        self.relay = False
        self.closed = False
        self.reason = b""

    # -- asyncio ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(HIGH_WATER)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if self.relay:
            if self.down is not None and self.down.transport is not None:
                self.down.transport.write(data)
            return
        if self.exchange is None:  # bytes from an idle backend: it is not speaking HTTP to us
            self._close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            rest = data[e.args[0]:] if e.args else b""
            if self.relay and rest and self.down is not None and self.down.transport is not None:
                self.down.transport.write(rest)
        except httptools.HttpParserError:
            self._fail()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.plane._forget(self)
        if self.relay:
            if self.down is not None and self.down.transport is not None:
                self.down.transport.close()
            return
        ex = self.exchange
        if ex is None or ex.done is None or ex.done.done():
            return
        if self.started and self.close_delimited:
            self._finish_response()
        elif not self.started:
            ex.done.set_result("stale" if self.reused else "failed")
        else:
            ex.done.set_result("aborted")

    def pause_writing(self) -> None:
        if self.down is not None and self.down.transport is not None:
            self.down.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.down is not None and self.down.transport is not None:
            self.down.transport.resume_reading()

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.headers = []
        self.reason = b""

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        down, ex = self.down, self.exchange
        if down is None or ex is None or down.transport is None:
            return
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        if self.status == 101 and ex.upgrade:
            self._start_relay()
            return
        interim = 100 <= self.status < 200
        no_body = interim or self.status in (204, 304) or ex.method == b"HEAD"
        length = next((v for k, v in self.headers if k == b"content-length"), None)
        chunked_in = any(k == b"transfer-encoding" for k, _ in self.headers)
        self.close_delimited = not no_body and length is None and not chunked_in
        client_11 = ex.version == "1.1"
        self.out_chunked = not no_body and length is None and client_11
        if not no_body and length is None and not client_11:
            ex.keep_alive = False
        lines = [b"HTTP/1.1 %d %b\r\n" % (self.status, self.parser_reason())]
        for k, v in self.headers:
            if k in HOP_BY_HOP:
                continue
            lines.append(b"%b: %b\r\n" % (k, v))
        if self.out_chunked:
            lines.append(b"transfer-encoding: chunked\r\n")
        if not interim and not ex.keep_alive:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        self.started = True
        down.transport.write(b"".join(lines))
        if ex.method == b"HEAD" and not interim:
            self.keep_alive = False  # the parser would wait for a body that never comes
            self._finish_response()

    def parser_reason(self) -> bytes:
        return self.reason or REASONS.get(self.status, b"")

    def on_body(self, body: bytes) -> None:
        down = self.down
        if down is None or down.transport is None or self.exchange is None:
            return
        down.transport.write(_chunk(body) if self.out_chunked else body)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:
            return  # an interim response; the real one follows
        self._finish_response()

    # -- exchange lifecycle -----------------------------------------------------------------

    def begin(self, ex: Exchange, down: Downstream) -> None:
        self.exchange, self.down = ex, down
        self.started = False
        self.status = 0
        self.close_delimited = False

    def _finish_response(self) -> None:
        ex, down = self.exchange, self.down
        if ex is None or ex.done is None or ex.done.done():
            return
        if self.out_chunked and down is not None and down.transport is not None:
            down.transport.write(b"0\r\n\r\n")
        ex.done.set_result("complete")

    def _start_relay(self) -> None:
        down, ex = self.down, self.exchange
        assert down is not None and ex is not None and down.transport is not None
        lines = [b"HTTP/1.1 101 Switching Protocols\r\n"]
        lines += [b"%b: %b\r\n" % (k, v) for k, v in self.headers]
        lines.append(b"\r\n")
        down.transport.write(b"".join(lines))
        self.relay = True
        self.started = True
        down.relay_to(self)
        if ex.done is not None and not ex.done.done():
            ex.done.set_result("upgraded")

    def _fail(self) -> None:
        ex = self.exchange
        if ex is not None and ex.done is not None and not ex.done.done():
            ex.done.set_result("aborted" if self.started else "failed")
        self._close()

    def _close(self) -> None:
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()

    def release(self) -> None:
        """Back to the pool when the backend keeps the connection, else closed."""
        ex = self.exchange
        reusable = self.keep_alive and ex is not None and ex.request_done and not self.closed and not self.relay
        self.exchange, self.down = None, None
        if reusable:
            self.parser = httptools.HttpResponseParser(self)
            self.plane._park(self)
        else:
            self._close()


class Downstream(asyncio.Protocol):
    """A client connection: parses requests, hands each to a backend, relays its response."""

    def __init__(self, plane: BuiltinPlane, scheme: str) -> None:
        self.plane = plane
        self.scheme = scheme
        self.transport: asyncio.Transport | None = None
        self.client_ip = ""
        self.local_port = 0
        self.parser = httptools.HttpRequestParser(self)
        self.parsing: Exchange | None = None
        self.pending: deque[Exchange] = deque()
        self.active: Exchange | None = None
        self.relay: Upstream | None = None
        self.task: asyncio.Task | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(HIGH_WATER)  # type: ignore[union-attr]
        peer = transport.get_extra_info("peername") or ("", 0)
        sock = transport.get_extra_info("sockname") or ("", 0)
        self.client_ip, self.local_port = peer[0], sock[1]
        self.plane.clients.add(self)

    def data_received(self, data: bytes) -> None:
        if self.relay is not None:
            if self.relay.transport is not None:
                self.relay.transport.write(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            ex = self.parsing
            if ex is not None and ex.upgrade:
                ex.leftover = data[e.args[0]:] if e.args else b""
            if self.transport is not None:
                self.transport.pause_reading()  # until the backend answers the upgrade
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(simple_response(400, close=True))
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.plane.clients.discard(self)
        self.transport = None
        if self.relay is not None and self.relay.transport is not None:
            self.relay.transport.close()
        ex = self.active
        if ex is not None and ex.sink is not None:
            ex.sink._close()  # the response has nowhere to go
        if ex is not None and ex.done is not None and not ex.done.done():
            ex.done.set_result("aborted")

    def pause_writing(self) -> None:
        up = self.relay or (self.active.sink if self.active is not None else None)
        if up is not None and up.transport is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        up = self.relay or (self.active.sink if self.active is not None else None)
        if up is not None and up.transport is not None:
            up.transport.resume_reading()

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.parsing = Exchange()

    def on_url(self, url: bytes) -> None:
        assert self.parsing is not None
        self.parsing.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.parsing
        assert ex is not None
        name = name.lower()
        if name == b"transfer-encoding":
            ex.chunked = b"chunked" in value.lower()
        elif name == b"content-length":
            ex.length = value
        ex.headers.append((name, value))

    def on_headers_complete(self) -> None:
        ex = self.parsing
        assert ex is not None
        p = self.parser
        ex.method = p.get_method()
        ex.version = p.get_http_version()
        ex.keep_alive = p.should_keep_alive()
        ex.upgrade = p.should_upgrade()
        if ex.upgrade:
            ex.keep_alive = False  # after a refused upgrade the connection is not reused
        self.pending.append(ex)
        if self.active is None:
            self._next()
        elif self.transport is not None:
            self.transport.pause_reading()  # one pipelined request at a time

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        if ex is None:
            return
        up = ex.sink
        if up is not None and up.transport is not None:
            up.transport.write(_chunk(body) if ex.chunked else body)
        else:
            ex.buffer.append(body)

    def on_message_complete(self) -> None:
        ex = self.parsing
        if ex is None:
            return
        ex.request_done = True
        up = ex.sink
        if ex.chunked and up is not None and up.transport is not None:
            up.transport.write(b"0\r\n\r\n")

    # -- serving ----------------------------------------------------------------------------

    def _next(self) -> None:
        if self.transport is None or not self.pending:
            return
        self.active = self.pending.popleft()
        self.task = asyncio.ensure_future(self._serve(self.active))

    def relay_to(self, up: Upstream) -> None:
        self.relay = up
        ex = self.active
        if ex is not None and ex.leftover and up.transport is not None:
            up.transport.write(ex.leftover)
        if self.transport is not None:
            self.transport.resume_reading()

    async def _serve(self, ex: Exchange) -> None:
        outcome = "failed"
        try:
            outcome = await self._forward(ex)
        except Exception:
            outcome = "aborted"
        finally:
            self._after(ex, outcome)

    def _after(self, ex: Exchange, outcome: str) -> None:
        up = ex.sink
        if outcome == "upgraded":
            return
        if up is not None:
            up.release()
        ex.sink = None
        self.active = None
        t = self.transport
        if t is None:
            return
        if outcome == "aborted" or not ex.keep_alive or not ex.request_done:
            t.close()
            return
        if self.pending:
            self._next()
        else:
            t.resume_reading()

    def _reply(self, ex: Exchange, status: int) -> str:
        if self.transport is not None:
            self.transport.write(simple_response(status, close=not ex.keep_alive))
        if not ex.request_done:
            ex.keep_alive = False  # the rest of its body is not read
        return "complete"

    async def _forward(self, ex: Exchange) -> str:
        host = (ex.header(b"host") or b"").decode("latin-1")
        target = self.plane.table.route(host, ex.url.decode("latin-1"))
        if target is None:
            return self._reply(ex, 404)
        if not target.backends:
            return self._reply(ex, 503)
        loop = asyncio.get_running_loop()
        head = self._head(ex, host)
        for attempt in range(len(target.backends) + 1):
            up = await self.plane.connect(target, fresh=ex.upgrade or attempt > 0)
            if up is None:
                return self._reply(ex, 502)
            if self.transport is None:
                up.release()
                return "aborted"
            ex.done = loop.create_future()
            ex.sink = up
            up.begin(ex, self)
            assert up.transport is not None
            up.transport.write(head)
            if ex.buffer:
                body = b"".join(ex.buffer)
                up.transport.write(_chunk(body) if ex.chunked else body)
                if ex.request_done and ex.chunked:
                    up.transport.write(b"0\r\n\r\n")
            elif ex.request_done and ex.chunked:
                up.transport.write(b"0\r\n\r\n")
            outcome = await ex.done
            if outcome != "stale" or ex.has_body:
                break
            ex.sink = None  # a pooled connection the backend had closed: once more on a new one
        if outcome == "failed":
            ex.sink = None
            return self._reply(ex, 502)
        return outcome

    def _head(self, ex: Exchange, host: str) -> bytes:
        drop = set(HOP_BY_HOP)
        for k, v in ex.headers:
            if k == b"connection":
                drop.update(t.strip().lower() for t in v.split(b","))
        lines = [b"%b %b HTTP/1.1\r\n" % (ex.method, ex.url)]
        forwarded_for = b""
        for k, v in ex.headers:
            if k == b"x-forwarded-for":
                forwarded_for = v
            elif k in drop or k.startswith(b"x-forwarded-") or k == b"x-real-ip":
                continue
            else:
                lines.append(b"%b: %b\r\n" % (k, v))
        ip = self.client_ip.encode()
        if ex.upgrade:
            lines.append(b"connection: upgrade\r\n")
            lines.append(b"upgrade: %b\r\n" % (ex.header(b"upgrade") or b""))
        if ex.chunked:
            lines.append(b"transfer-encoding: chunked\r\n")
        lines.append(b"x-forwarded-for: %b\r\n" % (forwarded_for + b", " + ip if forwarded_for else ip))
        lines.append(b"x-real-ip: %b\r\n" % ip)
        lines.append(b"x-forwarded-proto: %b\r\n" % self.scheme.encode())
        lines.append(b"x-forwarded-host: %b\r\n" % host.encode("latin-1"))
        lines.append(b"x-forwarded-port: %d\r\n\r\n" % self.local_port)
        return b"".join(lines)


class BuiltinPlane:
    """Listens on ``address`` (HTTP, and HTTPS once a certificate exists) and proxies by the
    current table."""

    def __init__(self, address: str, http_port: int, https_port: int, *,
                 on_error: Callable[[str, Exception], None] | None = None) -> None:
        self.address, self.http_port, self.https_port = address, http_port, https_port
        self.on_error = on_error
        self.table = Table()
        self.clients: set[Downstream] = set()
        self._idle: dict[Address, list[Upstream]] = {}
        self._live: set[Address] = set()
        self._rr: dict[str, itertools.count] = {}
        self._http: asyncio.AbstractServer | None = None
        self._https: asyncio.AbstractServer | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="kyb-ingress-")
        self._contexts: dict[str, ssl.SSLContext] = {}  # secret digest -> context
        self._by_host: dict[str, ssl.SSLContext] = {}
        self._default_ctx: ssl.SSLContext | None = None
        self._sni_ctx: ssl.SSLContext | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._http = await loop.create_server(lambda: Downstream(self, "http"), self.address, self.http_port,
                                              reuse_address=True, backlog=1024)

    async def apply(self, table: Table) -> None:
        self.table = table
        self._load_certificates(table)
        if table.certificates and self._https is None:
            loop = asyncio.get_running_loop()
            try:
                self._https = await loop.create_server(lambda: Downstream(self, "https"), self.address, self.https_port,
                                                       ssl=self._sni_ctx, reuse_address=True, backlog=1024)
            except OSError as e:
                if self.on_error is not None:
                    self.on_error(f"{self.address}:{self.https_port}", e)
        live = {(ip, port) for t in table.targets() for ip, port in t.backends}
        self._live = live
        for backend in [b for b in self._idle if b not in live]:
            for up in self._idle.pop(backend):
                up._close()

    # -- TLS --------------------------------------------------------------------------------

    def _context_for(self, cert: Certificate) -> ssl.SSLContext:
        """A server context holding ``cert`` (files in a private directory, mode 0600)."""
        digest = hashlib.sha256(cert.cert + b"\0" + cert.key).hexdigest()[:24]
        ctx = self._contexts.get(digest)
        if ctx is None:
            base = os.path.join(self._dir.name, digest)
            for suffix, data in ((".crt", cert.cert), (".key", cert.key)):
                fd = os.open(base + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(base + ".crt", base + ".key")
            self._contexts[digest] = ctx
        return ctx

    def _load_certificates(self, table: Table) -> None:
        by_host: dict[str, ssl.SSLContext] = {}
        for host, cert in sorted(table.certificates.items()):
            try:
                by_host[host] = self._context_for(cert)
            except (ssl.SSLError, OSError, ValueError) as e:
                if self.on_error is not None:
                    self.on_error(f"certificate {cert.secret}", e)
        self._by_host = by_host
        if by_host:
            self._default_ctx = by_host[min(by_host)]
        if self._sni_ctx is None and by_host:
            # The listener's own context only runs the SNI callback, which swaps in the
            # host's context; its certificate is what a client without SNI gets.
            first = table.certificates[min(by_host)]
            self._sni_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            base = os.path.join(self._dir.name, hashlib.sha256(first.cert + b"\0" + first.key).hexdigest()[:24])
            self._sni_ctx.load_cert_chain(base + ".crt", base + ".key")
            self._sni_ctx.sni_callback = self._pick_context

    def _pick_context(self, sslobj: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        name = (server_name or "").lower()
        ctx = self._by_host.get(name)
        if ctx is None and "." in name:
            ctx = self._by_host.get("*" + name[name.find("."):])
        ctx = ctx or self._default_ctx
        if ctx is not None:
            sslobj.context = ctx
        return None

    # -- backend connections ------------------------------------------------------------------

    async def connect(self, target: Target, *, fresh: bool = False) -> Upstream | None:
        """A connection to one of the target's backends (round robin): an idle pooled one
        unless ``fresh``; None when none of them accepts."""
        n = len(target.backends)
        start = next(self._rr.setdefault(target.name, itertools.count()))
        loop = asyncio.get_running_loop()
        for i in range(n):
            backend = target.backends[(start + i) % n]
            if not fresh:
                idle = self._idle.get(backend)
                while idle:
                    up = idle.pop()
                    if not up.closed:
                        up.reused = True
                        if up.transport is not None:
                            up.transport.resume_reading()
                        return up
            try:
                _, up = await asyncio.wait_for(
                    loop.create_connection(lambda b=backend: Upstream(self, b), backend[0], backend[1]), CONNECT_TIMEOUT)
                return up
            except (OSError, TimeoutError):
                continue
        return None

    def _park(self, up: Upstream) -> None:
        idle = self._idle.setdefault(up.backend, [])
        if up.backend not in self._live or len(idle) >= MAX_IDLE_PER_BACKEND:
            up._close()
            return
        up.reused = True
        idle.append(up)

    def _forget(self, up: Upstream) -> None:
        idle = self._idle.get(up.backend)
        if idle and up in idle:
            idle.remove(up)

    async def close(self) -> None:
        for server in (self._http, self._https):
            if server is not None:
                server.close()
        for idle in self._idle.values():
            for up in idle:
                up._close()
        self._idle.clear()
        for c in list(self.clients):
            if c.transport is not None:
                c.transport.close()
        for server in (self._http, self._https):
            if server is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.wait_closed(), 2)
        self._dir.cleanup()
