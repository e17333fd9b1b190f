"""Forwarding of names outside the cluster domain to upstream resolvers (CoreDNS' ``forward .
/etc/resolv.conf``): the query goes as it came, over UDP, to each upstream in turn until one
answers; none answering is SERVFAIL. Sockets come from ``socket_factory``, so a dns server
working in a node's network namespace also forwards from there."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterable

from dnslib import RCODE, DNSRecord

SocketFactory = Callable[[int, int], socket.socket]


def parse_upstreams(value: str | Iterable[str]) -> list[tuple[str, int]]:
    """``"10.0.0.2, 10.0.0.3:5353"`` -> [(host, port), ...] (IPv4 only)."""
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    out = []
    for item in items:
        host, _, port = item.partition(":")
        out.append((host, int(port) if port else 53))
    return out


def resolv_conf_upstreams(text: str, exclude: Iterable[str] = ()) -> list[tuple[str, int]]:
    """The IPv4 nameservers of a resolv.conf, minus ``exclude`` (our own address: no loops)."""
    skip = set(exclude)
    out = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver" and ":" not in words[1] and words[1] not in skip:
            out.append((words[1], 53))
    return out


class _Reply(asyncio.DatagramProtocol):
    def __init__(self, qid: int) -> None:
        self.qid = qid
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if len(data) >= 2 and int.from_bytes(data[:2], "big") == self.qid and not self.done.done():
            self.done.set_result(data)


class Forwarder:
    def __init__(self, upstreams: list[tuple[str, int]], *, socket_factory: SocketFactory = socket.socket,
                 timeout: float = 2.0) -> None:
        self.upstreams = upstreams
        self.socket_factory = socket_factory
        self.timeout = timeout

    async def _ask(self, packet: bytes, upstream: tuple[str, int]) -> bytes | None:
        loop = asyncio.get_running_loop()
        sock = await asyncio.to_thread(self.socket_factory, socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect(upstream)
        transport, proto = await loop.create_datagram_endpoint(lambda: _Reply(int.from_bytes(packet[:2], "big")),
                                                               sock=sock)
        try:
            transport.sendto(packet)
            return await asyncio.wait_for(proto.done, self.timeout)
        except (TimeoutError, OSError):
            return None
        finally:
            transport.close()

    async def resolve(self, packet: bytes) -> bytes:
        """The first upstream's reply, or SERVFAIL when none answers."""
        for upstream in self.upstreams:
            with contextlib.suppress(OSError):
                reply = await self._ask(packet, upstream)
                if reply is not None:
                    return reply
        request = DNSRecord.parse(packet)
        failed = request.reply(ra=1, aa=0)
        failed.header.rcode = RCODE.SERVFAIL
        data: bytes = failed.pack()
        return data
