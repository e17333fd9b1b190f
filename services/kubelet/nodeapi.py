"""The kubelet's node API over NATS: container logs and exec, the two things only the node
running a pod can answer (what the kubelet's HTTPS port serves in Kubernetes).

    kyb.node.<node>.logs    {namespace, pod, container, follow, previous, tail, timestamps, sinceSeconds,
                             sinceTime}
                            -> chunks of output to the reply inbox, each its own message, then an
                               empty message with header ``Kyb-EOF: 1``; ``timestamps``: each line
                               after its time (RFC 3339, nanoseconds) and a space; ``sinceSeconds``
                               (before now, by this node's clock) or ``sinceTime`` (RFC 3339): the
                               lines written from then on
    kyb.node.<node>.exec    {namespace, pod, container, command: [...], timeout?, stdin?}
                            -> {exitCode, output}; stdin (base64) is all the command reads;
                               binary: output in base64, with encoding "base64"
    kyb.node.<node>.exec    {namespace, pod, container, command, session, openStdin?, tty?}
                            -> a live session (kubectl exec -it): an empty message once it runs, then
                               its output, each chunk its own message with header ``Kyb-Stream``
                               1 (stdout) or 2 (stderr; a terminal has only 1), then an empty
                               message with ``Kyb-EOF: 1`` and ``Kyb-Exit-Code``. The client
                               publishes on ``kyb.node.<node>.exec.<session>``: bytes for its stdin,
                               an empty message with ``Kyb-EOF: 1`` to close it, one with
                               ``Kyb-Resize: <columns> <rows>`` to size its terminal. A cancel of
                               the reply inbox kills the command.
    kyb.node.<node>.attach  {namespace, pod, container, session, openStdin?, tty?}
                            -> the same session with the container's main process (kubectl attach -i,
                               kubectl run -it), driven on ``kyb.node.<node>.attach.<session>``; a
                               cancel detaches, the container goes on
    kyb.node.<node>.portforward  {namespace, pod, port, session}
                            -> a TCP connection from this node to the pod's IP and port: an empty
                               message once connected, then what the pod sends, each chunk its own
                               message, then ``Kyb-EOF: 1``; what the client publishes on
                               ``kyb.node.<node>.portforward.<session>`` goes to the pod (an empty
                               message with ``Kyb-EOF: 1`` ends that direction)
    kyb.node.<node>.cancel  {inbox}: stop the followed log stream (or port forward) answering to that inbox
                            (a client sends it when it stops reading)

Requests are decoded under ``schemas.limits`` (size, depth), as the api decodes its own.
Failures are a Status body (``kyb.errors`` wire shape) with header ``Kyb-Status`` = its code;
for logs it also carries ``Kyb-EOF: 1``. Each request is handled in its own task, so a
followed stream never holds up anything else.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from kyb import errors
from schemas import limits
from services.kubelet.runtime.base import ContainerRuntime, ExecSession
from services.kubelet.runtime.errors import ContainerNotFound, ContainerRuntimeError, ExecTimeout

log = structlog.get_logger("kyb.kubelet.nodeapi")

CHUNK = 64 * 1024  # bytes per streamed message
DEFAULT_EXEC_TIMEOUT = 300.0
EOF_HEADER = "Kyb-EOF"
STATUS_HEADER = "Kyb-Status"
STREAM_HEADER = "Kyb-Stream"  # exec sessions: the output stream of a chunk (1 stdout, 2 stderr)
EXIT_HEADER = "Kyb-Exit-Code"
RESIZE_HEADER = "Kyb-Resize"

Lookup = Callable[[str, str, str | None, bool], "str | None | Awaitable[str | None]"]
PodAddress = Callable[[str, str], "str | None"]  # (namespace, pod) -> the IP of a pod of this node
_SESSION = re.compile(r"[A-Za-z0-9_-]{1,64}")


class LogsRequest(msgspec.Struct, kw_only=True, frozen=True):
    pod: str
    namespace: str = "default"
    container: str | None = None
    follow: bool = False
    previous: bool = False
    tail: int | None = None  # lines; None = all
    timestamps: bool = False
    sinceSeconds: int | None = None
    sinceTime: str | None = None

    def since(self, now: float) -> float | None:
        """The UNIX time the log starts at, if asked (BadRequest naming the field otherwise)."""
        if self.sinceSeconds is not None:
            if self.sinceSeconds < 1:
                raise errors.BadRequest("sinceSeconds must be greater than 0",
                                        [errors.FieldError("sinceSeconds", "must be greater than 0")])
            return now - self.sinceSeconds
        if self.sinceTime:
            try:
                when = datetime.fromisoformat(self.sinceTime.replace("Z", "+00:00"))
            except ValueError:
                raise errors.BadRequest(f"sinceTime {self.sinceTime!r} is not an RFC 3339 time", [
                    errors.FieldError("sinceTime", "an RFC 3339 time, such as 2026-01-02T03:04:05Z")]) from None
            return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()
        return None


class ExecRequest(msgspec.Struct, kw_only=True, frozen=True):
    pod: str
    command: list[str]
    namespace: str = "default"
    container: str | None = None
    timeout: float = DEFAULT_EXEC_TIMEOUT
    stdin: str | None = None  # base64: what the command reads before end of file; None: no stdin
    binary: bool = False  # the output as base64 (encoding "base64"), not text
    session: str = ""  # set: a live session (see the module docstring), driven on exec.<session>
    openStdin: bool = False  # session: the command's stdin stays open for what the client sends
    tty: bool = False  # session: the command gets a terminal of its own


class AttachRequest(msgspec.Struct, kw_only=True, frozen=True):
    pod: str
    session: str
    namespace: str = "default"
    container: str | None = None
    openStdin: bool = False
    tty: bool = False


class PortForwardRequest(msgspec.Struct, kw_only=True, frozen=True):
    pod: str
    port: int
    session: str
    namespace: str = "default"


class CancelRequest(msgspec.Struct, kw_only=True, frozen=True):
    inbox: str = ""


class ExecReply(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    exitCode: int
    output: str
    encoding: str = ""  # "base64" when the request asked for binary output


def subject(node_name: str, verb: str) -> str:
    return f"kyb.node.{node_name}.{verb}"


class NodeApi:
    """The running node API: the subscriptions and the streams in flight. ``stop()`` ends them."""

    def __init__(self, nc: NATS, node_name: str, runtime: ContainerRuntime, lookup: Lookup,
                 pod_address: PodAddress | None = None) -> None:
        self.nc = nc
        self.node_name = node_name
        self.runtime = runtime
        self.lookup = lookup
        self.pod_address = pod_address
        self._subs: list[Any] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._streams: dict[str, asyncio.Task[None]] = {}  # reply inbox -> the log stream feeding it

    async def start(self) -> None:
        verbs = [("logs", self._logs), ("exec", self._exec), ("attach", self._attach), ("cancel", self._cancel)]
        if self.pod_address is not None:
            verbs.append(("portforward", self._portforward))
        for verb, handler in verbs:
            self._subs.append(await self.nc.subscribe(subject(self.node_name, verb), cb=self._spawn(handler)))

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    unsubscribe = stop

    def _spawn(self, handler: Callable[[Msg], Awaitable[None]]) -> Callable[[Msg], Awaitable[None]]:
        async def cb(msg: Msg) -> None:
            task = asyncio.create_task(handler(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return cb

    async def _container_id(self, namespace: str, pod: str, container: str | None, previous: bool) -> str:
        found = self.lookup(namespace, pod, container, previous)
        if inspect.isawaitable(found):
            found = await found
        if not found:
            what = f'previous terminated container "{container}"' if previous else f'container "{container}"'
            if container is None:
                what = "a container"
            raise errors.NotFound(f'{what} in pod "{pod}" not found on node "{self.node_name}"')
        return found

    async def _reply_error(self, reply: str, err: errors.KybError, eof: bool) -> None:
        headers = {STATUS_HEADER: str(err.code)}
        if eof:
            headers[EOF_HEADER] = "1"
        await self.nc.publish(reply, json.dumps(err.to_status()).encode(), headers=headers)

    # -- logs ------------------------------------------------------------------------------

    async def _logs(self, msg: Msg) -> None:
        if not msg.reply:
            return
        self._streams[msg.reply] = asyncio.current_task()  # type: ignore[assignment]
        try:
            req = limits.decode_json(msg.data, type=LogsRequest, what="logs request")
            cid = await self._container_id(req.namespace, req.pod, req.container, req.previous)
            since = req.since(time.time())
            async for chunk in self.runtime.logs(cid, tail=req.tail, follow=req.follow and not req.previous,
                                                 timestamps=req.timestamps, since=since):
                for i in range(0, len(chunk), CHUNK):
                    await self.nc.publish(msg.reply, chunk[i : i + CHUNK])
            await self.nc.publish(msg.reply, b"", headers={EOF_HEADER: "1", STATUS_HEADER: "200"})
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self.nc.publish(msg.reply, b"", headers={EOF_HEADER: "1", STATUS_HEADER: "200"})
            raise
        except Exception as e:
            await self._reply_error(msg.reply, _as_kyb(e), eof=True)
        finally:
            self._streams.pop(msg.reply, None)

    async def _cancel(self, msg: Msg) -> None:
        try:
            inbox = limits.decode_json(msg.data, type=CancelRequest, what="cancel request").inbox
        except limits.InputError:
            return  # nobody waits for an answer to a cancel
        task = self._streams.get(inbox)
        if task is not None:
            task.cancel()

    # -- exec ------------------------------------------------------------------------------

    async def _exec(self, msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            req = limits.decode_json(msg.data, type=ExecRequest, what="exec request")
            if not req.command:
                raise errors.BadRequest("you must specify at least one command for the container")
            if req.session:
                await self._exec_session(msg.reply, req)
                return
            cid = await self._container_id(req.namespace, req.pod, req.container, False)
            if req.stdin is None:
                code, output = await self.runtime.exec(cid, list(req.command), req.timeout)
            else:
                try:
                    data = base64.b64decode(req.stdin, validate=True)
                except ValueError:
                    raise errors.BadRequest("stdin: Invalid value: not base64") from None
                code, output = await self.runtime.exec(cid, list(req.command), req.timeout, stdin=data)
            if req.binary:
                reply = ExecReply(exitCode=code, output=base64.b64encode(output).decode(), encoding="base64")
            else:
                reply = ExecReply(exitCode=code, output=output.decode(errors="replace"))
            body = msgspec.json.encode(reply)
            await self.nc.publish(msg.reply, body, headers={STATUS_HEADER: "200"})
        except asyncio.CancelledError:
            raise
        except Exception as e:
            await self._reply_error(msg.reply, _as_kyb(e), eof=False)


    async def _exec_session(self, reply: str, req: ExecRequest) -> None:
        cid = await self._container_id(req.namespace, req.pod, req.container, False)
        await self._session(reply, "exec", req.session,
                            lambda: self.runtime.exec_session(cid, list(req.command), stdin=req.openStdin, tty=req.tty))

    async def _attach(self, msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            req = limits.decode_json(msg.data, type=AttachRequest, what="attach request")
            cid = await self._container_id(req.namespace, req.pod, req.container, False)
            await self._session(msg.reply, "attach", req.session,
                                lambda: self.runtime.attach_session(cid, stdin=req.openStdin, tty=req.tty))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            await self._reply_error(msg.reply, _as_kyb(e), eof=True)

    async def _session(self, reply: str, verb: str, session_id: str,
                       start: Callable[[], Awaitable[ExecSession]]) -> None:
        """Run a live session (exec or attach): the client drives it on ``kyb.node.<node>.<verb>.<session_id>``."""
        if not _SESSION.fullmatch(session_id):
            raise errors.BadRequest("session: Invalid value: 1-64 letters, digits, - or _")
        self._streams[reply] = asyncio.current_task()  # type: ignore[assignment]
        inbound = session = feeding = None
        try:
            inbound = await self.nc.subscribe(subject(self.node_name, f"{verb}.{session_id}"))
            session = await start()
            await self.nc.publish(reply, b"", headers={STATUS_HEADER: "200"})
            feeding = asyncio.create_task(self._to_exec(inbound, session))
            while (item := await session.output()) is not None:
                stream, data = item
                await self.nc.publish(reply, data, headers={STREAM_HEADER: str(stream)})
            code = await session.wait()
            await self.nc.publish(reply, b"", headers={EOF_HEADER: "1", STATUS_HEADER: "200",
                                                       EXIT_HEADER: str(code)})
        except asyncio.CancelledError:
            if session is not None:
                with contextlib.suppress(Exception):
                    await session.kill()
            raise
        finally:
            self._streams.pop(reply, None)
            if feeding is not None:
                feeding.cancel()
            if inbound is not None:
                with contextlib.suppress(Exception):
                    await inbound.unsubscribe()

    @staticmethod
    async def _to_exec(inbound: Any, session: ExecSession) -> None:
        async for m in inbound.messages:
            headers = m.headers or {}
            if headers.get(EOF_HEADER) == "1":
                await session.close_stdin()
            elif RESIZE_HEADER in headers:
                columns, _, rows = headers[RESIZE_HEADER].partition(" ")
                with contextlib.suppress(ValueError):
                    await session.resize(int(columns), int(rows))
            elif m.data:
                await session.write(m.data)

    # -- port forward ----------------------------------------------------------------------

    async def _portforward(self, msg: Msg) -> None:
        if not msg.reply:
            return
        self._streams[msg.reply] = asyncio.current_task()  # type: ignore[assignment]
        writer = inbound = None
        try:
            req = limits.decode_json(msg.data, type=PortForwardRequest, what="port-forward request")
            if not 0 < req.port < 65536:
                raise errors.BadRequest(f"port: Invalid value: {req.port}: must be 1-65535")
            if not _SESSION.fullmatch(req.session):
                raise errors.BadRequest("session: Invalid value: 1-64 letters, digits, - or _")
            assert self.pod_address is not None
            ip = self.pod_address(req.namespace, req.pod)
            if not ip:
                raise errors.NotFound(f'pod "{req.pod}" has no IP on node "{self.node_name}"')
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, req.port), 10)
            except (OSError, TimeoutError) as e:
                raise errors.Temporary(f"connecting to {ip}:{req.port} of pod {req.pod}: {e}") from None
            inbound = await self.nc.subscribe(subject(self.node_name, f"portforward.{req.session}"))
            await self.nc.publish(msg.reply, b"", headers={STATUS_HEADER: "200"})
            to_pod = asyncio.create_task(self._to_pod(inbound, writer))
            try:
                while chunk := await reader.read(CHUNK):
                    await self.nc.publish(msg.reply, chunk)
            finally:
                to_pod.cancel()
            await self.nc.publish(msg.reply, b"", headers={EOF_HEADER: "1", STATUS_HEADER: "200"})
        except asyncio.CancelledError:
            raise
        except Exception as e:
            await self._reply_error(msg.reply, _as_kyb(e), eof=True)
        finally:
            self._streams.pop(msg.reply, None)
            if inbound is not None:
                with contextlib.suppress(Exception):
                    await inbound.unsubscribe()
            if writer is not None:
                writer.close()

    @staticmethod
    async def _to_pod(inbound: Any, writer: asyncio.StreamWriter) -> None:
        async for m in inbound.messages:
            if (m.headers or {}).get(EOF_HEADER) == "1":
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(m.data)
            await writer.drain()


def _as_kyb(e: Exception) -> errors.KybError:
    if isinstance(e, errors.KybError):
        return e
    if isinstance(e, limits.InputError):  # schemas.limits: the size family is a 413
        return (errors.TooLarge if isinstance(e, limits.InputTooLarge) else errors.BadRequest)(e.message)
    if isinstance(e, msgspec.DecodeError | msgspec.ValidationError):
        return errors.BadRequest(f"undecodable request: {e}")
    if isinstance(e, ContainerNotFound):
        return errors.NotFound(e.message)
    if isinstance(e, ExecTimeout):
        return errors.Temporary(e.message)
    if isinstance(e, ContainerRuntimeError):
        return errors.Permanent(e.message)
    log.exception("node api request failed")
    return errors.Permanent(f"{type(e).__name__}: {e}")


async def serve_node_api(nc: NATS, node_name: str, runtime: ContainerRuntime, lookup: Lookup,
                         pod_address: PodAddress | None = None) -> NodeApi:
    """Answer ``kyb.node.<node_name>.logs|exec|cancel`` (and ``portforward`` when given
    ``pod_address(namespace, pod)``, a pod's IP) until the returned handle is stopped.

    ``lookup(namespace, pod, container, previous)`` names the runtime container id (of the
    previous, terminated instance when ``previous``), or None when there is none; it may be a
    coroutine function and may raise a ``kyb.errors`` error with a better message.
    """
    api = NodeApi(nc, node_name, runtime, lookup, pod_address)
    await api.start()
    return api
