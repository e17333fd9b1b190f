"""The pod worker: the thin shell that applies :func:`services.kubelet.reconcile.plan`.

For one pod key it re-reads the pod from the informer, lists the pod's containers from the
runtime, asks the planner what to do, starts and kills containers through the runtime (each
start in its own span, so the trace of the ``kyb apply`` that caused it reaches it), and
writes the status back with a compare-and-set ``mutate`` only when it changed. Pods being
deleted are stopped gracefully (preStop, SIGTERM, SIGKILL after the grace period) and only
then removed from the store; containers of pods that are gone or bound elsewhere are removed.

Lifecycle hooks: a container's postStart hook runs right after it started and holds the
pod's sync (the container stays Waiting/ContainerCreating) until it completes; a failed one
kills the container, which then restarts as its restartPolicy says. Every kill, whether a
deletion, a liveness failure or a pod past its activeDeadlineSeconds, runs the preStop hook
first, within the grace period. Kills go in :func:`~services.kubelet.reconcile.stop_waves`
order: app containers first, then sidecars one after another, the last started first.

Admission: a Pending pod the kubelet cannot run as asked (an AppArmor profile on a host without
AppArmor, a sysctl not allowed) is refused once, as Kubernetes' kubelet does: a Warning event and
Failed, "Pod was rejected: ..."; nothing of it is started. What a runtime cannot apply is said once
per pod in a Warning ``FieldsNotEffective``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec
import structlog
from opentelemetry.trace import Tracer

from kyb import errors
from kyb.informer import Informer
from kyb.store import Store
from schemas.core import ConfigMap, Secret
from schemas.pod import Container, LifecycleHandler, Pod, PodStatus, is_sidecar
from services.kubelet import startplan
from services.kubelet.cni.spec import CniError
from services.kubelet.env import ConfigError, command_line, container_env, referenced
from services.kubelet.etcfiles import PodEtcFiles
from services.kubelet.hooks import HookRunner
from services.kubelet.ipam import PodIPAllocator
from services.kubelet.podnet import CniPodNetwork
from services.kubelet.reconcile import (
    Event,
    Failure,
    Kill,
    Plan,
    PodMemory,
    ProbeView,
    Settings,
    Start,
    plan,
    status_differs,
    stop_waves,
    with_failure,
    with_resize_error,
)
from services.kubelet.runtime.base import (
    ContainerInfo,
    ContainerRuntime,
    Mount,
    SandboxNetns,
)
from services.kubelet.runtime.errors import ContainerRuntimeError, ImagePullError, RuntimeUnavailable

HOST_IP = "127.0.0.1"
SOURCE = "kubelet"
MAX_ROUNDS = 4  # plan/apply rounds in one sync (an init container that ends at once, ...)
HOOK_WATCH = 0.5  # seconds between checks that a running postStart hook is still wanted
APPARMOR_ENABLED = "/sys/module/apparmor/parameters/enabled"


def host_apparmor_enabled(path: str = APPARMOR_ENABLED) -> bool:
    """Whether this host enforces AppArmor profiles (runc's check: the module says Y)."""
    try:
        with open(path) as f:
            return f.read(1) == "Y"
    except OSError:
        return False


class Volumes(Protocol):
    """The volume manager seam (services/kubelet/volumes.py)."""

    async def prepare(self, pod: Pod) -> dict[str, str]: ...

    def mounts_for(self, pod: Pod, container: Container, prepared: dict[str, str]) -> list[Mount]: ...

    async def sync(self, pod: Pod) -> None: ...

    async def cleanup(self, pod_uid: str) -> None: ...


class Probes(Protocol):
    """The probe manager seam (services/kubelet/probes.py)."""

    def start(
        self, pod_uid: str, container_name: str, container: Container, container_id: str, pod_ip: str,
        on_change: Callable[[], None],
    ) -> None: ...

    def stop(self, pod_uid: str) -> None: ...

    def readiness(self, pod_uid: str, name: str) -> bool: ...

    def liveness_failed(self, pod_uid: str, name: str) -> bool: ...

    def failure_count(self, pod_uid: str, name: str) -> int: ...

    def last_failure(self, pod_uid: str, name: str) -> str | None: ...

    def startup_done(self, pod_uid: str, name: str) -> bool: ...


class PodWorker:
    """Syncs the pods bound to one node; ``reconcile`` is the controller's callback."""

    def __init__(
        self,
        *,
        node_name: str,
        store: Store,
        runtime: ContainerRuntime,
        pods: Informer,
        configmaps: Informer,
        secrets: Informer,
        allocator: PodIPAllocator,
        volumes: Volumes,
        probes: Probes | None,
        settings: Settings,
        tracer: Tracer,
        allocatable: Mapping[str, str],
        enqueue: Callable[[str], None],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        node_api: Any = None,
        hooks: HookRunner | None = None,
        network: CniPodNetwork | None = None,  # network "cni": sandboxes configured by CNI
        host_ip: str = HOST_IP,  # the node's address (hostNetwork pods' IP in cni mode)
        etc_files: PodEtcFiles | None = None,  # network "cni": the pods' resolv.conf and hosts
        seccomp_dir: str = "/var/lib/kubelet/seccomp",  # where Localhost seccomp profiles are
        apparmor_enabled: bool | None = None,  # None: as the host says (APPARMOR_ENABLED)
        allowed_unsafe_sysctls: tuple[str, ...] = (),  # beyond the safe ones: names or "prefix*"
    ) -> None:
        self.allowed_unsafe_sysctls = allowed_unsafe_sysctls
        self.seccomp_dir = seccomp_dir
        self.apparmor_enabled = host_apparmor_enabled() if apparmor_enabled is None else apparmor_enabled
        self._noted: set[str] = set()  # uids whose not-effective fields were reported
        self._rejected: set[str] = set()  # uids refused by admission (until their Failed status is seen)
        self.node_name = node_name
        self.etc_files = etc_files
        self.network = network
        self.host_ip = host_ip
        if network is not None and not isinstance(runtime, SandboxNetns):
            raise errors.Invalid(f"runtime {runtime.name} cannot give CNI a network namespace")
        self._pod_ips: dict[str, str] = {}  # uid -> the IP CNI gave its live sandbox
        self._net_failures: dict[str, tuple[int, float]] = {}  # uid -> (failed ADDs, monotonic retry time)
        self.node_api = node_api  # set: pods are written through the api's node-restricted verbs
        self.store = store
        self.runtime = runtime
        self.pods = pods
        self.configmaps = configmaps
        self.secrets = secrets
        self.allocator = allocator
        self.volumes = volumes
        self.probes = probes
        self.settings = settings
        self.tracer = tracer
        self.allocatable = dict(allocatable)
        self.enqueue = enqueue
        self.clock = clock
        self.hooks = hooks if hooks is not None else HookRunner(runtime)
        self.log = structlog.get_logger("kyb.kubelet")
        self._uids: dict[str, str] = {}  # pod key -> uid of the pod whose containers we run
        self._memory: dict[str, PodMemory] = {}  # uid -> what we remember
        self._sandboxes: dict[str, str] = {}  # uid -> sandbox id
        self._probed: dict[tuple[str, str], str] = {}  # (uid, container) -> container id probed
        self._probe_failures: dict[tuple[str, str], int] = {}  # failed probe runs already reported

    # -- lookups for the env resolver ------------------------------------------------------

    def _configmap(self, namespace: str, name: str) -> ConfigMap | None:
        obj = self.configmaps.get(f"{namespace}.{name}")
        return obj if isinstance(obj, ConfigMap) else None

    def _secret(self, namespace: str, name: str) -> Secret | None:
        obj = self.secrets.get(f"{namespace}.{name}")
        return obj if isinstance(obj, Secret) else None

    def lookup(self, namespace: str, pod_name: str, container: str | None, previous: bool = False) -> str | None:
        """The runtime id of a pod's container (its previous, terminated one with ``previous``),
        for logs and exec; the first container when none is named."""
        pod = self.pods.get(f"{namespace}.{pod_name}")
        if not isinstance(pod, Pod) or pod.spec.nodeName != self.node_name:
            return None
        for s in [*pod.status.containerStatuses, *pod.status.initContainerStatuses]:
            if container is not None and s.name != container:
                continue
            if previous:
                term = s.lastState.terminated
                ref = term.containerID if term is not None else ""
            else:
                ref = s.containerID
            return ref.partition("://")[2] or None
        return None

    def pod_address(self, namespace: str, pod_name: str) -> str | None:
        """The IP of a pod bound to this node (for port forwarding), None when it has none."""
        pod = self.pods.get(f"{namespace}.{pod_name}")
        if not isinstance(pod, Pod) or pod.spec.nodeName != self.node_name:
            return None
        return pod.status.podIP or None

    # -- the reconcile ---------------------------------------------------------------------

    async def reconcile(self, key: str, _ctx: Any = None) -> float | None:
        obj = self.pods.get(key)
        pod = obj if isinstance(obj, Pod) else None
        mine = pod is not None and pod.spec.nodeName == self.node_name
        known = self._uids.get(key)
        if known is not None and (not mine or pod is None or pod.metadata.uid != known):
            await self.teardown(known)
            self._uids.pop(key, None)
        if pod is None or not mine:
            return None
        uid = pod.metadata.uid or ""
        self._uids[key] = uid
        try:
            if pod.metadata.deletionTimestamp:
                await self.terminate(pod)
                return None
            if startplan.rejected(pod) or uid in self._rejected:
                return None  # refused by admission: nothing of it runs
            if pod.status.phase == "Pending":
                refusal = startplan.admission(pod, runtime=self.runtime.name, apparmor_enabled=self.apparmor_enabled,
                                              allowed_unsafe_sysctls=self.allowed_unsafe_sysctls)
                if refusal is not None:
                    self._rejected.add(uid)
                    await self._reject(pod, *refusal)
                    return None
            if hasattr(self.secrets, "refresh"):  # node-restricted: fetch the Secrets it uses
                await self.secrets.refresh(pod, referenced(pod)[1])
            await self.volumes.sync(pod)  # the downward API's labels and annotations, fresh Secrets
            return await self._sync(pod)
        except RuntimeUnavailable as e:
            raise errors.Temporary(f"container runtime: {e}", delay=2.0) from e

    async def _sync(self, pod: Pod) -> float | None:
        uid = pod.metadata.uid or ""
        ip = await self._pod_network(pod)
        memory = self._memory.get(uid, PodMemory())
        result: Plan | None = None
        for round_ in range(MAX_ROUNDS):
            observed = await self.runtime.list(uid)
            self._watch_probes(pod, observed, ip)
            result = plan(
                pod,
                observed,
                self.clock(),
                memory,
                settings=self.settings,
                runtime=self.runtime.name,
                pod_ip=ip,
                host_ip=self.host_ip,
                probes=self._probe_views(pod),
            )
            memory = result.memory
            if round_ == 0:
                await self._probe_events(pod)
                await self._events(pod, *result.events)
                if uid not in self._noted:
                    self._noted.add(uid)
                    noted = startplan.not_effective_event(pod, self.runtime.name)
                    if noted is not None:
                        await self._events(pod, noted)
            if not result.acts or round_ == MAX_ROUNDS - 1:
                break
            if round_ == 0 and any(startplan.post_start(startplan.container(pod, st.name)) for st in result.start):
                await self._write_status(pod, result)  # Waiting/ContainerCreating while the hook runs
            memory = await self._apply(pod, result, memory, ip)
        assert result is not None
        self._memory[uid] = memory
        await self._write_status(pod, result)
        if result.acts:
            return 0.05  # more to do (rounds ran out)
        for cid in result.remove:
            with contextlib.suppress(ContainerRuntimeError):
                await self.runtime.remove(cid)
        return result.requeue_after

    async def _pod_network(self, pod: Pod) -> str:
        """The pod's IP: from the loopback allocator, or (network "cni") from CNI once the
        sandbox exists and is configured."""
        if self.network is None:
            return self._pod_ip(pod)
        if pod.spec.hostNetwork:
            return self.host_ip
        if pod.status.phase in ("Succeeded", "Failed"):
            return pod.status.podIP
        return await self._cni_sandbox(pod)

    async def _cni_sandbox(self, pod: Pod) -> str:
        assert self.network is not None and isinstance(self.runtime, SandboxNetns)
        uid = pod.metadata.uid or ""
        netns = await self.runtime.sandbox_netns(uid)
        known = self._pod_ips.get(uid)
        if netns is not None:
            if known:
                return known
            ips = self.network.cached_ips(uid)
            if ips:  # adopted after a restart
                self._pod_ips[uid] = ips[0]
                return ips[0]
            await self.runtime.remove_sandbox(uid)  # a live sandbox without network: start over
        elif known:
            await self._event(pod, "SandboxChanged", "Pod sandbox changed, it will be killed and re-created.")
            await self.runtime.remove_sandbox(uid)
        self._pod_ips.pop(uid, None)
        failures, retry_at = self._net_failures.get(uid, (0, 0.0))
        if time.monotonic() < retry_at:
            raise errors.Temporary("pod sandbox: waiting to retry its network setup", delay=retry_at - time.monotonic())
        with contextlib.suppress(CniError):
            await self.network.delete(uid, None)  # whatever an earlier sandbox of the pod held
        await self._sandbox(pod, "")
        netns = await self.runtime.sandbox_netns(uid)
        try:
            if netns is None:
                raise CniError(3, "the pod sandbox has no network namespace (it exited at once)", command="ADD")
            ips = await self.network.add(uid, netns, pod.metadata.namespace or "default", pod.metadata.name,
                                         startplan.port_mappings(pod))
        except CniError as e:
            event, delay = startplan.sandbox_failure(e.message, failures, self.settings)
            await self._events(pod, event)
            with contextlib.suppress(CniError):
                await self.network.delete(uid, netns)
            await self.runtime.remove_sandbox(uid)
            self._net_failures[uid] = (failures + 1, time.monotonic() + delay)
            raise errors.Temporary(f"pod network: {e.message}", delay=delay) from e
        self._net_failures.pop(uid, None)
        self._pod_ips[uid] = ips[0]
        await self._sandbox(pod, ips[0])  # records the address (the process runtime's POD_IP)
        self.log.info("pod network set up", pod=f"{pod.metadata.namespace}/{pod.metadata.name}", ip=ips[0])
        return ips[0]

    def _pod_ip(self, pod: Pod) -> str:
        uid = pod.metadata.uid or ""
        if pod.status.podIP and self.allocator.reserve(uid, pod.status.podIP):
            return pod.status.podIP
        return self.allocator.allocate(uid)

    # -- applying --------------------------------------------------------------------------

    async def _apply(self, pod: Pod, p: Plan, memory: PodMemory, ip: str) -> PodMemory:
        for r in p.resize:
            try:
                await self.runtime.update_resources(r.container_id, cpu_limit_millis=r.cpu_limit_millis,
                                                    memory_limit_bytes=r.memory_limit_bytes)
            except ContainerRuntimeError as e:
                memory = with_resize_error(memory, r, e.message)
                await self._events(pod, Event("Warning", "ResizeFailed", f"Resize of container {r.name} failed: "
                                                                         f"{e.message}"))
        if p.kill:
            deadline = time.monotonic() + max(0, pod.spec.terminationGracePeriodSeconds)
            for wave in stop_waves(pod, p.kill):
                await asyncio.gather(*(self._kill(pod, k, ip, deadline) for k in wave))
        if not p.start:
            return memory
        sandbox = await self._sandbox(pod, ip)
        prepared: dict[str, str] | None = None
        for s in p.start:
            c = startplan.container(pod, s.name)
            if c is None:
                continue
            if prepared is None:
                try:
                    prepared = await self.volumes.prepare(pod)
                except (errors.KybError, LookupError, OSError) as e:
                    event, failure = startplan.mount_failure(str(e), self.clock())
                    await self._events(pod, event)
                    for other in p.start:
                        memory = with_failure(memory, other.name, failure)
                    return memory
            memory = await self._start(pod, c, s, sandbox, prepared, memory, ip)
        return memory

    async def _sandbox(self, pod: Pod, ip: str) -> str:
        resolv, hosts = self.etc_files.write(pod, ip) if self.etc_files is not None else (None, None)
        cfg = startplan.sandbox_config(pod, ip, startplan.sandbox_network(pod, self.network is not None), resolv, hosts)
        sandbox = await self.runtime.create_sandbox(cfg)
        self._sandboxes[cfg.pod_uid] = sandbox
        return sandbox

    async def _start(
        self, pod: Pod, c: Container, s: Start, sandbox: str, prepared: dict[str, str], memory: PodMemory, ip: str
    ) -> PodMemory:
        uid = pod.metadata.uid or ""
        attrs = startplan.span_attributes(pod, c, s.attempt, self.node_name)
        with self.tracer.start_as_current_span(f"start container {c.name}", attributes=attrs) as span:
            previous = memory.failures.get(c.name)
            now = self.clock()

            async def failed(events: tuple[Event, ...], failure: Failure) -> PodMemory:
                span.set_attribute("kyb.error", failure.message)
                await self._events(pod, *events)
                return with_failure(memory, c.name, failure)

            try:
                env = container_env(startplan.with_addresses(pod, ip, self.host_ip), c, self._configmap,
                                    self._secret, self.allocatable)
            except ConfigError as e:
                event, failure = startplan.config_failure(str(e), now)
                return await failed((event,), failure)
            command, args = command_line(c, env)
            policy = startplan.pull_policy(c)
            try:
                await self._events(pod, *startplan.pulling_events(c, policy))
                await self.runtime.ensure_image(c.image, policy)
            except ImagePullError as e:
                return await failed(*startplan.pull_failure(c, e.reason, e.message, previous, self.settings, now))
            await self._events(pod, startplan.pulled_event(c, policy))
            try:
                mounts = tuple(self.volumes.mounts_for(pod, c, prepared))
                if self.etc_files is not None and self.runtime.name == "docker":
                    mounts += self.etc_files.mounts(uid)
            except (errors.KybError, OSError) as e:
                event, failure = startplan.config_failure(str(e), now)
                return await failed((event,), failure)
            cfg = startplan.container_config(c, env, command, args, mounts, policy, s.attempt,
                                             startplan.container_security(pod, c, self.seccomp_dir),
                                             share_pid=bool(pod.spec.shareProcessNamespace))
            try:
                info = await self.runtime.create_and_start(sandbox, uid, cfg)
            except RuntimeUnavailable:
                raise
            except ContainerRuntimeError as e:
                event, failure = startplan.start_failure(e.reason, e.message, previous, self.settings, now)
                return await failed((event,), failure)
            span.set_attribute("k8s.container.id", info.id)
            await self._events(pod, *startplan.started_events(c))
            self.log.info("container started", pod=f"{pod.metadata.namespace}/{pod.metadata.name}",
                          container=c.name, attempt=s.attempt, id=info.id[:12])
            hook = startplan.post_start(c)
            if hook is not None:
                outcome, message = await self._post_start(pod, c, hook, info.id, ip)
                if outcome == "failed":
                    span.set_attribute("kyb.error", message)
                    await self._event(pod, "FailedPostStartHook", message, "Warning")
                    deadline = time.monotonic() + max(0, pod.spec.terminationGracePeriodSeconds)
                    await self._kill(pod, startplan.post_start_kill(c, info.id), ip, deadline)
                    return with_failure(memory, c.name, None)
                if outcome == "aborted":
                    return with_failure(memory, c.name, None)
            self._start_probes(pod, c, info, ip)
            return with_failure(memory, c.name, None)

    # -- lifecycle hooks -------------------------------------------------------------------

    async def _post_start(
        self, pod: Pod, c: Container, hook: LifecycleHandler, container_id: str, ip: str
    ) -> tuple[str, str]:
        """Run a postStart hook: ("ok" | "failed" | "aborted", failure message). The hook is
        abandoned when the pod is deleted or replaced, or the container exits, meanwhile."""
        task = asyncio.create_task(
            self.hooks.run(hook, pod, c, container_id, ip), name=f"poststart-{(pod.metadata.uid or '')[:8]}-{c.name}"
        )
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=HOOK_WATCH)
                if done:
                    message = task.result()
                    return ("ok", "") if message is None else ("failed", message)
                if not self._wanted(pod):
                    return "aborted", ""
                try:
                    info = await self.runtime.inspect(container_id)
                except ContainerRuntimeError:
                    return "aborted", ""
                if info.state != "running":
                    return "aborted", ""
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})

    def _wanted(self, pod: Pod) -> bool:
        """Whether ``pod`` is still the live pod of its key (not deleted, not replaced)."""
        current = self.pods.get(f"{pod.metadata.namespace}.{pod.metadata.name}")
        return (
            isinstance(current, Pod)
            and current.metadata.uid == pod.metadata.uid
            and not current.metadata.deletionTimestamp
            and current.spec.nodeName == self.node_name
        )

    async def _kill(self, pod: Pod, k: Kill, ip: str, deadline: float) -> None:
        await self._event(pod, k.reason, k.message, "Normal")
        await self._stop_container(pod, k.container_id, k.name, ip, deadline)

    async def _stop_container(self, pod: Pod, container_id: str, name: str, ip: str, deadline: float) -> None:
        """preStop hook (a failure is a FailedPreStopHook event), then SIGTERM, then SIGKILL at
        ``deadline`` (monotonic): the hook's time counts against the grace period."""
        c = startplan.container(pod, name)
        hook = c.lifecycle.preStop if c is not None and c.lifecycle is not None else None
        left = deadline - time.monotonic()
        if c is not None and hook is not None and left > 0:
            message: str | None = None
            with contextlib.suppress(TimeoutError):  # out of grace: Kubernetes moves on silently
                message = await asyncio.wait_for(self.hooks.run(hook, pod, c, container_id, ip, left), left)
            if message is not None:
                await self._event(pod, "FailedPreStopHook", message, "Warning")
        with contextlib.suppress(ContainerRuntimeError):
            await self.runtime.stop(container_id, max(0.0, deadline - time.monotonic()))

    # -- probes ----------------------------------------------------------------------------

    def _start_probes(self, pod: Pod, c: Container, info: ContainerInfo, ip: str) -> None:
        if self.probes is None:
            return
        uid = pod.metadata.uid or ""
        key = f"{pod.metadata.namespace or 'default'}.{pod.metadata.name}"
        if not (c.livenessProbe or c.readinessProbe or c.startupProbe):
            return
        self._probed[(uid, c.name)] = info.id
        self.probes.start(uid, c.name, c, info.id, ip, lambda: self.enqueue(key))

    def _watch_probes(self, pod: Pod, observed: list[ContainerInfo], ip: str) -> None:
        """Probe running containers not probed yet (adopted after a restart, ...)."""
        if self.probes is None:
            return
        uid = pod.metadata.uid or ""
        for info in observed:
            if info.state != "running" or self._probed.get((uid, info.name)) == info.id:
                continue
            c = startplan.container(pod, info.name)
            if c is not None and (c in pod.spec.containers or is_sidecar(c)):
                self._start_probes(pod, c, info, ip)

    async def _probe_events(self, pod: Pod) -> None:
        """A Warning event Unhealthy for probe failures not reported yet, as the kubelet does."""
        if self.probes is None:
            return
        uid = pod.metadata.uid or ""
        for c in _probed_containers(pod):
            if not (c.livenessProbe or c.readinessProbe or c.startupProbe):
                continue
            count = self.probes.failure_count(uid, c.name)
            seen = self._probe_failures.get((uid, c.name), 0)
            if count < seen:
                seen = 0  # new probes (a restarted container) count from zero again
            if count > seen:
                self._probe_failures[(uid, c.name)] = count
                message = self.probes.last_failure(uid, c.name) or "probe failed"
                await self._event(pod, "Unhealthy", message, "Warning")
            else:
                self._probe_failures[(uid, c.name)] = count

    def _probe_views(self, pod: Pod) -> dict[str, ProbeView]:
        if self.probes is None:
            return {}
        uid = pod.metadata.uid or ""
        out = {}
        for c in _probed_containers(pod):
            out[c.name] = ProbeView(
                ready=self.probes.readiness(uid, c.name) if c.readinessProbe else None,
                started=self.probes.startup_done(uid, c.name) if c.startupProbe else None,
                liveness_failed=self.probes.liveness_failed(uid, c.name) if c.livenessProbe else False,
            )
        return out

    # -- status and events -----------------------------------------------------------------

    async def _reject(self, pod: Pod, reason: str, message: str) -> None:
        """The kubelet's rejectPod: a Warning event, then Failed with the admit handler's reason."""
        self.log.warning("pod rejected", pod=f"{pod.metadata.namespace}/{pod.metadata.name}", reason=reason,
                         message=message)
        await self._event(pod, reason, message, "Warning")
        await self._write_pod_status(pod, startplan.rejected_status(pod, reason, message))

    async def _write_status(self, pod: Pod, p: Plan) -> None:
        await self._write_pod_status(pod, p.status)

    async def _write_pod_status(self, pod: Pod, status: PodStatus) -> None:
        if not status_differs(pod.status, status):
            return
        uid = pod.metadata.uid

        def fn(current: Any) -> Any:
            if current.metadata.uid != uid or current.metadata.deletionTimestamp and not pod.metadata.deletionTimestamp:
                return None
            if current.status.phase in ("Succeeded", "Failed") and status.phase != current.status.phase:
                return None
            if not status_differs(current.status, status):
                return None
            return msgspec.structs.replace(current, status=status)

        if self.node_api is not None:
            current = self.pods.get(f"{pod.metadata.namespace}.{pod.metadata.name}") or pod
            new = fn(current)
            with contextlib.suppress(errors.NotFound, errors.Conflict):
                if new is not None:
                    await self.node_api.write_status(pod, new.status)
            return
        with contextlib.suppress(errors.NotFound):
            await self.store.mutate("Pod", pod.metadata.namespace, pod.metadata.name, fn)

    async def _event(self, pod: Pod, reason: str, message: str, type_: str = "Normal") -> None:
        with contextlib.suppress(Exception):
            await self.store.record_event(pod, reason, message, type_, SOURCE)

    async def _events(self, pod: Pod, *events: Event) -> None:
        for ev in events:
            await self._event(pod, ev.reason, ev.message, ev.type)

    # -- stopping --------------------------------------------------------------------------

    async def terminate(self, pod: Pod) -> None:
        """Graceful deletion: preStop hooks, SIGTERM, SIGKILL at the end of the grace period,
        the sandbox removed, and only then the pod object deleted."""
        uid = pod.metadata.uid or ""
        grace = pod.metadata.deletionGracePeriodSeconds
        if grace is None:
            grace = pod.spec.terminationGracePeriodSeconds
        deadline = time.monotonic() + max(0, grace)
        if self.probes is not None:
            self.probes.stop(uid)
        running = [i for i in await self.runtime.list(uid) if i.state == "running"]
        ip = pod.status.podIP

        async def stop_one(info: ContainerInfo) -> None:
            await self._event(pod, "Killing", f"Stopping container {info.name}")
            await self._stop_container(pod, info.id, info.name, ip, deadline)

        for wave in stop_waves(pod, running):  # sidecars after the app containers, last started first
            await asyncio.gather(*(stop_one(i) for i in wave))
        await self.teardown(uid)
        await self._delete_object(pod)

    async def _delete_object(self, pod: Pod) -> None:
        ns, name = pod.metadata.namespace, pod.metadata.name
        for _ in range(20):
            try:
                current = await self.store.get("Pod", ns, name)
            except errors.NotFound:
                return
            if current.metadata.uid != pod.metadata.uid:
                return
            try:
                if self.node_api is not None:
                    await self.node_api.delete(current, current.metadata.resourceVersion)
                    return
                await self.store.delete(
                    "Pod", ns, name, resource_version=current.metadata.resourceVersion, grace_period_seconds=0
                )
                return
            except errors.NotFound:
                return
            except errors.Conflict:
                continue

    async def teardown(self, uid: str) -> None:
        """Remove every container and the sandbox of ``uid`` and forget it."""
        if self.probes is not None:
            self.probes.stop(uid)
        if self.network is not None:
            netns = await self.runtime.sandbox_netns(uid) if isinstance(self.runtime, SandboxNetns) else None
            try:
                await self.network.delete(uid, netns)  # before the namespace goes, as the kubelet does
            except CniError as e:
                self.log.warning("pod network teardown failed", pod_uid=uid, error=e.message)
            self._pod_ips.pop(uid, None)
            self._net_failures.pop(uid, None)
        await self.runtime.remove_sandbox(uid)
        with contextlib.suppress(Exception):
            await self.volumes.cleanup(uid)
        if self.etc_files is not None:
            self.etc_files.remove(uid)
        self.allocator.release(uid)
        self._noted.discard(uid)
        self._rejected.discard(uid)
        self._memory.pop(uid, None)
        self._sandboxes.pop(uid, None)
        for k in [k for k in self._probed if k[0] == uid]:
            del self._probed[k]

    async def close(self) -> None:
        await self.hooks.close()

    async def housekeeping(self) -> None:
        """Remove containers of pods that are not bound here any more (also after a restart)."""
        wanted = {p.metadata.uid for p in self.pods.by_index("node", self.node_name)}
        present = set(await self.runtime.list_sandboxes()) | {i.pod_uid for i in await self.runtime.list()}
        if self.network is not None:
            present |= self.network.known_pods()  # networks whose sandbox went while we were away
        for uid in present - wanted - {""}:
            self.log.info("removing containers of a pod not bound here", pod_uid=uid)
            await self.teardown(uid)


def _probed_containers(pod: Pod) -> list[Container]:
    """The containers whose probes the kubelet acts on: the sidecars and the app containers."""
    return [*(c for c in pod.spec.initContainers if is_sidecar(c)), *pod.spec.containers]
