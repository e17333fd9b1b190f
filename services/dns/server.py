"""The DNS listener: UDP and TCP (two-byte length framing) on one address, answering from
whatever :class:`Zone` ``zone()`` returns at the moment of the query."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from typing import Any

from dnslib import DNSRecord

from services.dns.forward import Forwarder, SocketFactory
from services.dns.plan import Zone, answer, answer_bytes, forwardable

MAX_UDP = 512  # a bigger answer goes back truncated (TC bit) and the client retries over TCP


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, zone: Callable[[], Zone], ttl: int, forwarder: Forwarder | None = None) -> None:
        self.zone = zone
        self.ttl = ttl
        self.forwarder = forwarder
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.forwarder is not None and forwardable(data, self.zone().domain):
            task = asyncio.ensure_future(self._forward(data, addr))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
            return
        reply = answer_bytes(data, self.zone(), self.ttl)
        if reply is not None and self.transport is not None:
            if len(reply) > MAX_UDP:
                reply = _truncated(data, self.zone(), self.ttl)
            self.transport.sendto(reply, addr)


    async def _forward(self, data: bytes, addr: Any) -> None:
        assert self.forwarder is not None
        reply = await self.forwarder.resolve(data)
        if self.transport is not None:
            self.transport.sendto(reply, addr)


def _truncated(packet: bytes, zone: Zone, ttl: int) -> bytes:
    """An empty reply with the TC bit: the client retries over TCP."""
    return answer(DNSRecord.parse(packet), zone, ttl).truncate().pack()


class DnsServer:
    """UDP + TCP on ``(host, port)``."""

    def __init__(self, host: str, port: int, zone: Callable[[], Zone], *, ttl: int = 5,
                 forwarder: Forwarder | None = None, socket_factory: SocketFactory | None = None) -> None:
        self.host, self.port, self.zone, self.ttl = host, port, zone, ttl
        self.forwarder = forwarder
        self.socket_factory = socket_factory  # set: both sockets come from it (another network namespace)
        self._udp: asyncio.DatagramTransport | None = None
        self._proto: _Udp | None = None
        self._tcp: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        udp = lambda: _Udp(self.zone, self.ttl, self.forwarder)  # noqa: E731
        if self.socket_factory is None:
            self._udp, self._proto = await loop.create_datagram_endpoint(udp, local_addr=(self.host, self.port))
        else:
            sock = self.socket_factory(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((self.host, self.port))
            except OSError:
                sock.close()
                raise
            self._udp, self._proto = await loop.create_datagram_endpoint(udp, sock=sock)
        try:
            if self.socket_factory is None:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, self.port, reuse_address=True)
            else:
                sock = self.socket_factory(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((self.host, self.port))
                except OSError:
                    sock.close()
                    raise
                self._tcp = await asyncio.start_server(self._serve_tcp, sock=sock)
        except OSError:
            self._udp.close()
            raise

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
            while True:
                (size,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 30))
                packet = await reader.readexactly(size)
                if self.forwarder is not None and forwardable(packet, self.zone().domain):
                    reply: bytes | None = await self.forwarder.resolve(packet)
                else:
                    reply = answer_bytes(packet, self.zone(), self.ttl)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self._proto is not None:
            for task in list(self._proto.pending):
                task.cancel()
            await asyncio.gather(*self._proto.pending, return_exceptions=True)
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 2)
