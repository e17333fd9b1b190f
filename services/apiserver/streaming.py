"""``pods/exec`` and ``pods/attach`` over WebSocket, as kubectl (1.31 and later) speaks them:
subprotocol ``v5.channel.k8s.io`` or ``v4.channel.k8s.io``, every binary message one channel
byte then data (0 stdin, 1 stdout, 2 stderr, 3 error: a metav1.Status, 4 resize; v5 adds 255,
close: ``[255, channel]``), carried to the pod's kubelet over ``kyb.node.<node>.exec``
(services/kubelet/nodeapi.py) and ``kyb.node.<node>.logs``.

The kubelet's exec is one request and one reply: stdin, when asked for, is read whole (until
the client closes it, which v5 says with ``[255, 0]``; a v4 client can only close the whole
connection, so stdin over v4 is refused), then the command runs, then its output (stdout and
stderr together, on channel 1) and the exit status come back. So ``kubectl exec POD -- CMD``,
``kubectl exec -i POD -- CMD < file`` and ``kubectl cp`` work; an interactive session (``-it``)
does not. Attach streams the container's output from now on; its stdin is not delivered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from typing import Any

from aiohttp import WSMsgType, web

from kyb import bus, errors
from kyb.cli.nodeclient import pick_container, stream_logs
from services.apiserver.respond import Failure

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
PROTOCOLS = (V5, V4)
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
CHUNK = 32 * 1024
MAX_STDIN = 700 * 1024  # base64 of it must fit in one NATS message (1 MiB)
EXEC_TIMEOUT = 300.0
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
    ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=MAX_STDIN + 1024, autoping=True)
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


async def _read_stdin(ws: web.WebSocketResponse) -> bytes:
    """Everything the client sends on stdin until it closes it ([255, 0] in v5)."""
    data = bytearray()
    async for msg in ws:
        if msg.type != WSMsgType.BINARY or not msg.data:
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
            continue
        channel, body = msg.data[0], msg.data[1:]
        if channel == STDIN:
            data += body
            if len(data) > MAX_STDIN:
                raise errors.TooLarge(f"stdin of more than {MAX_STDIN} bytes is not served")
        elif channel == CLOSE and body[:1] == bytes([STDIN]):
            return bytes(data)
    raise errors.BadRequest("the connection closed before stdin did")


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
    want_stdin = _bool(q.get("stdin"))
    ws = await _upgrade(request)
    try:
        body: dict[str, Any] = {"namespace": namespace, "pod": name, "container": container, "command": command,
                                "binary": True, "timeout": EXEC_TIMEOUT}
        if want_stdin:
            if ws.ws_protocol != V5:
                raise errors.BadRequest(f"stdin is served over {V5} only (it can say when stdin ends)")
            body["stdin"] = base64.b64encode(await _read_stdin(ws)).decode()
        code, output = await _exec(nc, node, body)
        if output and _bool(q.get("stdout", "true")):
            await _send(ws, STDOUT, output)
        await _finish(ws, exit_status(code, command))
    except errors.KybError as e:
        await _finish(ws, failure(e))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return ws


async def _exec(nc: Any, node: str, body: dict[str, Any]) -> tuple[int, bytes]:
    subject = f"kyb.node.{node}.exec"
    try:
        msg = await bus.request(nc, subject, json.dumps(body).encode(), EXEC_TIMEOUT + 10)
    except errors.NoResponders:
        raise errors.Temporary(f'node "{node}" does not answer on {subject} (is its kubelet running?)') from None
    except errors.TimedOut:
        raise errors.Temporary(f'node "{node}" did not answer on {subject}') from None
    status = (msg.headers or {}).get("Kyb-Status", "200")
    reply = json.loads(msg.data)
    if not status.startswith("2"):
        raise errors.from_status(reply)
    output = reply.get("output", "")
    raw = base64.b64decode(output) if reply.get("encoding") == "base64" else str(output).encode()
    return int(reply["exitCode"]), raw


async def attach(request: web.Request, nc: Any, pod: dict[str, Any], namespace: str, name: str) -> web.StreamResponse:
    node = _node_of(pod, name)
    try:
        container = pick_container(pod, request.query.get("container"))
    except errors.KybError as e:
        raise Failure(e.code, e.reason, e.message) from None
    ws = await _upgrade(request)
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
