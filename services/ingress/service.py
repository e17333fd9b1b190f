"""The ingress service: serves the Ingresses of its class on one address, through one of two
data planes, and reports that address in each Ingress's ``status.loadBalancer``.

Informers on Ingresses, IngressClasses, Services, EndpointSlices and Secrets only flag "something
changed"; one sync loop recomputes the routing table from the caches (:func:`plan.table`),
moves the data plane to it, then writes the statuses that differ (CAS through ``store.mutate``).

Options (``kyb serve ingress -o key=value`` / ``kyb up``):
- ``ingress_plane``: ``builtin`` (default; the asyncio proxy in this process) or ``nginx``.
- ``ingress_class``: the IngressClass name served (default ``kyb``); IngressClasses whose
  ``spec.controller`` is ``kybernetes.io/ingress`` are served too.
- ``ingress_watch_without_class``: also serve Ingresses without a class when the cluster has
  no default IngressClass (default false, as ingress-nginx).
- ``ingress_address`` (default 127.0.0.1), ``ingress_http_port`` (80 when bindable, else 8080),
  ``ingress_https_port`` (443 when bindable, else 8443).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any, Protocol

import msgspec

from kyb import errors
from kyb.informer import Informer
from kyb.serve import ServiceContext
from kyb.store import Store
from schemas.core import LoadBalancerIngress, LoadBalancerStatus, Secret, Service
from schemas.discovery import EndpointSlice
from schemas.meta import Object
from schemas.networking import Ingress, IngressClass, IngressStatus
from services.ingress.plan import DEFAULT_CLASS, Table, is_ours, table, wants_status

DEFAULT_ADDRESS = "127.0.0.1"


class DataPlane(Protocol):
    async def start(self) -> None: ...
    async def apply(self, table: Table) -> Any: ...
    async def close(self) -> None: ...


def bindable(address: str, port: int) -> bool:
    """Whether this process may listen on ``address:port`` (ports below 1024 need privilege)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except PermissionError:
            return False
        except OSError:
            return True  # in use: not a privilege problem; the plane reports it
    return True


def ports(options: dict[str, Any], address: str) -> tuple[int, int]:
    http = options.get("ingress_http_port")
    https = options.get("ingress_https_port")
    if http is None:
        http = 80 if bindable(address, 80) else 8080
    if https is None:
        https = 443 if bindable(address, 443) else 8443
    return int(http), int(https)


def make_plane(kind: str, address: str, http_port: int, https_port: int, on_error: Any) -> DataPlane:
    if kind == "builtin":
        from services.ingress.builtin import BuiltinPlane

        return BuiltinPlane(address, http_port, https_port, on_error=on_error)
    if kind == "nginx":
        from services.ingress.nginx import NginxPlane

        return NginxPlane(address, http_port, https_port, on_error=on_error)
    raise errors.BadRequest(f"ingress_plane must be builtin or nginx, not {kind!r}")


class IngressController:
    """Caches in; data plane and Ingress statuses out."""

    def __init__(self, nc: Any, store: Store, plane: DataPlane, *, address: str = DEFAULT_ADDRESS,
                 class_name: str = DEFAULT_CLASS, watch_without_class: bool = False, log: Any = None) -> None:
        self.store = store
        self.plane = plane
        self.address = address
        self.class_name = class_name
        self.watch_without_class = watch_without_class
        self.log = log
        self.ingresses = Informer(nc, "Ingress")
        self.classes = Informer(nc, "IngressClass")
        self.services = Informer(nc, "Service")
        self.slices = Informer(nc, "EndpointSlice")
        self.secrets = Informer(nc, "Secret")
        self.informers = (self.ingresses, self.classes, self.services, self.slices, self.secrets)
        self.changed = asyncio.Event()
        self.table = Table()
        for inf in self.informers:
            inf.add_handler(self._on_change)

    def _on_change(self, event: str, new: Object | None, old: Object | None, headers: dict[str, str]) -> None:
        self.changed.set()

    def ours(self) -> tuple[list[Ingress], list[Ingress]]:
        classes = [c for c in self.classes.list() if isinstance(c, IngressClass)]
        mine: list[Ingress] = []
        others: list[Ingress] = []
        for ing in self.ingresses.list():
            if not isinstance(ing, Ingress) or ing.metadata.deletionTimestamp:
                continue
            ok = is_ours(ing, classes, self.class_name, watch_without_class=self.watch_without_class)
            (mine if ok else others).append(ing)
        return mine, others

    async def sync(self) -> None:
        mine, others = self.ours()
        self.table = table(
            mine,
            [s for s in self.services.list() if isinstance(s, Service)],
            [s for s in self.slices.list() if isinstance(s, EndpointSlice)],
            [s for s in self.secrets.list() if isinstance(s, Secret) and s.type == "kubernetes.io/tls"],
        )
        await self.plane.apply(self.table)
        for ing, ours in [*((i, True) for i in mine), *((i, False) for i in others)]:
            ips = wants_status(ing, ours, self.address)
            if ips is not None:
                await self._write_status(ing, ips)

    async def _write_status(self, ing: Ingress, ips: list[str]) -> None:
        status = IngressStatus(loadBalancer=LoadBalancerStatus(ingress=[LoadBalancerIngress(ip=ip) for ip in ips]))

        def change(current: Object) -> Object | None:
            assert isinstance(current, Ingress)
            if current.status == status:
                return None
            return msgspec.structs.replace(current, status=status)

        try:
            await self.store.mutate("Ingress", ing.metadata.namespace, ing.metadata.name, change)
        except errors.NotFound:
            pass
        except errors.KybError as e:
            if self.log is not None:
                self.log.warning("cannot write ingress status", ingress=ing.metadata.name, error=str(e))
            self.changed.set()

    async def _start_plane(self, stop: asyncio.Event, retry_seconds: float) -> None:
        """Start the data plane; while its address cannot be bound, say so and try again
        (the rest of a `kyb up` keeps running)."""
        while not stop.is_set():
            try:
                await self.plane.start()
                return
            except OSError as e:
                if self.log is not None:
                    self.log.warning("ingress cannot listen; retrying", address=self.address, error=str(e))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), retry_seconds)

    async def run(self, stop: asyncio.Event, *, retry_seconds: float = 5.0) -> None:
        await self._start_plane(stop, retry_seconds)
        try:
            for inf in self.informers:
                await inf.start()
            for inf in self.informers:
                await inf.wait_synced(30)
            self.changed.set()
            stopping = asyncio.ensure_future(stop.wait())
            while not stop.is_set():
                changed = asyncio.ensure_future(self.changed.wait())
                await asyncio.wait({changed, stopping}, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
                if stop.is_set():
                    break
                self.changed.clear()
                await self.sync()
            stopping.cancel()
        finally:
            for inf in self.informers:
                await inf.stop()
            with contextlib.suppress(Exception):
                await self.plane.close()


async def run(ctx: ServiceContext, stop: asyncio.Event) -> None:
    opts = ctx.options
    address = str(opts.get("ingress_address", DEFAULT_ADDRESS))
    http_port, https_port = ports(opts, address)
    kind = str(opts.get("ingress_plane", "builtin"))

    def on_error(what: str, e: Exception) -> None:
        ctx.log.warning("ingress data plane problem", what=what, error=str(e))

    plane = make_plane(kind, address, http_port, https_port, on_error)
    controller = IngressController(
        ctx.nc, ctx.store, plane, address=address,
        class_name=str(opts.get("ingress_class", DEFAULT_CLASS)),
        watch_without_class=str(opts.get("ingress_watch_without_class", "false")).lower() in ("1", "true", "yes"),
        log=ctx.log,
    )
    ctx.log.info("ingress started", plane=kind, address=address, http_port=http_port, https_port=https_port)
    await controller.run(stop)
