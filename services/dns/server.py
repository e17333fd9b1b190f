"""The DNS listener: UDP and TCP (two-byte length framing) on one address, answering from
whatever :class:`Zone` ``zone()`` returns at the moment of the query."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable
from typing import Any

from dnslib import DNSRecord

from services.dns.plan import Zone, answer, answer_bytes

MAX_UDP = 512  # a bigger answer goes back truncated (TC bit) and the client retries over TCP


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, zone: Callable[[], Zone], ttl: int) -> None:
        self.zone = zone
        self.ttl = ttl
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        reply = answer_bytes(data, self.zone(), self.ttl)
        if reply is not None and self.transport is not None:
            if len(reply) > MAX_UDP:
                reply = _truncated(data, self.zone(), self.ttl)
            self.transport.sendto(reply, addr)


def _truncated(packet: bytes, zone: Zone, ttl: int) -> bytes:
    """An empty reply with the TC bit: the client retries over TCP."""
    return answer(DNSRecord.parse(packet), zone, ttl).truncate().pack()


class DnsServer:
    """UDP + TCP on ``(host, port)``."""

    def __init__(self, host: str, port: int, zone: Callable[[], Zone], *, ttl: int = 5) -> None:
        self.host, self.port, self.zone, self.ttl = host, port, zone, ttl
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self.zone, self.ttl), local_addr=(self.host, self.port))
        try:
            self._tcp = await asyncio.start_server(self._serve_tcp, self.host, self.port, reuse_address=True)
        except OSError:
            self._udp.close()
            raise

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
            while True:
                (size,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 30))
                reply = answer_bytes(await reader.readexactly(size), self.zone(), self.ttl)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 2)
