"""Running the liveness, readiness and startup probes of the containers on this node.

One asyncio task per probed container wakes when a probe is due, runs its handler (httpGet
to the pod's address, tcpSocket connect, or exec inside the container through the runtime),
and feeds the outcome to the pure state machine of :mod:`services.kubelet.probestate`. When
a container's readiness or liveness result changes, ``on_change`` is called so the kubelet
re-syncs that pod (it only enqueues; the kubelet reads the results back from here).

HTTP probes use httpx; any status from 200 to 399 is a success, as in Kubernetes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable

import httpx
import structlog

from schemas.pod import Container, HTTPGetAction, Probe
from services.kubelet.handlers import PROBE_USER_AGENT, http_request, resolve_port
from services.kubelet.probestate import ContainerProbes, ProbeKind, ProbeState, Timing, initial, observe
from services.kubelet.runtime.base import ContainerRuntime
from services.kubelet.runtime.errors import ContainerRuntimeError, ExecTimeout

log = structlog.get_logger("kyb.kubelet.probes")

USER_AGENT = PROBE_USER_AGENT
KIND_TITLE: dict[ProbeKind, str] = {"liveness": "Liveness", "readiness": "Readiness", "startup": "Startup"}
MIN_TICK = 0.05  # seconds; lower bound of a worker's sleep


def timing_of(kind: ProbeKind, probe: Probe) -> Timing:
    """Kubernetes defaults: liveness and startup always use successThreshold 1."""
    return Timing(
        initial_delay=float(max(0, probe.initialDelaySeconds)),
        period=float(max(1, probe.periodSeconds)),
        timeout=float(max(1, probe.timeoutSeconds)),
        success_threshold=1 if kind != "readiness" else max(1, probe.successThreshold),
        failure_threshold=max(1, probe.failureThreshold),
    )


class _Worker:
    """The probes of one container and the task that runs them."""

    def __init__(self, probes: ContainerProbes, specs: dict[ProbeKind, Probe]) -> None:
        self.probes = probes
        self.specs = specs
        self.task: asyncio.Task[None] | None = None
        self.last_failure: str | None = None
        self.failures = 0  # failed probe runs so far (each is an Unhealthy event)


class ProbeManager:
    """See the module docstring. ``clock`` returns monotonic seconds."""

    def __init__(
        self,
        runtime: ContainerRuntime,
        clock: Callable[[], float] = time.monotonic,
        *,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.runtime = runtime
        self.clock = clock
        self._http = http
        self._workers: dict[tuple[str, str], _Worker] = {}

    # -- the kubelet's side ---------------------------------------------------------------

    def start(
        self,
        pod_uid: str,
        container_name: str,
        container: Container,
        container_id: str,
        pod_ip: str,
        on_change: Callable[[], None],
    ) -> None:
        """Begin probing a container that has just started (replaces any earlier worker)."""
        self.stop_container(pod_uid, container_name)
        now = self.clock()
        specs: dict[ProbeKind, Probe] = {}
        states: dict[str, ProbeState | None] = {}
        for kind, probe in (
            ("liveness", container.livenessProbe),
            ("readiness", container.readinessProbe),
            ("startup", container.startupProbe),
        ):
            if probe is not None and (probe.httpGet or probe.tcpSocket or probe.exec):
                specs[kind] = probe  # type: ignore[index]
                states[kind] = initial(kind, timing_of(kind, probe), now)  # type: ignore[arg-type]
        worker = _Worker(ContainerProbes(**states), specs)
        self._workers[(pod_uid, container_name)] = worker
        if specs:
            worker.task = asyncio.create_task(
                self._run(worker, container, container_id, pod_ip, on_change),
                name=f"probe-{pod_uid[:8]}-{container_name}",
            )

    def stop_container(self, pod_uid: str, container_name: str) -> None:
        worker = self._workers.pop((pod_uid, container_name), None)
        if worker is not None and worker.task is not None:
            worker.task.cancel()

    def stop(self, pod_uid: str) -> None:
        for key in [k for k in self._workers if k[0] == pod_uid]:
            self.stop_container(*key)

    async def close(self) -> None:
        tasks = [w.task for w in self._workers.values() if w.task is not None]
        self._workers.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def readiness(self, pod_uid: str, name: str) -> bool:
        worker = self._workers.get((pod_uid, name))
        return worker is not None and worker.probes.ready()

    def liveness_failed(self, pod_uid: str, name: str) -> bool:
        worker = self._workers.get((pod_uid, name))
        return worker is not None and worker.probes.liveness_failed()

    def startup_done(self, pod_uid: str, name: str) -> bool:
        worker = self._workers.get((pod_uid, name))
        return worker is not None and worker.probes.startup_done()

    def last_failure(self, pod_uid: str, name: str) -> str | None:
        worker = self._workers.get((pod_uid, name))
        return worker.last_failure if worker is not None else None

    def failure_count(self, pod_uid: str, name: str) -> int:
        """Failed probe runs of this container's current probes (the kubelet reports each)."""
        worker = self._workers.get((pod_uid, name))
        return worker.failures if worker is not None else 0

    # -- the worker -----------------------------------------------------------------------

    async def _run(
        self, w: _Worker, container: Container, container_id: str, pod_ip: str, on_change: Callable[[], None]
    ) -> None:
        while True:
            now = self.clock()
            ran = False
            for kind in ("startup", "liveness", "readiness"):
                if not w.probes.runnable(kind, now):
                    continue
                ran = True
                before = (w.probes.ready(), w.probes.liveness_failed(), w.probes.startup_done())
                state: ProbeState = getattr(w.probes, kind)
                ok, message = await self._probe(
                    w.specs[kind], state.timing.timeout, container, container_id, pod_ip
                )
                new = observe(state, ok, self.clock(), message)
                w.probes = ContainerProbes(**{**_states(w.probes), kind: new})
                if not ok:
                    w.last_failure = f"{KIND_TITLE[kind]} probe failed: {message}"
                    w.failures += 1
                after = (w.probes.ready(), w.probes.liveness_failed(), w.probes.startup_done())
                if after != before or not ok:
                    log.info(
                        "probe result changed", container=container.name, probe=kind, ok=ok, message=message
                    )
                    try:
                        on_change()
                    except Exception:
                        log.exception("probe on_change callback failed")
            if ran:
                continue
            await asyncio.sleep(max(MIN_TICK, self._next_due(w.probes) - self.clock()))

    @staticmethod
    def _next_due(probes: ContainerProbes) -> float:
        times = [
            s.next_at
            for s in (probes.liveness, probes.readiness, probes.startup)
            if s is not None and not s.done
        ]
        return min(times) if times else float("inf")

    async def _probe(
        self, probe: Probe, timeout: float, container: Container, container_id: str, pod_ip: str
    ) -> tuple[bool, str | None]:
        try:
            if probe.exec is not None:
                return await self._exec(probe.exec.command, timeout, container_id)
            if probe.httpGet is not None:
                return await self._http_get(probe.httpGet, timeout, container, pod_ip)
            if probe.tcpSocket is not None:
                host = probe.tcpSocket.host or pod_ip
                return await self._tcp(host, resolve_port(probe.tcpSocket.port, container), timeout)
        except ValueError as e:
            return False, str(e)
        return True, None

    async def _exec(self, command: list[str], timeout: float, container_id: str) -> tuple[bool, str | None]:
        return await exec_command(self.runtime, container_id, command, timeout)

    async def _http_get(
        self, action: HTTPGetAction, timeout: float, container: Container, pod_ip: str
    ) -> tuple[bool, str | None]:
        if self._http is None:
            self._http = new_http_client()
        code, message = await send_get(self._http, action, container, pod_ip, timeout, USER_AGENT)
        if code is None:
            return False, message
        if 200 <= code < 400:
            return True, None
        return False, f"HTTP probe failed with statuscode: {code}"

    @staticmethod
    async def _tcp(host: str, port: int, timeout: float) -> tuple[bool, str | None]:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except TimeoutError:
            return False, f"dial tcp {host}:{port}: i/o timeout"
        except OSError as e:
            why = os.strerror(e.errno) if e.errno else str(e)
            return False, f"dial tcp {host}:{port}: connect: {why.lower()}"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True, None


def new_http_client() -> httpx.AsyncClient:
    """The client handlers send with: no certificate checks, no redirects, no proxies."""
    return httpx.AsyncClient(verify=False, follow_redirects=False, trust_env=False)


async def exec_command(
    runtime: ContainerRuntime, container_id: str, command: list[str], timeout: float
) -> tuple[bool, str | None]:
    """Run an exec handler in the container: (succeeded, why not: its output or exit code)."""
    try:
        code, output = await runtime.exec(container_id, list(command), timeout)
    except ExecTimeout:
        return False, f"command {command!r} timed out"
    except ContainerRuntimeError as e:
        return False, e.message
    if code == 0:
        return True, None
    text = output.decode(errors="replace").strip()
    return False, text or f"command {command!r} exited with {code}"


async def send_get(
    client: httpx.AsyncClient,
    action: HTTPGetAction,
    container: Container,
    pod_ip: str,
    timeout: float | None,
    user_agent: str,
) -> tuple[int | None, str | None]:
    """Send an httpGet handler's request: (status code, None) when anything answered,
    (None, why) when nothing did (a bad port, a refused connection, a timeout)."""
    try:
        req = http_request(action, container, pod_ip, user_agent)
    except ValueError as e:
        return None, str(e)
    try:
        resp = await client.get(req.url, headers=req.headers, timeout=timeout)
    except httpx.TimeoutException:
        return None, f'Get "{req.url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
    except httpx.HTTPError as e:
        return None, f'Get "{req.url}": {_why(e)}'
    return resp.status_code, None


def _states(probes: ContainerProbes) -> dict[str, ProbeState | None]:
    return {"liveness": probes.liveness, "readiness": probes.readiness, "startup": probes.startup}


def _why(e: BaseException) -> str:
    cur: BaseException | None = e
    while cur is not None:
        if isinstance(cur, OSError) and cur.errno:
            return f"dial tcp: connect: {os.strerror(cur.errno).lower()}"
        cur = cur.__cause__ or cur.__context__
    return str(e) or type(e).__name__
