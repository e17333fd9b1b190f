"""Shared by the service networking tests (no tests here): helpers: an in-process cluster (api, endpoints, proxy,
dns, ...) on a real nats-server, hollow pods whose "containers" are asyncio servers bound on
their own 127.x pod IPs, and small TCP/UDP clients."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import random
from typing import Any

import msgspec
import nats

from kyb import errors
from kyb.client import ApiClient
from kyb.serve import run_services
from kyb.store import Store
from schemas.helpers import format_time
from schemas.pod import Pod, PodCondition, PodStatus
from tests.cluster import FAST_LEASE
from tests.cluster import wait_for as cluster_wait_for

FAST = FAST_LEASE


async def wait_for(predicate, timeout: float = 15.0, what: str = "condition") -> Any:
    """tests.cluster.wait_for, where a connection refused, a failed check or an object not
    there yet is "not yet"."""
    return await cluster_wait_for(predicate, timeout, what, ignoring=(OSError, AssertionError, errors.NotFound))


def random_subnet() -> str:
    """A 127.x.y prefix for this test's pod IPs, unlikely to clash with a parallel run."""
    return f"127.{random.randint(100, 199)}.{random.randint(0, 255)}"


class Backend:
    """A hollow pod's TCP and UDP echo: replies ``<name>:<line>`` per line / datagram."""

    def __init__(self, name: str, ip: str, port: int = 8080) -> None:
        self.name, self.ip, self.port = name, ip, port
        self.server: asyncio.AbstractServer | None = None
        self.udp: asyncio.DatagramTransport | None = None
        self.hits = 0

    async def start(self, *, udp: bool = False) -> None:
        self.server = await asyncio.start_server(self._serve, self.ip, self.port, reuse_address=True)
        if udp:
            backend = self

            class Echo(asyncio.DatagramProtocol):
                def connection_made(self, transport):
                    self.transport = transport

                def datagram_received(self, data, addr):
                    backend.hits += 1
                    self.transport.sendto(backend.name.encode() + b":" + data, addr)

            self.udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(Echo, local_addr=(self.ip, self.port))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.hits += 1
        with contextlib.suppress(OSError):
            while line := await reader.readline():
                writer.write(self.name.encode() + b":" + line)
                await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
        if self.udp is not None:
            self.udp.close()


async def ask(ip: str, port: int, line: str = "hi", timeout: float = 3.0) -> str:
    """One request over a new TCP connection; the reply line without its newline."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
    try:
        writer.write(line.encode() + b"\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.readline(), timeout)
        if not reply:
            raise ConnectionResetError("closed without a reply")
        return reply.decode().rstrip("\n")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def ask_udp(ip: str, port: int, data: bytes = b"ping", timeout: float = 1.0) -> bytes:
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, d, addr):
            if not got.done():
                got.set_result(d)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(ip, port))
    try:
        transport.sendto(data)
        return await asyncio.wait_for(got, timeout)
    finally:
        transport.close()


class NetCluster:
    def __init__(self, nc: Any, url: str, options: dict[str, Any]) -> None:
        self.nc = nc
        self.url = url
        self.options = options
        self.store = Store(nc.jetstream())
        self.api = ApiClient(nc)
        self.stop = asyncio.Event()
        self.task: asyncio.Task | None = None

    async def start(self, *names: str) -> None:
        self.task = asyncio.create_task(run_services(list(names), self.url, self.options, self.stop))

        async def up():
            if self.task.done():
                self.task.result()
            with contextlib.suppress(Exception):
                await self.api.get("ns", None, "default")
                return True
            return False

        await wait_for(up, 20, "api up")

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 30)

    async def pod(self, name: str, ip: str, labels: dict[str, str], *, ready: bool = True, port: int = 8080,
                  protocol: str = "TCP") -> None:
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "hollow", "ports": [
                {"name": "http", "containerPort": port, "protocol": protocol}]}]},
        }
        await self.api.apply(manifest)
        await self.set_ready(name, ready, ip=ip)

    async def set_ready(self, name: str, ready: bool, *, ip: str | None = None) -> None:
        now = format_time(_dt.datetime.now(_dt.UTC))

        def change(p: Pod) -> Pod:
            status = msgspec.structs.replace(
                p.status,
                phase="Running",
                podIP=ip or p.status.podIP,
                conditions=[PodCondition(type="Ready", status="True" if ready else "False", lastTransitionTime=now)],
            )
            return msgspec.structs.replace(p, status=status)

        await self.store.mutate("Pod", "default", name, change)

    async def service(self, name: str, type_: str = "ClusterIP", **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": type_, "selector": {"app": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}], **spec},
        }
        obj, _ = await self.api.apply(body)
        return obj


async def connect(url: str):
    return await nats.connect(url)


__all__ = ["Backend", "NetCluster", "PodStatus", "ask", "ask_udp", "random_subnet", "wait_for", "FAST"]
