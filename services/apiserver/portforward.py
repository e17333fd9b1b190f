"""``pods/portforward`` over WebSocket, carried to the pod's kubelet over
``kyb.node.<node>.portforward`` (services/kubelet/nodeapi.py), which connects to the pod's IP
and port from its node and relays.

Two dialects:

- ``SPDY/3.1+portforward.k8s.io``, what ``kubectl port-forward`` speaks (SPDY tunnelled in
  WebSocket binary messages, services/apiserver/spdy.py): each local connection is a pair of
  streams with headers ``streamtype`` (``error`` or ``data``), ``port`` and ``requestid``; the
  data stream carries the bytes, the error stream a message when the forward failed.
- ``v4.channel.k8s.io`` / ``portforward.k8s.io`` (the ``ports`` query, as the Python client
  uses it): two channels per port, data ``2i`` and error ``2i+1``, each starting with the port
  as a little-endian uint16; one connection per port for the life of the WebSocket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from kyb import errors
from services.apiserver import spdy
from services.apiserver.respond import Failure

SPDY_TUNNEL = "SPDY/3.1+portforward.k8s.io"
CHANNELS = ("v4.channel.k8s.io", "portforward.k8s.io")
CONNECT_TIMEOUT = 15.0
EOF_HEADER = "Kyb-EOF"
STATUS_HEADER = "Kyb-Status"


class Forward:
    """One TCP connection to a pod's port through its kubelet."""

    def __init__(self, nc: Any, node: str, namespace: str, pod: str, port: int) -> None:
        self.nc = nc
        self.node = node
        self.request = {"namespace": namespace, "pod": pod, "port": port, "session": secrets.token_hex(16)}
        self.sub: Any = None
        self.inbox = ""

    @property
    def upstream(self) -> str:
        return f"kyb.node.{self.node}.portforward.{self.request['session']}"

    async def open(self) -> None:
        self.inbox = self.nc.new_inbox()
        self.sub = await self.nc.subscribe(self.inbox)
        subject = f"kyb.node.{self.node}.portforward"
        await self.nc.publish(subject, json.dumps(self.request).encode(), reply=self.inbox)
        try:
            msg = await self.sub.next_msg(timeout=CONNECT_TIMEOUT)
        except TimeoutError:  # no first reply from the kubelet (nats-py's timeout is a TimeoutError)
            raise errors.Temporary(f'node "{self.node}" did not answer on {subject}') from None
        check_reply(msg)

    async def send(self, data: bytes) -> None:
        if data:
            await self.nc.publish(self.upstream, data)

    async def close_write(self) -> None:
        await self.nc.publish(self.upstream, b"", headers={EOF_HEADER: "1"})

    async def receive(self, deliver: Callable[[bytes], Awaitable[None]]) -> None:
        """What the pod sends, until it closes its side."""
        while True:
            msg = await self.sub.next_msg(timeout=None)
            check_reply(msg)
            if (msg.headers or {}).get(EOF_HEADER) == "1":
                return
            if msg.data:
                await deliver(msg.data)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.publish(f"kyb.node.{self.node}.cancel", json.dumps({"inbox": self.inbox}).encode())
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()


def check_reply(msg: Any) -> None:
    """Raise the kyb error a kubelet's streamed reply carries (its Kyb-Status not 2xx)."""
    status = (msg.headers or {}).get(STATUS_HEADER, "200")
    if not status.startswith("2"):
        try:
            raise errors.from_status(json.loads(msg.data))
        except ValueError:
            raise errors.Permanent(f"the node answered {status}") from None


def _node_of(pod: dict[str, Any], name: str) -> str:
    node = (pod.get("spec") or {}).get("nodeName")
    if not node or (pod.get("status") or {}).get("phase") != "Running":
        raise Failure(400, "BadRequest", f'pod "{name}" is not running')
    return str(node)


async def serve(request: web.Request, nc: Any, pod: dict[str, Any], namespace: str, name: str) -> web.StreamResponse:
    node = _node_of(pod, name)
    ws = web.WebSocketResponse(protocols=(SPDY_TUNNEL, *CHANNELS), autoping=True, max_msg_size=spdy.MAX_FRAME + 16)
    if not ws.can_prepare(request).ok:
        raise Failure(400, "BadRequest", f"pods/portforward is served over WebSocket ({SPDY_TUNNEL} or "
                      f"{CHANNELS[0]}); SPDY without WebSocket is not served")
    if ws.can_prepare(request).protocol in CHANNELS:
        ports = _ports(request.query.getall("ports", []))
        await ws.prepare(request)
        await ChannelSession(ws, nc, node, namespace, name, ports).run()
    else:
        await ws.prepare(request)
        await SpdySession(ws, nc, node, namespace, name).run()
    return ws


def _ports(values: list[str]) -> list[int]:
    out = []
    for value in ",".join(values).split(","):
        if not value.strip():
            continue
        try:
            port = int(value)
        except ValueError:
            port = 0
        if not 0 < port < 65536:
            raise Failure(400, "BadRequest", f'ports: Invalid value: "{value}": must be 1-65535')
        out.append(port)
    if not out:
        raise Failure(400, "BadRequest", "ports: Required value: at least one port to forward")
    return out


class SpdySession:
    """kubectl's port forward: SPDY streams in a WebSocket."""

    def __init__(self, ws: web.WebSocketResponse, nc: Any, node: str, namespace: str, pod: str) -> None:
        self.ws, self.nc, self.node, self.namespace, self.pod = ws, nc, node, namespace, pod
        self.reader = spdy.Reader()
        self.headers = spdy.Headers()
        self.lock = asyncio.Lock()
        self.errors: dict[str, int] = {}  # requestid -> error stream
        self.forwards: dict[int, Forward] = {}  # data stream -> its forward
        self.pending: dict[int, list[bytes | None]] = {}  # data stream -> data before the forward opened
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.last_stream = 0

    async def write(self, frame: bytes | Callable[[], bytes]) -> None:
        async with self.lock:  # header compression and frames go out in one order
            with contextlib.suppress(Exception):
                await self.ws.send_bytes(frame() if callable(frame) else frame)

    async def run(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != WSMsgType.BINARY:
                    if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                        break
                    continue
                for frame in self.reader.feed(msg.data):
                    await self.on_frame(frame)
        except spdy.ProtocolError:
            await self.write(spdy.goaway(self.last_stream, 1))
        finally:
            for task in self.tasks.values():
                task.cancel()
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.ws.close()

    async def on_frame(self, frame: spdy.Control | spdy.Data) -> None:
        if isinstance(frame, spdy.Data):
            await self.on_data(frame)
        elif frame.type == spdy.SYN_STREAM:
            stream_id, headers = spdy.syn_stream(frame, self.headers)
            self.last_stream = max(self.last_stream, stream_id)
            await self.on_stream(stream_id, headers)
        elif frame.type == spdy.RST_STREAM:
            task = self.tasks.pop(spdy.stream_of(frame), None)
            if task is not None:
                task.cancel()
        elif frame.type == spdy.PING:
            await self.write(spdy.control(spdy.PING, 0, frame.data))
        elif frame.type == spdy.GOAWAY:
            await self.ws.close()

    async def on_stream(self, stream_id: int, headers: dict[str, str]) -> None:
        kind = headers.get("streamtype")
        request_id = headers.get("requestid", "")
        await self.write(lambda: spdy.syn_reply(stream_id, self.headers))
        if kind == "error":
            self.errors[request_id] = stream_id
            return
        if kind != "data":
            await self.write(spdy.rst_stream(stream_id, spdy.RST_PROTOCOL_ERROR))
            return
        try:
            port = int(headers.get("port", ""))
        except ValueError:
            port = 0
        self.pending[stream_id] = []
        self.tasks[stream_id] = asyncio.create_task(self.relay(stream_id, request_id, port))

    async def on_data(self, frame: spdy.Data) -> None:
        forward = self.forwards.get(frame.stream_id)
        if forward is None:
            waiting = self.pending.get(frame.stream_id)
            if waiting is not None:
                waiting.append(frame.data)
                if frame.fin:
                    waiting.append(None)
            return  # an error stream's, or a finished stream's
        await forward.send(frame.data)
        if frame.fin:
            await forward.close_write()

    async def relay(self, stream_id: int, request_id: str, port: int) -> None:
        failure = ""
        forward = Forward(self.nc, self.node, self.namespace, self.pod, port)
        try:
            if not 0 < port < 65536:
                raise errors.BadRequest(f'port: Invalid value: "{port}"')
            await forward.open()
            waiting = self.pending.get(stream_id, [])
            while waiting:  # what came while connecting, in order; then straight through
                chunk = waiting.pop(0)
                if chunk is None:
                    await forward.close_write()
                else:
                    await forward.send(chunk)
            self.forwards[stream_id] = forward
            self.pending.pop(stream_id, None)

            async def deliver(data: bytes) -> None:
                for i in range(0, len(data), 32 * 1024):
                    await self.write(spdy.data(stream_id, data[i:i + 32 * 1024]))

            await forward.receive(deliver)
        except errors.KybError as e:
            failure = f"error forwarding port {port} to pod {self.pod}: {e.message}"
        finally:
            self.forwards.pop(stream_id, None)
            self.pending.pop(stream_id, None)
            await forward.close()
        await self.write(spdy.data(stream_id, b"", fin=True))
        error_stream = self.errors.pop(request_id, None)
        if error_stream is not None:
            if failure:
                await self.write(spdy.data(error_stream, failure.encode()))
            await self.write(spdy.data(error_stream, b"", fin=True))


class ChannelSession:
    """The channel dialect: one connection per port, two channels each."""

    def __init__(self, ws: web.WebSocketResponse, nc: Any, node: str, namespace: str, pod: str,
                 ports: list[int]) -> None:
        self.ws, self.nc, self.node, self.namespace, self.pod, self.ports = ws, nc, node, namespace, pod, ports
        self.upstream: list[asyncio.Queue[bytes]] = [asyncio.Queue() for _ in ports]  # until connected, too
        self.lock = asyncio.Lock()

    async def send(self, channel: int, data: bytes) -> None:
        async with self.lock:
            with contextlib.suppress(Exception):
                await self.ws.send_bytes(bytes([channel]) + data)

    async def run(self) -> None:
        tasks = []
        for i, port in enumerate(self.ports):
            prefix = struct.pack("<H", port)
            await self.send(2 * i, prefix)
            await self.send(2 * i + 1, prefix)
            tasks.append(asyncio.create_task(self.relay(i, port)))
        reader = asyncio.create_task(self.read())
        try:  # the WebSocket ends when the client goes or every port's connection has ended
            await asyncio.wait({reader, asyncio.gather(*tasks, return_exceptions=True)},
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            reader.cancel()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.ws.close()

    async def read(self) -> None:
        async for msg in self.ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    return
                continue
            channel, body = msg.data[0], msg.data[1:]
            if channel % 2 == 0 and channel // 2 < len(self.upstream):
                self.upstream[channel // 2].put_nowait(body)

    async def relay(self, index: int, port: int) -> None:
        forward = Forward(self.nc, self.node, self.namespace, self.pod, port)
        pump = None
        try:
            await forward.open()

            async def up() -> None:
                while True:
                    await forward.send(await self.upstream[index].get())

            async def deliver(data: bytes) -> None:
                await self.send(2 * index, data)

            pump = asyncio.create_task(up())
            await forward.receive(deliver)
        except errors.KybError as e:
            await self.send(2 * index + 1, f"error forwarding port {port} to pod {self.pod}: {e.message}".encode())
        finally:
            if pump is not None:
                pump.cancel()
            await forward.close()
