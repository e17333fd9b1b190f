"""Run services: one alone (`kyb serve NAME`) or all of them in one process (`kyb up`).

Every service module exposes ``async def run(ctx: ServiceContext, stop: asyncio.Event)``;
it returns once ``stop`` is set and its work is wound down. Each service gets its own NATS
connection, so one slow consumer cannot stall another.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from kyb import errors
from kyb.client import connect
from kyb.store import Store

# name -> module; the order is the start order of `kyb up`.
SERVICES: dict[str, str] = {
    "api": "services.api.service",
    "scheduler": "services.scheduler.service",
    "replication": "services.replication.service",
    "deployment": "services.deployment.service",
    "job": "services.job.service",
    "cronjob": "services.cronjob.service",
    "daemonset": "services.daemonset.service",
    "statefulset": "services.statefulset.service",
    "disruption": "services.disruption.service",
    "clusterroleaggregation": "services.clusterroleaggregation.service",
    "resourcequota": "services.resourcequota.service",
    "gc": "services.gc.service",
    "endpoints": "services.endpoints.service",
    "nodelifecycle": "services.nodelifecycle.service",
    "nodeipam": "services.nodeipam.service",
    "netagent": "services.netagent.service",
    "netpol": "services.netpol.service",
    "hpa": "services.hpa.service",
    "volumebinder": "services.volumebinder.service",
    "ingress": "services.ingress.service",
    "proxy": "services.proxy.service",
    "dns": "services.dns.service",
    "apiserver": "services.apiserver.service",
    "kubelet": "services.kubelet.service",
}


def available_services() -> list[str]:
    """The services whose package is present in this installation."""
    out = []
    for name, module in SERVICES.items():
        with contextlib.suppress(ModuleNotFoundError):
            if importlib.util.find_spec(module) is not None:
                out.append(name)
    return out


@dataclass
class ServiceContext:
    name: str
    nc: NATS
    js: JetStreamContext
    store: Store
    options: dict[str, Any] = field(default_factory=dict)
    log: Any = None
    tracer: Any = None

    @property
    def identity(self) -> str:
        return f"{socket.gethostname()}-{os.getpid()}-{self.name}"

    def local_nodes(self) -> tuple[str, ...]:
        """The nodes whose pods live in this agent's network namespace: option ``node_names``
        (a list, or names separated by commas; ``kyb up --nodes N`` gives all N), else
        ``node_name``, else this host's name. Lower case, in order, once each."""
        value = self.options.get("node_names")
        items = value.split(",") if isinstance(value, str) else list(value or ())
        names = tuple(dict.fromkeys(str(n).strip().lower() for n in items if str(n).strip()))
        return names or (str(self.options.get("node_name") or socket.gethostname()).lower(),)


async def context_for(name: str, nats_url: str, options: dict[str, Any] | None = None) -> ServiceContext:
    from kyb import auth, telemetry

    identity = auth.for_service(name, options or {})
    nc = await connect(nats_url, name=f"kyb-{name}", **identity.nats_options())
    js = nc.jetstream(timeout=10)
    if identity.configured and name == "kubelet":
        # With credentials, a kubelet writes its pods through the api's node-restricted verbs.
        options = {"node_restricted": True, **(options or {})}
    store = Store(js, replicas=int((options or {}).get("replicas", 1)))
    return ServiceContext(
        name=name,
        nc=nc,
        js=js,
        store=store,
        options=dict(options or {}),
        log=structlog.get_logger(name).bind(service=name),
        tracer=telemetry.tracer(f"kyb.{name}"),
    )


async def run_services(
    names: Iterable[str],
    nats_url: str,
    options: dict[str, Any] | None,
    stop: asyncio.Event,
) -> None:
    """Run the named services until ``stop`` is set. Several in one process are supervised
    (a crashed one is restarted); a single service's crash is raised."""
    from kyb import telemetry
    from kyb.log import configure_logging

    names = list(names)
    if (options or {}).get("configure_logging", True):
        level = str((options or {}).get("log_level") or os.environ.get("KYB_LOG_LEVEL", "INFO")).upper()
        configure_logging(names[0] if len(names) == 1 else "kybernetes", level=level)
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise errors.BadRequest(f"unknown service(s): {', '.join(unknown)}; known: {', '.join(SERVICES)}")
    provider = telemetry.init_telemetry(names[0] if len(names) == 1 else "kybernetes")
    from kyb import secretbox

    secretbox.configure_from(options or {})  # Secrets encrypted at rest when a key is named
    from kyb import auth

    if (options or {}).get("auth_dir") and not auth.default().configured:
        auth.set_default(auth.for_service(names[0], options or {}))  # helper connections of the process
    first = await context_for("bootstrap", nats_url, options)
    try:
        await first.store.ensure_buckets()
        if (options or {}).get("cluster_defaults_file"):
            from kyb import clusterdefaults

            await clusterdefaults.ensure(first.store, Path(options["cluster_defaults_file"]),
                                         frozenset((options or {}).get("disable_defaults") or ()))
    finally:
        await first.nc.close()
    contexts: list[ServiceContext] = []
    tasks: list[asyncio.Task] = []
    ops = _Operations(provider, options or {})
    try:
        await ops.start(names, nats_url)
        for name in names:
            module = importlib.import_module(SERVICES[name])
            for instance in _instances(name, options or {}):
                ctx = await context_for(name, nats_url, instance)
                contexts.append(ctx)
                supervised = len(names) > 1 or bool((options or {}).get("supervise"))
                tasks.append(asyncio.create_task(_supervise(module, ctx, stop, supervised), name=f"service-{name}"))
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        crashed = [t for t in done if t is not stopper and t.exception() is not None]
        stop.set()
        # Give every service a bounded time to wind down.
        pending = [t for t in tasks if not t.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=float((options or {}).get("shutdown_timeout", 20)))
            await _cancel_bounded(still)
        stopper.cancel()
        if crashed:
            raise crashed[0].exception()
    finally:
        await _cancel_bounded([t for t in tasks if not t.done()])
        for ctx in contexts:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ctx.nc.drain(), 5)
        await ops.stop()


async def _cancel_bounded(tasks: Iterable[asyncio.Task], timeout: float = 5.0) -> None:
    """Cancel ``tasks`` and wait for them a bounded time: a task whose cancellation a library
    swallowed (asyncio.wait_for on Python 3.11) is cancelled again, then left behind, so a
    stopping process never hangs on it."""
    tasks = [t for t in tasks if not t.done()]
    deadline = asyncio.get_running_loop().time() + timeout
    while tasks:
        for t in tasks:
            t.cancel()
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            structlog.get_logger("kyb.serve").warning(
                "tasks did not stop when cancelled", tasks=[t.get_name() for t in tasks]
            )
            return
        _, pending = await asyncio.wait(tasks, timeout=min(0.5, left))
        tasks = list(pending)


async def _supervise(module: Any, ctx: ServiceContext, stop: asyncio.Event, restart: bool) -> None:
    """Run one service; when several share a process (`kyb up`), a crash of one is logged and
    that service alone is restarted with back-off (1 s doubling to 30 s), as systemd would
    restart its unit. Alone (`kyb serve`), a crash ends the process with the error."""
    delay = 1.0
    while True:
        try:
            await module.run(ctx, stop)
            return
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if not restart or stop.is_set():
                raise
            log = ctx.log or structlog.get_logger(ctx.name)
            log.error("service crashed; restarting", service=ctx.name, error=repr(e), restart_in=delay)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            delay = min(delay * 2, 30.0)


def _instances(name: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    """The option sets ``name`` runs with: one per entry of ``options["instances"][name]``
    (e.g. three kubelets of `kyb up --nodes 3`), each merged over the common options."""
    per = (options.get("instances") or {}).get(name)
    if not per:
        return [options]
    return [{**options, **one} for one in per]


class _Operations:
    """What a service process exposes for operating it: the trace stream exporter (option
    ``traces``, default on; KYB_TRACES=0 turns it off), the Prometheus endpoint (option
    ``metrics_port``; ``metrics_host`` default 127.0.0.1) and, with kubelets in the process,
    their pod and container counts."""

    def __init__(self, provider: Any, options: dict[str, Any]) -> None:
        self.provider = provider
        self.options = options
        self.nc: NATS | None = None
        self.server: Any = None
        self.informer: Any = None
        self.unregister: Any = None

    async def start(self, names: list[str], nats_url: str) -> None:
        from kyb import auth, metrics, tracestore

        # the process's own connection, as the runner's bootstrap does it (the system identity
        # when kyb up wrote credentials; else whatever identity the process was given)
        identity = auth.for_service("bootstrap", self.options).nats_options()
        traces = self.options.get("traces", os.environ.get("KYB_TRACES", "1") != "0")
        if str(traces).lower() not in ("0", "false", "no", "off"):
            self.nc = await connect(nats_url, name="kyb-traces", **identity)
            await tracestore.ensure_stream(self.nc.jetstream(), replicas=int(self.options.get("replicas", 1)))
            tracestore.bind(self.provider, self.nc)
        port = self.options.get("metrics_port")
        if port is None:
            return
        self.server = metrics.serve(int(port), host=str(self.options.get("metrics_host") or "127.0.0.1"))
        if "kubelet" in names:
            from kyb.informer import Informer

            nodes = frozenset(
                str(o.get("node_name") or socket.gethostname()).lower() for o in _instances("kubelet", self.options)
            )
            self.nc = self.nc or await connect(nats_url, name="kyb-metrics", **identity)
            self.informer = Informer(self.nc, "Pod")
            await self.informer.start()
            self.unregister = metrics.POD_COUNTS.add(self.informer.list, nodes)

    async def stop(self) -> None:
        from kyb import tracestore

        if self.unregister is not None:
            self.unregister()
        if self.informer is not None:
            await self.informer.stop()
        if self.server is not None:
            self.server.close()
        if self.nc is not None:
            await tracestore.unbind(self.provider, self.nc)
            with contextlib.suppress(Exception):
                await self.nc.drain()
