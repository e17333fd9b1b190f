"""The proxy's data path: listening sockets and the byte relay between clients and backends.

Built for speed on asyncio Protocols (uvloop under ``kyb serve``/``kyb up``): bytes go from
one transport straight into the other's ``write`` with no per-chunk Python work beyond that
call; back-pressure is the transports' own (a full write buffer pauses reading on the other
side). TCP: a new connection pauses reading, picks a backend (:class:`Balancer`), connects,
then resumes; a refused or timed-out connect tries the next backend; with no backend left the
client connection is reset (SO_LINGER 0) at once while the listener stays open. Established
connections are never touched by endpoint changes; closing a frontend closes its listener only.
UDP: one connected backend socket per client address, forgotten after an idle timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import structlog

from services.proxy.balancer import Address, Balancer
from services.proxy.plan import Frontend, Route, diff

log = structlog.get_logger("proxy")

_LINGER_RESET = struct.pack("ii", 1, 0)
WRITE_HIGH_WATER = 4 * 1024 * 1024
READ_CHUNK = 256 * 1024


def reset(transport: asyncio.BaseTransport) -> None:
    """Close a TCP connection with a RST (the client sees "connection reset" at once)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()  # type: ignore[attr-defined]


class _Side(asyncio.Protocol):
    """One end of a relayed connection; ``peer`` is the other end."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.forward: Callable[[bytes], None] | None = None  # the peer transport's write
        self.eof = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.forward(data)  # type: ignore[misc]

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is None or peer.transport is None or peer.closed:
            return False
        if peer.eof:  # both halves done
            peer.transport.close()
            return False
        if peer.transport.can_write_eof():
            peer.transport.write_eof()
            return True  # keep reading the other direction
        peer.transport.close()
        return False

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.closed:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.closed:
            if exc is not None:
                peer.transport.abort()
            else:
                peer.transport.close()  # flushes what is buffered first


class _BackendSide(_Side):
    pass


class _ClientSide(_Side):
    """A client connection accepted on a frontend."""

    def __init__(self, frontend: TcpFrontend) -> None:
        super().__init__()
        self.frontend = frontend
        self.early: list[bytes] = []  # bytes read before the backend connected

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            # Some loops (uvloop) start reading after connection_made despite the pause.
            self.early.append(data)
            self.transport.pause_reading()  # type: ignore[union-attr]
            return
        self.forward(data)  # type: ignore[misc]

    def eof_received(self) -> bool:
        if self.peer is None:
            self.eof = True
            return True  # forwarded once the backend is connected
        return super().eof_received()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self.frontend.balancer.backends:
            self.closed = True
            reset(transport)
            return
        transport.pause_reading()  # type: ignore[attr-defined]
        self.frontend.connecting(asyncio.ensure_future(self._connect()))

    async def _connect(self) -> None:
        fe = self.frontend
        peer = self.transport.get_extra_info("peername") if self.transport else None
        client_ip = peer[0] if peer else ""
        tried: set[Address] = set()
        loop = asyncio.get_running_loop()
        while not self.closed:
            backend = fe.balancer.pick(client_ip, time.monotonic(), tried)
            if backend is None:
                break
            tried.add(backend)
            try:
                transport, side = await asyncio.wait_for(
                    loop.create_connection(_BackendSide, backend[0], backend[1]), fe.connect_timeout
                )
            except (OSError, TimeoutError) as e:
                log.debug("backend connect failed", frontend=str(fe.frontend), backend=backend, error=str(e))
                continue
            if self.closed:
                transport.close()
                return
            side.peer, self.peer = self, side
            side.forward, self.forward = self.transport.write, transport.write  # type: ignore[union-attr]
            with contextlib.suppress(OSError):
                transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.early:
                transport.write(b"".join(self.early))
                self.early.clear()
            if self.eof:
                transport.write_eof()
            else:
                self.transport.resume_reading()  # type: ignore[union-attr]
            return
        if not self.closed and self.transport is not None:
            self.closed = True
            reset(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is None:
            self.closed = True
            return
        super().connection_lost(exc)


class TcpFrontend:
    """A TCP listener for one frontend and its balancer."""

    def __init__(self, frontend: Frontend, route: Route, *, connect_timeout: float = 2.0) -> None:
        self.frontend = frontend
        self.route = route
        self.balancer = Balancer(route.backends, route.affinity_seconds)
        self.connect_timeout = connect_timeout
        self.server: asyncio.AbstractServer | None = None
        self._pending: set[asyncio.Future[Any]] = set()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _ClientSide(self),
            self.frontend.ip,
            self.frontend.port,
            reuse_address=True,
            backlog=4096,
        )
        for sock in self.server.sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connecting(self, fut: asyncio.Future[Any]) -> None:
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)

    def update(self, route: Route) -> None:
        self.route = route
        self.balancer.update(route.backends, route.affinity_seconds)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class _UdpUpstream(asyncio.DatagramProtocol):
    """The connected socket towards one backend for one client address."""

    def __init__(self, frontend: UdpFrontend, client: Address) -> None:
        self.frontend = frontend
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.last = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.last = time.monotonic()
        if self.frontend.transport is not None:
            self.frontend.transport.sendto(data, self.client)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp backend error", frontend=str(self.frontend.frontend), error=str(exc))


class UdpFrontend(asyncio.DatagramProtocol):
    """A UDP socket for one frontend: datagrams from each client go to that client's backend."""

    def __init__(self, frontend: Frontend, route: Route, *, idle_timeout: float = 30.0) -> None:
        self.frontend = frontend
        self.route = route
        self.balancer = Balancer(route.backends, route.affinity_seconds)
        self.idle_timeout = idle_timeout
        self.transport: asyncio.DatagramTransport | None = None
        self.sessions: dict[Address, _UdpUpstream] = {}
        self._waiting: dict[Address, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(self.frontend.ip, self.frontend.port), reuse_port=False)
        self._sweeper = loop.call_later(self.idle_timeout / 2, self._sweep)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        client: Address = (addr[0], addr[1])
        session = self.sessions.get(client)
        if session is not None and session.transport is not None:
            session.last = time.monotonic()
            session.transport.sendto(data)
            return
        if client in self._waiting:
            self._waiting[client].append(data)
            return
        self._waiting[client] = [data]
        task = asyncio.ensure_future(self._open_session(client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open_session(self, client: Address) -> None:
        loop = asyncio.get_running_loop()
        backend = self.balancer.pick(client[0], time.monotonic())
        try:
            if backend is None:
                return
            _, session = await loop.create_datagram_endpoint(
                lambda: _UdpUpstream(self, client), remote_addr=backend
            )
            self.sessions[client] = session
            for data in self._waiting.get(client, []):
                session.transport.sendto(data)  # type: ignore[union-attr]
        except OSError as e:
            log.debug("udp backend unreachable", frontend=str(self.frontend), backend=backend, error=str(e))
        finally:
            self._waiting.pop(client, None)

    def _sweep(self) -> None:
        now = time.monotonic()
        for client, s in list(self.sessions.items()):
            gone = s.transport is None or (s.transport.get_extra_info("peername") or (None, None))[:2] not in self.balancer.backends
            if now - s.last > self.idle_timeout or gone:
                if s.transport is not None:
                    s.transport.close()
                del self.sessions[client]
        self.balancer.expire(now)
        if self.transport is not None and not self.transport.is_closing():
            self._sweeper = asyncio.get_running_loop().call_later(self.idle_timeout / 2, self._sweep)

    def update(self, route: Route) -> None:
        self.route = route
        self.balancer.update(route.backends, route.affinity_seconds)
        # Sessions to backends that left are dropped; the next datagram picks a new one.
        for client, s in list(self.sessions.items()):
            peer = s.transport.get_extra_info("peername") if s.transport is not None else None
            if peer is None or (peer[0], peer[1]) not in set(route.backends):
                if s.transport is not None:
                    s.transport.close()
                del self.sessions[client]

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for s in self.sessions.values():
            if s.transport is not None:
                s.transport.close()
        self.sessions.clear()
        for t in list(self._tasks):
            t.cancel()
        if self.transport is not None:
            self.transport.close()


FrontendSocket = TcpFrontend | UdpFrontend


class DataPlane:
    """All frontends of this proxy; :meth:`apply` moves them to a new routing table."""

    def __init__(self, *, on_error: Callable[[Frontend, Exception], None] | None = None) -> None:
        self.frontends: dict[Frontend, FrontendSocket] = {}
        self.failed: dict[Frontend, str] = {}
        self.on_error = on_error

    async def apply(self, routes: dict[Frontend, Route]) -> None:
        current = {fe: sock.route for fe, sock in self.frontends.items()}
        changes = diff(current, routes)
        for fe in changes.close:
            await self.frontends.pop(fe).close()
        for fe in changes.retarget:
            self.frontends[fe].update(routes[fe])
        self.failed = {f: why for f, why in self.failed.items() if f in routes}
        for fe in changes.open:
            if fe.protocol not in ("TCP", "UDP"):
                continue  # SCTP is not served
            route = routes[fe]
            sock: FrontendSocket = TcpFrontend(fe, route) if fe.protocol == "TCP" else UdpFrontend(fe, route)
            try:
                await sock.open()
            except OSError as e:
                self.failed[fe] = str(e)
                if self.on_error is not None:
                    self.on_error(fe, e)
                continue
            self.failed.pop(fe, None)
            self.frontends[fe] = sock

    async def close(self) -> None:
        await self.apply({})
