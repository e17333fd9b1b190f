"""Resource usage samples of this node and its pods, for ``kyb top`` and the autoscaler.

Every ``interval`` seconds the kubelet reads each running container's cumulative CPU time and
memory from the runtime, turns CPU time into a rate over the window since the previous
reading (millicores), adds the node's own usage (psutil), and publishes one JSON sample on
``kyb.metrics.<node>``:

    {node, timestamp, window, node_usage: {cpu_millis, memory_bytes},
     pods: [{namespace, name, uid, containers: [{name, cpu_millis, memory_bytes}]}]}

A container is reported from its second reading on (a rate needs two). The stream
``KYB_METRICS`` (memory storage, last message per subject, 5 min max age) keeps the latest
sample of every node, so ``kyb top`` reads it without waiting for the next tick, while live
subscribers (hpa) just subscribe to ``kyb.metrics.*``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
import psutil
import structlog
from nats.aio.client import Client as NATS

from kyb import buckets, bus, errors
from kyb.cli.nodeclient import metrics_stream_config
from schemas.pod import Pod
from services.kubelet.runtime.base import ContainerRuntime
from services.kubelet.runtime.errors import ContainerRuntimeError

log = structlog.get_logger("kyb.kubelet.metrics")


class Usage(msgspec.Struct, kw_only=True, frozen=True):
    cpu_millis: int
    memory_bytes: int


class ContainerMetrics(msgspec.Struct, kw_only=True, frozen=True):
    name: str
    cpu_millis: int
    memory_bytes: int


class PodMetrics(msgspec.Struct, kw_only=True, frozen=True):
    namespace: str
    name: str
    uid: str
    containers: list[ContainerMetrics]


class Sample(msgspec.Struct, kw_only=True, frozen=True):
    node: str
    timestamp: str
    window: float  # seconds the CPU rates were measured over
    node_usage: Usage
    pods: list[PodMetrics]


def cpu_millis(prev_ns: int, now_ns: int, seconds: float) -> int:
    """Millicores used between two cumulative CPU-time readings ``seconds`` apart."""
    if seconds <= 0 or now_ns < prev_ns:
        return 0
    return round((now_ns - prev_ns) / 1e6 / seconds)


class _Sampler:
    """Readings kept between ticks: container id -> (cpu ns, monotonic seconds)."""

    def __init__(self, runtime: ContainerRuntime, clock: Callable[[], float]) -> None:
        self.runtime = runtime
        self.clock = clock
        self.prev: dict[str, tuple[int, float]] = {}
        self.node_prev: tuple[float, float] | None = None  # (busy cpu seconds, monotonic)

    def node_usage(self) -> Usage:
        t = psutil.cpu_times()
        busy = (
            t.user
            + t.nice
            + t.system
            + getattr(t, "irq", 0.0)
            + getattr(t, "softirq", 0.0)
            + getattr(t, "steal", 0.0)
        )
        now = self.clock()
        millis = 0
        if self.node_prev is not None and now > self.node_prev[1]:
            millis = round((busy - self.node_prev[0]) * 1000 / (now - self.node_prev[1]))
        self.node_prev = (busy, now)
        vm = psutil.virtual_memory()
        return Usage(cpu_millis=max(0, millis), memory_bytes=int(vm.total - vm.available))

    async def pod(self, pod: Pod, seen: set[str]) -> PodMetrics | None:
        uid = pod.metadata.uid or ""
        containers = []
        for info in await self.runtime.list(uid):
            if info.state != "running":
                continue
            try:
                cpu_ns, mem = await self.runtime.stats(info.id)
            except ContainerRuntimeError:
                continue
            now = self.clock()
            seen.add(info.id)
            prev = self.prev.get(info.id)
            self.prev[info.id] = (cpu_ns, now)
            if prev is None:
                continue
            containers.append(
                ContainerMetrics(
                    name=info.name, cpu_millis=cpu_millis(prev[0], cpu_ns, now - prev[1]), memory_bytes=mem
                )
            )
        if not containers:
            return None
        return PodMetrics(
            namespace=pod.metadata.namespace or "default",
            name=pod.metadata.name,
            uid=uid,
            containers=containers,
        )


async def publish_metrics(
    nc: NATS,
    node_name: str,
    runtime: ContainerRuntime,
    pods: Callable[[], list[Pod]],
    stop: asyncio.Event,
    interval: float = 15.0,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Publish a sample every ``interval`` seconds until ``stop`` is set (see the module docstring)."""
    with contextlib.suppress(errors.KybError, OSError):  # without it, live subscribers still get samples
        await buckets.ensure_stream(nc.jetstream(), metrics_stream_config())
    sampler = _Sampler(runtime, clock)
    subject = f"kyb.metrics.{node_name}"
    last: float | None = None
    while not stop.is_set():
        started = clock()
        try:
            seen: set[str] = set()
            node = sampler.node_usage()
            # Concurrently: the engine answers a stats request on its next collection tick
            # (about a second), so reading pods one after another would stretch the interval.
            results = await asyncio.gather(*(sampler.pod(p, seen) for p in pods()), return_exceptions=True)
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            if failed is not None:
                raise failed
            for gone in set(sampler.prev) - seen:
                del sampler.prev[gone]
            if last is not None:
                sample = Sample(
                    node=node_name,
                    timestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    window=round(started - last, 3),
                    node_usage=node,
                    pods=[r for r in results if isinstance(r, PodMetrics)],
                )
                await bus.publish(nc, subject, msgspec.json.encode(sample))
            last = started
        except (ContainerRuntimeError, errors.KybError, OSError) as e:
            log.warning("metrics sample failed", error=str(e))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, interval - (clock() - started)))
