"""The kubelet service: registers this machine as a Node, keeps its Lease and status fresh,
and runs the pods bound to it through a container runtime.

``kyb serve kubelet --node-name N --runtime docker|process|auto``. Options (ctx.options):
see :class:`KubeletOptions`. Pods are synced by a controller keyed by pod key
(:class:`services.kubelet.sync.PodWorker`); ConfigMap and Secret changes re-enqueue the pods
on this node that refer to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import socket
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from kyb import errors
from kyb.controller import Controller
from kyb.informer import Informer, by_node_name
from kyb.serve import ServiceContext
from schemas.coordination import Lease
from schemas.core import Namespace, Node
from schemas.meta import ObjectMeta
from schemas.pod import Pod, PodStatus
from services.kubelet.cni.defaults import DefaultNetwork, bridge_name
from services.kubelet.cni.plugin import CniRunner
from services.kubelet.cni.spec import DEFAULT_CONF_DIR, DEFAULT_PLUGIN_DIRS
from services.kubelet.env import referenced
from services.kubelet.etcfiles import PodEtcFiles
from services.kubelet.ipam import PodIPAllocator, check_cidr, default_cidr
from services.kubelet.node import (
    LEASE_NAMESPACE,
    NodeSettings,
    differs_beyond_heartbeat,
    lease_object,
    node_object,
    parse_taint,
)
from services.kubelet.podnet import CniPodNetwork
from services.kubelet.reconcile import Settings
from services.kubelet.runtime.base import ContainerRuntime
from services.kubelet.sync import HostDirVolumes, PodWorker

CLUSTER_DNS = "10.96.0.10"  # the tenth address of the default service CIDR, as kubeadm picks it


@dataclass(frozen=True)
class KubeletOptions:
    node_name: str  # the Node's name (default: the hostname)
    runtime: str = "auto"  # docker | process | auto (docker when an engine answers)
    cpu: str | None = None  # capacity cpu (default: the host's cpu count)
    memory: str | None = None  # capacity memory (default: the host's memory)
    pods: str = "110"  # capacity pods
    labels: dict[str, str] = field(default_factory=dict)  # extra node labels
    taints: tuple[str, ...] = ()  # "key=value:Effect"
    pod_cidr: str | None = None  # a /16 inside 127.0.0.0/8 (default: from the node name)
    state_dir: str | None = None  # where the process runtime and volumes keep their files
    sandbox_image: str | None = None  # pause image of the docker runtime
    crash_backoff: float = 10.0  # first restart back-off, seconds
    max_backoff: float = 300.0  # back-off cap, seconds
    backoff_reset: float = 600.0  # running this long resets a container's back-off
    relist: float = 1.0  # how often pods with live containers are looked at
    lease_interval: float = 10.0  # Lease renewal period
    status_interval: float = 40.0  # node status period when nothing changed
    workers: int = 8  # pods synced at once
    network: str = "loopback"  # loopback (127.x pod IPs, no root needed) | cni (see README "Network")
    node_ip: str = "127.0.0.1"  # the Node's InternalIP (what other nodes route this node's pods through)
    cni_conf_dir: str = DEFAULT_CONF_DIR  # network configuration directory (first file by name)
    cni_bin_dirs: tuple[str, ...] = DEFAULT_PLUGIN_DIRS  # where plugins are looked for
    cni_cache_dir: str | None = None  # cached ADD results (default: <state_dir>/cni)
    cni_ipam_dir: str | None = None  # host-local's store in the default config (default: its own)
    cni_ip_masq: bool = False  # the default bridge masquerades pod traffic leaving the node's range
    cni_host_netns: str | None = None  # the node's namespace if not ours: CNI plugins (and process-runtime hostNetwork pods) run there
    pod_cidr_wait: float = 1.0  # how often a cni kubelet looks for the podCIDR nodeipam gives its Node
    cluster_dns: tuple[str, ...] = (CLUSTER_DNS,)  # network cni: the nameserver of ClusterFirst pods ("" for none)
    cluster_domain: str = "cluster.local"  # network cni: the search domains' suffix
    resolv_conf: str = "/etc/resolv.conf"  # network cni: the node's resolvers (dnsPolicy Default)

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> KubeletOptions:
        labels = options.get("labels") or {}
        if isinstance(labels, list | tuple):
            labels = dict(str(item).split("=", 1) for item in labels)
        taints = options.get("taints") or ()
        if isinstance(taints, str):
            taints = tuple(t for t in taints.split(",") if t)

        def num(name: str, default: float) -> float:
            value = options.get(name)
            return float(value) if value is not None else default

        return cls(
            node_name=str(options.get("node_name") or socket.gethostname()).lower(),
            runtime=str(options.get("runtime") or "auto"),
            cpu=str(options["cpu"]) if options.get("cpu") else None,
            memory=str(options["memory"]) if options.get("memory") else None,
            pods=str(options.get("pods") or "110"),
            labels=dict(labels),
            taints=tuple(taints),
            pod_cidr=options.get("pod_cidr"),
            state_dir=options.get("state_dir"),
            sandbox_image=options.get("sandbox_image"),
            crash_backoff=num("crash_backoff", 10.0),
            max_backoff=num("max_backoff", 300.0),
            backoff_reset=num("backoff_reset", 600.0),
            relist=num("relist", 1.0),
            lease_interval=num("lease_interval", 10.0),
            status_interval=num("status_interval", 40.0),
            workers=int(options.get("workers") or 8),
            network=str(options.get("network") or "loopback"),
            node_ip=str(options.get("node_ip") or "127.0.0.1"),
            cni_conf_dir=str(options.get("cni_conf_dir") or DEFAULT_CONF_DIR),
            cni_bin_dirs=_dirs(options.get("cni_bin_dirs")) or DEFAULT_PLUGIN_DIRS,
            cni_cache_dir=options.get("cni_cache_dir"),
            cni_ipam_dir=options.get("cni_ipam_dir"),
            cni_ip_masq=str(options.get("cni_ip_masq", "")).lower() in ("1", "true", "yes", "on"),
            cni_host_netns=options.get("cni_host_netns"),
            pod_cidr_wait=num("pod_cidr_wait", 1.0),
            cluster_dns=_dirs(options["cluster_dns"]) if "cluster_dns" in options else (CLUSTER_DNS,),
            cluster_domain=str(options.get("cluster_domain") or "cluster.local"),
            resolv_conf=str(options.get("resolv_conf") or "/etc/resolv.conf"),
        )


def _dirs(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    if isinstance(value, str):
        return tuple(d for d in value.replace(",", ":").split(":") if d)
    return tuple(str(d) for d in value)


def host_memory() -> str:
    try:
        return f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 1024}Ki"
    except (ValueError, OSError):
        return "0"


async def make_runtime(
    opts: KubeletOptions, state_dir: Path, node_name: str | None = None
) -> tuple[ContainerRuntime, str]:
    """The runtime the options ask for, and its version string for nodeInfo."""
    choice = opts.runtime
    if choice not in ("docker", "process", "auto"):
        raise errors.Invalid(f"unknown runtime {choice!r}: expected docker, process or auto")
    if choice in ("docker", "auto"):
        try:
            import docker

            def probe() -> str:
                client = docker.from_env(timeout=5)
                try:
                    return str(client.version().get("Version", "unknown"))
                finally:
                    client.close()

            version = await asyncio.to_thread(probe)
        except Exception as e:
            if choice == "docker":
                raise errors.Unreachable(f"runtime docker: no Docker engine answers: {e}") from e
        else:
            from services.kubelet.runtime.docker import PAUSE_IMAGE, DockerRuntime

            return (
                DockerRuntime(pause_image=opts.sandbox_image or PAUSE_IMAGE, node_name=node_name),
                f"docker://{version}",
            )
    import platform

    from services.kubelet.runtime.process import ProcessRuntime

    return (ProcessRuntime(state_dir / "process", host_netns=opts.cni_host_netns),
            f"process://{platform.python_version()}")


def _volume_manager(ctx: ServiceContext, node_name: str, configmaps: Informer, secrets: Informer, base: Path) -> Any:
    """The volume manager of services/kubelet/volumes.py, or the host-directory fallback."""
    try:
        module = importlib.import_module("services.kubelet.volumes")
    except ModuleNotFoundError:
        return HostDirVolumes(base)
    secret_dir = Path(ctx.options.get("secret_dir") or module.DEFAULT_SECRET_DIR / node_name)
    return module.VolumeManager(ctx.store, configmaps, secrets, base, secret_dir)


async def run(ctx: ServiceContext, stop: asyncio.Event) -> None:
    opts = KubeletOptions.from_dict(ctx.options)
    node_name = opts.node_name
    log = ctx.log.bind(node=node_name)
    state_dir = Path(opts.state_dir or Path(tempfile.gettempdir()) / f"kyb-kubelet-{node_name}")
    state_dir.mkdir(parents=True, exist_ok=True)
    if opts.network not in ("loopback", "cni"):
        raise errors.Invalid(f"unknown network {opts.network!r}: expected loopback or cni")
    if opts.network == "cni":
        cidr = opts.pod_cidr or ""  # else the one nodeipam gives the Node
    else:
        cidr = opts.pod_cidr or default_cidr(node_name)
        check_cidr(cidr)
    taints = tuple(parse_taint(t) for t in opts.taints)
    runtime, runtime_version = await make_runtime(opts, state_dir, node_name)
    settings = NodeSettings(
        name=node_name,
        cpu=opts.cpu or str(os.cpu_count() or 1),
        memory=opts.memory or host_memory(),
        pods=opts.pods,
        labels=opts.labels,
        taints=taints,
        pod_cidr=cidr,
        hostname=socket.gethostname(),
        runtime_version=runtime_version,
        internal_ip=opts.node_ip,
    )
    pods = Informer(ctx.nc, "Pod", indexers={"node": by_node_name})
    configmaps = Informer(ctx.nc, "ConfigMap")
    node_api = None
    secrets: Any = Informer(ctx.nc, "Secret")
    if opts_bool(ctx.options.get("node_restricted")):
        from services.kubelet.nodeclient import NodeApi, NodeSecrets

        node_api = NodeApi(ctx.nc, node_name)
        secrets = NodeSecrets(node_api)  # no read right on the Secrets bucket: ask the api
    informers = [pods, configmaps, secrets]
    probes = None
    volumes: Any = None
    try:
        probes = importlib.import_module("services.kubelet.probes").ProbeManager(runtime)
    except ModuleNotFoundError:
        probes = None
    controller: Controller | None = None
    worker: PodWorker | None = None
    tasks: list[asyncio.Task] = []
    try:
        await register_node(ctx, settings)
        # Heartbeats first: a kubelet still waiting for its podCIDR or its caches is alive, and
        # its Lease says so (else the node lifecycle controller would call it lost meanwhile).
        # The first renewal is made here, so the Lease exists as soon as the Node does.
        if not opts_bool(ctx.options.get("node_restricted")):  # else the api made it; a kubelet may not
            with contextlib.suppress(errors.KybError):
                await ensure_lease_namespace(ctx)
        with contextlib.suppress(errors.KybError):
            await renew_lease(ctx, settings.name)
        tasks.append(asyncio.create_task(node_loop(ctx, settings, opts, stop), name="kubelet-node"))
        network: CniPodNetwork | None = None
        if opts.network == "cni":
            cidr = await wait_for_pod_cidr(ctx, node_name, opts, stop)
            if not cidr:
                return  # stopped while waiting
            network = cni_network(opts, state_dir, node_name, cidr)
            log.info("pod network", network="cni", config=network.ensure_config(default_network(opts, node_name, cidr)))
        for inf in informers:
            await inf.start()
        for inf in informers:
            await inf.wait_synced(30)
        allocator = PodIPAllocator(cidr if opts.network == "loopback" else default_cidr(node_name))
        for p in pods.by_index("node", node_name):
            if p.status.podIP and p.metadata.uid:
                allocator.reserve(p.metadata.uid, p.status.podIP)
        def enqueue(key: str) -> None:
            if controller is not None:
                controller.enqueue(key)

        volumes = _volume_manager(ctx, node_name, configmaps, secrets, state_dir / "volumes")
        worker = PodWorker(
            node_name=node_name,
            store=ctx.store,
            runtime=runtime,
            pods=pods,
            configmaps=configmaps,
            secrets=secrets,
            allocator=allocator,
            volumes=volumes,
            probes=probes,
            settings=Settings(
                base_backoff=opts.crash_backoff,
                max_backoff=opts.max_backoff,
                reset_after=opts.backoff_reset,
                relist=opts.relist,
            ),
            tracer=ctx.tracer,
            allocatable={"cpu": settings.cpu, "memory": settings.memory},
            enqueue=enqueue,
            node_api=node_api,
            network=network,
            host_ip=opts.node_ip,
            etc_files=PodEtcFiles(state_dir / "etc", cluster_dns=opts.cluster_dns, cluster_domain=opts.cluster_domain,
                                  host_resolv_conf=opts.resolv_conf) if network is not None else None,
        )
        controller = Controller(
            "kubelet",
            worker.reconcile,
            workers=opts.workers,
            resync_seconds=60,
            keys=lambda: [f"{p.metadata.namespace}.{p.metadata.name}" for p in pods.by_index("node", node_name)],
            max_backoff=30.0,
            # A stopping kubelet leaves containers running (the next one adopts them), so
            # it does not wait out graceful terminations in flight.
            shutdown_timeout=3.0,
        )
        ctrl = controller

        def on_pod(event: str, new: Any, old: Any, headers: dict[str, str]) -> None:
            if new is not None and old is not None and not spec_or_meta_changed(old, new):
                return  # a status write (most often our own): nothing to act on
            for obj in (new, old):
                if isinstance(obj, Pod) and obj.spec.nodeName == node_name:
                    ctrl.enqueue_from_headers(f"{obj.metadata.namespace}.{obj.metadata.name}", headers)
                    return

        def on_config(kind: str) -> Any:
            def handler(event: str, new: Any, old: Any, headers: dict[str, str]) -> None:
                obj = new or old
                if obj is None:
                    return
                ns, name = obj.metadata.namespace, obj.metadata.name
                for p in pods.by_index("node", node_name):
                    if p.metadata.namespace != ns:
                        continue
                    cms, secs = referenced(p)
                    if name in (cms if kind == "ConfigMap" else secs):
                        ctrl.enqueue_from_headers(f"{ns}.{p.metadata.name}", headers)

            return handler

        pods.add_handler(on_pod)
        configmaps.add_handler(on_config("ConfigMap"))
        secrets.add_handler(on_config("Secret"))
        with contextlib.suppress(Exception):
            await worker.housekeeping()
        tasks.append(asyncio.create_task(housekeeping_loop(worker, stop), name="kubelet-housekeeping"))
        tasks.extend(await _seams(ctx, node_name, runtime, worker, pods, stop))
        log.info("kubelet started", runtime=runtime.name, pod_cidr=cidr, network=opts.network)
        await controller.run(stop)
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for inf in informers:
            await inf.stop()
        if probes is not None:
            with contextlib.suppress(Exception):
                await probes.close()
        if worker is not None:
            with contextlib.suppress(Exception):
                await worker.close()
        if volumes is not None and hasattr(volumes, "close"):
            with contextlib.suppress(Exception):
                await volumes.close()
        await runtime.close()


async def wait_for_pod_cidr(ctx: ServiceContext, node_name: str, opts: KubeletOptions, stop: asyncio.Event) -> str:
    """The Node's spec.podCIDR once it has one (given by nodeipam, or ``pod_cidr``); "" when stopped first."""
    logged = False
    while not stop.is_set():
        with contextlib.suppress(errors.NotFound):
            node = await ctx.store.get("Node", None, node_name)
            cidr = (node.spec.podCIDRs[0] if node.spec.podCIDRs else "") or node.spec.podCIDR
            if cidr:
                return str(cidr)
        if not logged:
            ctx.log.info("waiting for the Node's podCIDR (nodeipam gives it)", node=node_name)
            logged = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), opts.pod_cidr_wait)
    return ""


def default_network(opts: KubeletOptions, node_name: str, cidr: str) -> DefaultNetwork:
    return DefaultNetwork(pod_cidr=cidr, bridge=bridge_name(node_name), ipam_dir=opts.cni_ipam_dir,
                          ip_masq=opts.cni_ip_masq)


def cni_network(opts: KubeletOptions, state_dir: Path, node_name: str, cidr: str) -> CniPodNetwork:
    runner = CniRunner(opts.cni_conf_dir, opts.cni_bin_dirs, opts.cni_cache_dir or state_dir / "cni",
                       host_netns=opts.cni_host_netns)
    return CniPodNetwork(runner)


def spec_or_meta_changed(old: Pod, new: Pod) -> bool:
    """True unless only the status (and so the resourceVersion) differs."""

    def strip(p: Pod) -> bytes:
        meta = msgspec.structs.replace(p.metadata, resourceVersion=None)
        return msgspec.json.encode(msgspec.structs.replace(p, metadata=meta, status=PodStatus()))

    return strip(old) != strip(new)


async def _seams(
    ctx: ServiceContext, node_name: str, runtime: ContainerRuntime, worker: PodWorker, pods: Informer,
    stop: asyncio.Event,
) -> list[asyncio.Task]:
    """The node API (logs, exec) and the metrics publisher, when their modules are present."""
    tasks = []
    with contextlib.suppress(ModuleNotFoundError):
        nodeapi = importlib.import_module("services.kubelet.nodeapi")

        async def serve_api() -> None:
            handle = await nodeapi.serve_node_api(ctx.nc, node_name, runtime, worker.lookup, worker.pod_address)
            try:
                await stop.wait()
            finally:
                result = handle.stop()
                if asyncio.iscoroutine(result):
                    await result

        tasks.append(asyncio.create_task(serve_api(), name="kubelet-nodeapi"))
    with contextlib.suppress(ModuleNotFoundError):
        metrics = importlib.import_module("services.kubelet.metrics")
        interval = float(ctx.options.get("metrics_interval") or 15.0)
        tasks.append(asyncio.create_task(
            metrics.publish_metrics(ctx.nc, node_name, runtime, lambda: pods.by_index("node", node_name), stop,
                                    interval),
            name="kubelet-metrics"))
    return tasks


async def register_node(ctx: ServiceContext, settings: NodeSettings) -> Node:
    """Create the Node, or bring an existing one's status, labels, CIDR and taints up to date."""
    now = datetime.now(UTC)
    try:
        return await ctx.store.create(node_object(settings, None, now))
    except errors.AlreadyExists:
        pass

    def fn(current: Any) -> Any:
        return node_object(settings, current, datetime.now(UTC))

    return await ctx.store.mutate("Node", None, settings.name, fn)


async def ensure_lease_namespace(ctx: ServiceContext) -> None:
    with contextlib.suppress(errors.AlreadyExists):
        await ctx.store.create(Namespace(metadata=ObjectMeta(name=LEASE_NAMESPACE)))


async def renew_lease(ctx: ServiceContext, node_name: str) -> Lease:
    try:
        return await ctx.store.mutate(
            "Lease", LEASE_NAMESPACE, node_name, lambda cur: lease_object(node_name, cur, datetime.now(UTC))
        )
    except errors.NotFound:
        return await ctx.store.create(lease_object(node_name, None, datetime.now(UTC)))


async def node_loop(ctx: ServiceContext, settings: NodeSettings, opts: KubeletOptions, stop: asyncio.Event) -> None:
    """Renew the Lease every lease_interval; write the node status when it changed or every
    status_interval (nodeStatusUpdateFrequency)."""
    loop = asyncio.get_running_loop()
    last_status = loop.time()
    if not opts_bool(ctx.options.get("node_restricted")):  # else the api made it; a kubelet may not
        with contextlib.suppress(Exception):
            await ensure_lease_namespace(ctx)
    while not stop.is_set():
        try:
            await renew_lease(ctx, settings.name)
            due = loop.time() - last_status >= opts.status_interval

            def fn(current: Any, due: bool = due) -> Any:
                new = node_object(settings, current, datetime.now(UTC))
                if not due and not differs_beyond_heartbeat(current, new):
                    return None
                return new

            try:
                await ctx.store.mutate("Node", None, settings.name, fn)
            except errors.NotFound:
                await register_node(ctx, settings)  # deleted by someone: register again
            if due:
                last_status = loop.time()
        except (errors.KybError, OSError) as e:
            ctx.log.warning("node heartbeat failed", error=str(e))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), opts.lease_interval)


async def housekeeping_loop(worker: PodWorker, stop: asyncio.Event, every: float = 10.0) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        if stop.is_set():
            return
        try:
            await worker.housekeeping()
        except Exception as e:
            worker.log.warning("housekeeping failed", error=str(e))


def opts_bool(value: Any) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")
