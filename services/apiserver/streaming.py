"""``pods/exec`` and ``pods/attach`` over WebSocket, as kubectl (1.31 and later) speaks them:
subprotocol ``v5.channel.k8s.io`` or ``v4.channel.k8s.io``, every binary message one channel
byte then data (0 stdin, 1 stdout, 2 stderr, 3 error: a metav1.Status, 4 resize; v5 adds 255,
close: ``[255, channel]``), carried to the pod's kubelet over ``kyb.node.<node>.exec``
(services/kubelet/nodeapi.py) and ``kyb.node.<node>.logs``.

An exec is a live session with the kubelet: what the client sends on stdin reaches the
command as it comes, its stdout and stderr come back on their channels as it writes them, a
``tty`` gives it a terminal of its own that resize messages size, and closing stdin ([255, 0]
in v5) or the connection ends it as on Kubernetes (``kubectl exec -it POD -- sh``, ``kubectl
exec -i POD -- CMD < file``, ``kubectl cp``). Attach streams the container's output from now
on (``kubectl attach``), or with stdin (``-i``; ``kubectl run -it``) is the same live session
with the container's main process, on the Docker runtime (the process runtime's keeper holds no
terminal: it says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from kyb import bus, errors
from kyb.cli.nodeclient import pick_container, stream_logs
from services.apiserver.portforward import EOF_HEADER, check_reply
from services.apiserver.respond import Failure

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
PROTOCOLS = (V5, V4)
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
CHUNK = 32 * 1024
MAX_MESSAGE = 1024 * 1024  # a client's WebSocket message (kubectl sends stdin in 32 KiB pieces)
START_TIMEOUT = 30.0  # seconds for the kubelet to start the command
STREAM_HEADER = "Kyb-Stream"
EXIT_HEADER = "Kyb-Exit-Code"
RESIZE_HEADER = "Kyb-Resize"
SUCCESS: dict[str, Any] = {"metadata": {}, "status": "Success"}


def exit_status(code: int, command: list[str]) -> dict[str, Any]:
    """The error channel's Status for an exit code (Success for 0)."""
    if code == 0:
        return SUCCESS
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: error executing command {command}, "
                       f"exit code {code}",
            "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def failure(e: errors.KybError) -> dict[str, Any]:
    return {"metadata": {}, "status": "Failure", "message": e.message, "reason": e.reason, "code": e.code}


def _bool(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _node_of(pod: dict[str, Any], name: str) -> str:
    node = (pod.get("spec") or {}).get("nodeName")
    if not node:
        raise Failure(400, "BadRequest", f'pod "{name}" is not scheduled to a node yet')
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        raise Failure(400, "BadRequest", "cannot exec into a container in a completed pod; current phase is "
                      f"{pod['status']['phase']}")
    return str(node)


async def _upgrade(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=MAX_MESSAGE, autoping=True)
    ready = ws.can_prepare(request)
    if not ready.ok:
        raise Failure(400, "BadRequest", "pods/exec and pods/attach are served over WebSocket (subprotocol "
                      f"{V5} or {V4}); SPDY is not served")
    await ws.prepare(request)
    return ws


async def _send(ws: web.WebSocketResponse, channel: int, data: bytes) -> None:
    for i in range(0, len(data), CHUNK):
        await ws.send_bytes(bytes([channel]) + data[i:i + CHUNK])


async def _finish(ws: web.WebSocketResponse, status: dict[str, Any]) -> None:
    with contextlib.suppress(Exception):
        await ws.send_bytes(bytes([ERROR]) + json.dumps(status).encode())
    with contextlib.suppress(Exception):
        await ws.close()


async def exec_(request: web.Request, nc: Any, pod: dict[str, Any], namespace: str, name: str) -> web.StreamResponse:
    q = request.query
    command = q.getall("command", [])
    if not command:
        raise Failure(400, "BadRequest", "you must specify at least one command for the container")
    node = _node_of(pod, name)
    try:
        container = pick_container(pod, q.get("container"))
    except errors.KybError as e:
        raise Failure(e.code, e.reason, e.message) from None
    ws = await _upgrade(request)
    session = NodeSession(nc, node, {"namespace": namespace, "pod": name, "container": container,
                                     "command": command, "session": secrets.token_hex(16),
                                     "openStdin": _bool(q.get("stdin")), "tty": _bool(q.get("tty"))})
    await _serve_session(ws, session, q, lambda code: exit_status(code, command))
    return ws


async def _serve_session(ws: web.WebSocketResponse, session: NodeSession, q: Any,
                         ended: Callable[[int], dict[str, Any]]) -> None:
    """Run ``session`` on ``ws``; the error channel's last word is ``ended(exit code)``, or the
    failure that stopped it; nothing when the client left first."""
    try:
        await session.open()
        code = await session.relay(ws, stdout=_bool(q.get("stdout", "true")), stderr=_bool(q.get("stderr", "true")))
        if code is not None:
            await _finish(ws, ended(code))
    except errors.KybError as e:
        await _finish(ws, failure(e))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        await session.close()


class NodeSession:
    """One live exec or attach through the pod's kubelet (services/kubelet/nodeapi.py, ``exec``
    or ``attach`` with a session): the client's stdin, stdin's close and terminal sizes go up on
    ``kyb.node.<node>.<verb>.<session>``, the output and the exit code come back."""

    def __init__(self, nc: Any, node: str, request: dict[str, Any], verb: str = "exec") -> None:
        self.nc = nc
        self.node = node
        self.request = request
        self.verb = verb  # exec, or attach (to the main process)
        self.upstream = f"kyb.node.{node}.{verb}.{request['session']}"
        self.inbox = ""
        self.sub: Any = None
        self.ended = False

    async def open(self) -> None:
        """Start the command (the kubelet's first, empty reply says it runs)."""
        self.inbox = self.nc.new_inbox()
        self.sub = await self.nc.subscribe(self.inbox)
        subject = f"kyb.node.{self.node}.{self.verb}"
        await bus.publish(self.nc, subject, json.dumps(self.request).encode(), reply=self.inbox)
        try:
            first = await self.sub.next_msg(timeout=START_TIMEOUT)
        except TimeoutError:  # nats-py's timeout is a TimeoutError
            raise errors.Temporary(f'node "{self.node}" did not answer on {subject} (is its kubelet running?)') from None
        check_reply(first)

    async def relay(self, ws: web.WebSocketResponse, *, stdout: bool, stderr: bool) -> int | None:
        """Carry the session both ways until the command ends (its exit code) or the client goes (None)."""
        upward = asyncio.create_task(self._from_client(ws))
        try:
            while True:
                msg = await self._next(upward)
                if msg is None:
                    return None  # the client went away
                check_reply(msg)
                headers = msg.headers or {}
                if headers.get(EOF_HEADER) == "1":
                    self.ended = True
                    return int(headers.get(EXIT_HEADER, "0"))
                channel = STDERR if headers.get(STREAM_HEADER) == "2" else STDOUT
                if msg.data and (stdout if channel == STDOUT else stderr):
                    await _send(ws, channel, msg.data)
        finally:
            upward.cancel()
            with contextlib.suppress(BaseException):
                await upward

    async def _next(self, upward: asyncio.Task[None]) -> Any:
        """The kubelet's next message, or None once the client's side has ended the session."""
        down = asyncio.ensure_future(self.sub.next_msg(timeout=None))
        done, _ = await asyncio.wait({down, upward}, return_when=asyncio.FIRST_COMPLETED)
        if down in done:
            return down.result()
        down.cancel()
        with contextlib.suppress(BaseException):
            await down
        upward.result()  # raises what ended it
        return None

    async def _from_client(self, ws: web.WebSocketResponse) -> None:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                data = bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:  # the Python client writes str stdin as text frames
                data = msg.data.encode()
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            else:
                continue
            if not data:
                continue
            channel, body = data[0], data[1:]
            if channel == STDIN and body:
                await bus.publish(self.nc, self.upstream, body)
            elif channel == CLOSE and body[:1] == bytes([STDIN]):
                await bus.publish(self.nc, self.upstream, b"", headers={EOF_HEADER: "1"})
            elif channel == RESIZE:
                size = _terminal_size(body)
                if size is not None:
                    await bus.publish(self.nc, self.upstream, b"", headers={RESIZE_HEADER: f"{size[0]} {size[1]}"})

    async def close(self) -> None:
        if not self.ended and self.inbox:  # the client left first: the kubelet kills the command
            with contextlib.suppress(errors.KybError):
                await bus.publish(self.nc, f"kyb.node.{self.node}.cancel", json.dumps({"inbox": self.inbox}).encode())
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()


def _terminal_size(body: bytes) -> tuple[int, int] | None:
    """(columns, rows) of a resize message, ``{"Width": 80, "Height": 24}``; None when it is not one."""
    try:
        size = json.loads(body)
        return int(size["Width"]), int(size["Height"])
    except (ValueError, TypeError, KeyError):
        return None


async def attach(request: web.Request, nc: Any, pod: dict[str, Any], namespace: str, name: str) -> web.StreamResponse:
    node = _node_of(pod, name)
    try:
        container = pick_container(pod, request.query.get("container"))
    except errors.KybError as e:
        raise Failure(e.code, e.reason, e.message) from None
    ws = await _upgrade(request)
    q = request.query
    if _bool(q.get("stdin")):  # kubectl attach -i, kubectl run -it: a session with the main process
        session = NodeSession(nc, node, {"namespace": namespace, "pod": name, "container": container,
                                         "session": secrets.token_hex(16), "openStdin": True,
                                         "tty": _bool(q.get("tty"))}, verb="attach")
        await _serve_session(ws, session, q, lambda _code: SUCCESS)
        return ws
    req = {"namespace": namespace, "pod": name, "container": container, "follow": True, "tail": 0}

    async def output() -> None:
        async for chunk in stream_logs(nc, node, req, idle_timeout=None):
            await _send(ws, STDOUT, chunk)

    pump = asyncio.create_task(output())
    try:
        reader = asyncio.create_task(_drain(ws))
        done, _ = await asyncio.wait({pump, reader}, return_when=asyncio.FIRST_COMPLETED)
        if pump in done and pump.exception() is not None:
            e = pump.exception()
            await _finish(ws, failure(e) if isinstance(e, errors.KybError) else failure(errors.Permanent(str(e))))
        elif pump in done:
            await _finish(ws, SUCCESS)
        reader.cancel()
    finally:
        pump.cancel()
        with contextlib.suppress(BaseException):
            await pump
    return ws


async def _drain(ws: web.WebSocketResponse) -> None:
    """Read (and drop) what the client sends until it goes: attach delivers no stdin."""
    async for _ in ws:
        pass
