"""Shared by the ingress tests (no tests here): hollow HTTP and WebSocket backends bound on
their own 127.x addresses, a self-signed certificate maker and a small raw HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import ssl
from typing import Any

import h11
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.cluster import wait_for


async def until(predicate, timeout: float = 15.0, what: str = "condition") -> Any:
    """tests.cluster.wait_for, where a connection refused or reset (a server reloading; httpx:
    an idle keep-alive connection it closed) or a failed check is "not yet"."""
    return await wait_for(predicate, timeout, what,
                          ignoring=(OSError, AssertionError, asyncio.IncompleteReadError, httpx.TransportError))


class HttpBackend:
    """A hollow pod answering HTTP/1.1 with h11 (keep-alive):

    - any path: 200, JSON ``{"name", "method", "path", "headers", "body"}``;
    - ``/stream``: chunked: ``first\\n``, then waits for ``release``, then ``last\\n``;
    - ``/slow``: waits for ``release``, then answers as any path.
    """

    def __init__(self, name: str, ip: str, port: int = 8080) -> None:
        self.name, self.ip, self.port = name, ip, port
        self.server: asyncio.AbstractServer | None = None
        self.release = asyncio.Event()
        self.waiting = asyncio.Event()  # a /slow or /stream request is parked on release
        self.connections = 0
        self.requests = 0

    async def start(self) -> HttpBackend:
        self.server = await asyncio.start_server(self._serve, self.ip, self.port, reuse_address=True)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request: h11.Request | None = None
                body = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await reader.read(65536)
                        conn.receive_data(data)
                        if not data and request is None:
                            return
                        continue
                    if isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                assert request is not None
                self.requests += 1
                await self._answer(conn, writer, request, body)
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.RemoteProtocolError, ConnectionError):
            return
        finally:
            writer.close()

    async def _answer(self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, body: bytes) -> None:
        path = request.target.decode()
        if path.startswith("/stream"):
            writer.write(conn.send(h11.Response(status_code=200, headers=[("content-type", "text/plain")])))
            writer.write(conn.send(h11.Data(data=b"first\n")))
            await writer.drain()
            self.waiting.set()
            await self.release.wait()
            writer.write(conn.send(h11.Data(data=b"last\n")))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            return
        if path.startswith("/slow"):
            self.waiting.set()
            await self.release.wait()
        payload = json.dumps({
            "name": self.name,
            "method": request.method.decode(),
            "path": path,
            "headers": {k.decode(): v.decode() for k, v in request.headers},
            "body": body.decode(errors="replace"),
        }).encode()
        writer.write(conn.send(h11.Response(status_code=200, headers=[
            ("content-type", "application/json"), ("content-length", str(len(payload)))])))
        if request.method != b"HEAD":
            writer.write(conn.send(h11.Data(data=payload)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()


class WsBackend:
    """A hollow pod echoing WebSocket messages as ``<name>:<message>`` (websockets library)."""

    def __init__(self, name: str, ip: str, port: int = 8080) -> None:
        self.name, self.ip, self.port = name, ip, port
        self.server: Any = None

    async def start(self) -> WsBackend:
        from websockets.asyncio.server import serve

        async def echo(ws: Any) -> None:
            async for message in ws:
                await ws.send(f"{self.name}:{message}")

        self.server = await serve(echo, self.ip, self.port)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)


def self_signed(host: str) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for ``host`` (CN and SAN), valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = _dt.datetime.now(_dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


async def tls_get(ip: str, port: int, server_name: str, path: str = "/") -> tuple[str, int, bytes]:
    """GET over TLS with SNI ``server_name`` (certificate not verified): (peer CN, status, body)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(ip, port, ssl=ctx, server_hostname=server_name), 5)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        cn = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 5)
        head, _, body = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        return str(cn), status, body
    finally:
        writer.close()
