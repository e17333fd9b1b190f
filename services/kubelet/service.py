"""The kubelet service: registers this machine as a Node, keeps its Lease and status fresh,
and runs the pods bound to it through a container runtime.

``kyb serve kubelet --node-name N --runtime docker|process|auto``. Options (ctx.options):
every one is read once into :class:`KubeletOptions`. :class:`Kubelet` runs the node: pods are
synced by a controller keyed by pod key (:class:`services.kubelet.sync.PodWorker`); ConfigMap
and Secret changes re-enqueue the pods on this node that refer to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
from collections.abc import Callable
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
from services.kubelet.metrics import publish_metrics
from services.kubelet.node import (
    LEASE_NAMESPACE,
    NodeSettings,
    differs_beyond_heartbeat,
    lease_object,
    node_object,
    parse_taint,
)
from services.kubelet.nodeapi import serve_node_api
from services.kubelet.nodeclient import NodeApi, NodeSecrets, NodeTokens
from services.kubelet.podnet import CniPodNetwork
from services.kubelet.probes import ProbeManager
from services.kubelet.reconcile import Settings
from services.kubelet.runtime.base import ContainerRuntime
from services.kubelet.startplan import unsafe_sysctls_problem
from services.kubelet.sync import PodWorker
from services.kubelet.volumes import DEFAULT_SECRET_DIR, VolumeManager

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
    secret_dir: str | None = None  # tmpfs directory of secret volumes (default: the volume manager's, per node)
    node_restricted: bool = False  # writes go through the api's node-restricted verbs; Secrets are asked for
    metrics_interval: float = 15.0  # seconds between resource-usage samples (kubectl top)
    allowed_unsafe_sysctls: tuple[str, ...] = ()  # sysctls pods may set beyond the safe ones ("net.core.*")

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
            cni_ip_masq=opts_bool(options.get("cni_ip_masq", "")),
            cni_host_netns=options.get("cni_host_netns"),
            pod_cidr_wait=num("pod_cidr_wait", 1.0),
            cluster_dns=_dirs(options["cluster_dns"]) if "cluster_dns" in options else (CLUSTER_DNS,),
            cluster_domain=str(options.get("cluster_domain") or "cluster.local"),
            resolv_conf=str(options.get("resolv_conf") or "/etc/resolv.conf"),
            secret_dir=options.get("secret_dir"),
            node_restricted=opts_bool(options.get("node_restricted")),
            metrics_interval=num("metrics_interval", 15.0) or 15.0,
            allowed_unsafe_sysctls=_list(options.get("allowed_unsafe_sysctls")),
        )


def _list(value: Any) -> tuple[str, ...]:
    """A comma-separated string or a list, as a tuple of its non-empty items."""
    if not value:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    return tuple(str(v).strip() for v in items if str(v).strip())


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


class Kubelet:
    """One node's kubelet: registers the Node and keeps its Lease, waits for its podCIDR on the
    cni network, then syncs the pods bound to it (a controller keyed by pod key driving
    :class:`PodWorker`) until ``stop`` is set."""

    def __init__(self, ctx: ServiceContext, opts: KubeletOptions) -> None:
        if opts.network not in ("loopback", "cni"):
            raise errors.Invalid(f"unknown network {opts.network!r}: expected loopback or cni")
        self.ctx = ctx
        self.opts = opts
        self.node_name = opts.node_name
        self.log = ctx.log.bind(node=opts.node_name)
        self.state_dir = Path(opts.state_dir or Path(tempfile.gettempdir()) / f"kyb-kubelet-{opts.node_name}")
        if opts.network == "cni":
            self.cidr = opts.pod_cidr or ""  # else the one nodeipam gives the Node
        else:
            self.cidr = opts.pod_cidr or default_cidr(opts.node_name)
            check_cidr(self.cidr)
        self.taints = tuple(parse_taint(t) for t in opts.taints)
        if problem := unsafe_sysctls_problem(opts.allowed_unsafe_sysctls):
            raise ValueError(f"allowed_unsafe_sysctls: {problem}")
        self.pods = Informer(ctx.nc, "Pod", indexers={"node": by_node_name})
        self.configmaps = Informer(ctx.nc, "ConfigMap")
        self.node_api: NodeApi | None = None
        self.secrets: Any = Informer(ctx.nc, "Secret")
        if opts.node_restricted:
            self.node_api = NodeApi(ctx.nc, opts.node_name)
            self.secrets = NodeSecrets(self.node_api)  # no read right on the Secrets bucket: ask the api
        self.controller: Controller | None = None
        self.worker: PodWorker | None = None
        self.probes: ProbeManager | None = None
        self.volumes: VolumeManager | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    @property
    def informers(self) -> tuple[Any, ...]:
        return self.pods, self.configmaps, self.secrets

    def _my_pods(self) -> list[Any]:
        return self.pods.by_index("node", self.node_name)

    async def run(self, stop: asyncio.Event) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        runtime, runtime_version = await make_runtime(self.opts, self.state_dir, self.node_name)
        try:
            await self._run(runtime, runtime_version, stop)
        finally:
            stop.set()
            await self._close(runtime)

    async def _run(self, runtime: ContainerRuntime, runtime_version: str, stop: asyncio.Event) -> None:
        ctx, opts = self.ctx, self.opts
        settings = self._node_settings(runtime_version)
        self.probes = ProbeManager(runtime)
        await register_node(ctx, settings)
        # Heartbeats first: a kubelet still waiting for its podCIDR or its caches is alive, and
        # its Lease says so (else the node lifecycle controller would call it lost meanwhile).
        # The first renewal is made here, so the Lease exists as soon as the Node does.
        if not opts.node_restricted:  # else the api made it; a kubelet may not
            with contextlib.suppress(errors.KybError):
                await ensure_lease_namespace(ctx)
        with contextlib.suppress(errors.KybError):
            await renew_lease(ctx, settings.name)
        self._spawn(node_loop(ctx, settings, opts, stop), "kubelet-node")
        network: CniPodNetwork | None = None
        if opts.network == "cni":
            self.cidr = await wait_for_pod_cidr(ctx, self.node_name, opts, stop)
            if not self.cidr:
                return  # stopped while waiting
            network = cni_network(opts, self.state_dir, self.node_name, self.cidr)
            config = network.ensure_config(default_network(opts, self.node_name, self.cidr))
            self.log.info("pod network", network="cni", config=config)
        for inf in self.informers:
            await inf.start()
        for inf in self.informers:
            await inf.wait_synced(30)
        self.worker = worker = self._pod_worker(runtime, settings, network)
        self.controller = Controller(
            "kubelet",
            worker.reconcile,
            workers=opts.workers,
            resync_seconds=60,
            keys=lambda: [f"{p.metadata.namespace}.{p.metadata.name}" for p in self._my_pods()],
            max_backoff=30.0,
            # A stopping kubelet leaves containers running (the next one adopts them), so
            # it does not wait out graceful terminations in flight.
            shutdown_timeout=3.0,
        )
        self.pods.add_handler(self._on_pod)
        self.configmaps.add_handler(self._on_config("ConfigMap"))
        self.secrets.add_handler(self._on_config("Secret"))
        with contextlib.suppress(Exception):
            await worker.housekeeping()
        self._spawn(housekeeping_loop(worker, stop), "kubelet-housekeeping")
        self._spawn(self._serve_node_api(runtime, worker, stop), "kubelet-nodeapi")
        self._spawn(publish_metrics(ctx.nc, self.node_name, runtime, self._my_pods, stop, opts.metrics_interval),
                    "kubelet-metrics")
        self.log.info("kubelet started", runtime=runtime.name, pod_cidr=self.cidr, network=opts.network)
        await self.controller.run(stop)

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    def _node_settings(self, runtime_version: str) -> NodeSettings:
        opts = self.opts
        return NodeSettings(
            name=self.node_name,
            cpu=opts.cpu or str(os.cpu_count() or 1),
            memory=opts.memory or host_memory(),
            pods=opts.pods,
            labels=opts.labels,
            taints=self.taints,
            pod_cidr=self.cidr,
            hostname=socket.gethostname(),
            runtime_version=runtime_version,
            internal_ip=opts.node_ip,
        )

    def _pod_worker(self, runtime: ContainerRuntime, settings: NodeSettings,
                    network: CniPodNetwork | None) -> PodWorker:
        opts = self.opts
        allocator = PodIPAllocator(self.cidr if opts.network == "loopback" else default_cidr(self.node_name))
        for p in self._my_pods():
            if p.status.podIP and p.metadata.uid:
                allocator.reserve(p.metadata.uid, p.status.podIP)
        secret_dir = Path(opts.secret_dir) if opts.secret_dir else DEFAULT_SECRET_DIR / self.node_name
        self.volumes = VolumeManager(self.ctx.store, self.configmaps, self.secrets, self.state_dir / "volumes",
                                     secret_dir, allocatable={"cpu": settings.cpu, "memory": settings.memory},
                                     tokens=NodeTokens(self.node_api or NodeApi(self.ctx.nc, self.node_name)))
        etc_files = None
        if network is not None:
            etc_files = PodEtcFiles(self.state_dir / "etc", cluster_dns=opts.cluster_dns,
                                    cluster_domain=opts.cluster_domain, host_resolv_conf=opts.resolv_conf)
        return PodWorker(
            node_name=self.node_name,
            store=self.ctx.store,
            runtime=runtime,
            pods=self.pods,
            configmaps=self.configmaps,
            secrets=self.secrets,
            allocator=allocator,
            volumes=self.volumes,
            probes=self.probes,
            settings=Settings(
                base_backoff=opts.crash_backoff,
                max_backoff=opts.max_backoff,
                reset_after=opts.backoff_reset,
                relist=opts.relist,
            ),
            tracer=self.ctx.tracer,
            allocatable={"cpu": settings.cpu, "memory": settings.memory},
            enqueue=self._enqueue,
            node_api=self.node_api,
            network=network,
            host_ip=opts.node_ip,
            etc_files=etc_files,
            seccomp_dir=str(self.state_dir / "seccomp"),  # Localhost seccomp profiles, as <kubelet root>/seccomp
            allowed_unsafe_sysctls=opts.allowed_unsafe_sysctls,
        )

    def _enqueue(self, key: str) -> None:
        if self.controller is not None:
            self.controller.enqueue(key)

    def _on_pod(self, event: str, new: Any, old: Any, headers: dict[str, str]) -> None:
        if self.controller is None:
            return
        if new is not None and old is not None and not spec_or_meta_changed(old, new):
            return  # a status write (most often our own): nothing to act on
        for obj in (new, old):
            if isinstance(obj, Pod) and obj.spec.nodeName == self.node_name:
                self.controller.enqueue_from_headers(f"{obj.metadata.namespace}.{obj.metadata.name}", headers)
                return

    def _on_config(self, kind: str) -> Callable[[str, Any, Any, dict[str, str]], None]:
        """A ConfigMap or Secret changed: re-sync the pods here that refer to it."""

        def handler(event: str, new: Any, old: Any, headers: dict[str, str]) -> None:
            obj = new or old
            if obj is None or self.controller is None:
                return
            ns, name = obj.metadata.namespace, obj.metadata.name
            for p in self._my_pods():
                if p.metadata.namespace != ns:
                    continue
                cms, secs = referenced(p)
                if name in (cms if kind == "ConfigMap" else secs):
                    self.controller.enqueue_from_headers(f"{ns}.{p.metadata.name}", headers)

        return handler

    async def _serve_node_api(self, runtime: ContainerRuntime, worker: PodWorker, stop: asyncio.Event) -> None:
        """Logs, exec, attach and port forwarding of this node's pods, on kyb.node.<node>.*."""
        handle = await serve_node_api(self.ctx.nc, self.node_name, runtime, worker.lookup, worker.pod_address)
        try:
            await stop.wait()
        finally:
            await handle.stop()

    async def _close(self, runtime: ContainerRuntime) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for inf in self.informers:
            await inf.stop()
        for part in (self.probes, self.worker, self.volumes):
            if part is not None:
                with contextlib.suppress(Exception):
                    await part.close()
        await runtime.close()


async def run(ctx: ServiceContext, stop: asyncio.Event) -> None:
    await Kubelet(ctx, KubeletOptions.from_dict(ctx.options)).run(stop)


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
    if not opts.node_restricted:  # else the api made it; a kubelet may not
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
