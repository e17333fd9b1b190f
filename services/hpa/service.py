"""The horizontal pod autoscaler's async shell: every ``hpa_sync_period`` seconds (default 15)
each HorizontalPodAutoscaler is synced: read its target's scale (spec.replicas and selector of
a Deployment, ReplicaSet or ReplicationController), the selected pods from an informer and
their latest usage from the kubelets' samples (stream ``KYB_METRICS``), ask
:func:`services.hpa.reconcile.decide`, write the new spec.replicas with compare-and-set, then
the HPA's status. Recommendation and scale-event histories are kept in memory per HPA, as
kube-controller-manager keeps them. Runs as the leader's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from opentelemetry.context import Context

from kyb import errors
from kyb.cli.nodeclient import latest_samples
from kyb.controller import Controller
from kyb.informer import Informer, start_all, stop_all
from kyb.leading import run_as_leader
from kyb.serve import ServiceContext
from kyb.store import Store
from schemas.autoscaling import HorizontalPodAutoscaler
from schemas.helpers import pod_is_ready
from schemas.meta import Condition, Object
from schemas.pod import Pod
from schemas.quantity import cpu_millis, to_bytes
from schemas.selector import Selector, from_label_selector, from_labels
from services.hpa.reconcile import PodMetric, Recommendation, ScaleEvent, decide

SOURCE = "horizontal-pod-autoscaler"
SCALABLE = {"Deployment", "ReplicaSet", "ReplicationController"}

Usage = dict[tuple[str, str], tuple[int, int]]  # (namespace, pod) -> (cpu millis, memory bytes)


async def read_usage(nc: Any) -> Usage:
    """The latest per-pod usage from every node's last sample (empty when none yet)."""
    try:
        samples = await latest_samples(nc)
    except errors.NotFound:
        return {}
    usage: Usage = {}
    for sample in samples:
        for pod in sample.get("pods", []):
            cpu = sum(int(c.get("cpu_millis", 0)) for c in pod.get("containers", []))
            mem = sum(int(c.get("memory_bytes", 0)) for c in pod.get("containers", []))
            usage[(pod["namespace"], pod["name"])] = (cpu, mem)
    return usage


def _request(resources: Any, name: str, parse: Callable[[str], int]) -> int:
    q = resources.requests.get(name) or resources.limits.get(name)
    return parse(q) if q else 0


def pod_metric(pod: Pod, usage: Usage) -> PodMetric:
    """What the arithmetic needs of one pod: requests (0 when any container has none), readiness, usage."""
    cpus = [_request(c.resources, "cpu", cpu_millis) for c in pod.spec.containers]
    mems = [_request(c.resources, "memory", to_bytes) for c in pod.spec.containers]
    used = usage.get((pod.metadata.namespace or "default", pod.metadata.name))
    return PodMetric(
        name=pod.metadata.name,
        ready=pod.status.phase == "Running" and pod_is_ready(pod),
        cpu_request=0 if 0 in cpus else sum(cpus),
        memory_request=0 if 0 in mems else sum(mems),
        cpu=used[0] if used else None,
        memory=used[1] if used else None,
    )


def target_selector(target: Object) -> Selector:
    sel = target.spec.selector  # type: ignore[attr-defined]
    if isinstance(sel, dict):
        return from_labels(sel)
    return from_label_selector(sel)


class Autoscaler:
    """The HPA informer, the pod informer and the per-HPA histories."""

    def __init__(
        self, nc: Any, store: Store, *, sync_period: float = 15.0, workers: int = 4,
        usage: Callable[[], Awaitable[Usage]] | None = None,
        clock: Callable[[], _dt.datetime] | None = None,
    ) -> None:
        self.store = store
        self.sync_period = sync_period
        self.clock = clock or (lambda: _dt.datetime.now(_dt.UTC))
        self._usage = usage or (lambda: read_usage(nc))
        self.hpas = Informer(nc, "HorizontalPodAutoscaler")
        self.pods = Informer(nc, "Pod")
        self.recommendations: dict[str, list[Recommendation]] = {}
        self.scale_events: dict[str, list[ScaleEvent]] = {}
        self.controller = Controller("hpa", self.reconcile, workers=workers, keys=self.hpas.keys,
                                     resync_seconds=max(sync_period * 4, 30))
        self.hpas.add_handler(self._on_hpa)

    async def start(self, timeout: float = 30) -> None:
        await start_all((self.hpas, self.pods), timeout)

    async def stop(self) -> None:
        await stop_all((self.hpas, self.pods))

    def _on_hpa(self, event: str, new: Object | None, old: Object | None, headers: dict[str, str]) -> None:
        if new is not None and old is not None and new.metadata.generation == old.metadata.generation:
            return  # our own status write: the next sync comes on schedule
        obj = new or old
        assert obj is not None
        self.controller.enqueue_from_headers(f"{obj.metadata.namespace or 'default'}.{obj.metadata.name}", headers)

    async def reconcile(self, key: str, ctx: Context | None = None) -> float | None:
        hpa = self.hpas.get(key)
        if hpa is None:
            self.recommendations.pop(key, None)
            self.scale_events.pop(key, None)
            return None
        assert isinstance(hpa, HorizontalPodAutoscaler)
        await self.sync(key, hpa)
        return self.sync_period

    async def sync(self, key: str, hpa: HorizontalPodAutoscaler) -> None:
        ns = hpa.metadata.namespace or "default"
        ref = hpa.spec.scaleTargetRef
        now = self.clock()
        if ref.kind not in SCALABLE:
            await self._failed(hpa, "FailedGetScale", f'the HPA controller was unable to get the target\'s current scale: '
                                                      f'no scale subresource for kind "{ref.kind}"')
            return
        try:
            target = await self.store.get(ref.kind, ns, ref.name)
        except errors.NotFound:
            await self._failed(hpa, "FailedGetScale", "the HPA controller was unable to get the target's current scale: "
                                                      f'{ref.kind.lower()}s "{ref.name}" not found')
            return
        selector = target_selector(target)
        pods = [
            p for p in self.pods.list(ns)
            if selector.matches(p.metadata.labels) and p.metadata.deletionTimestamp is None
            and p.status.phase not in ("Succeeded", "Failed")  # type: ignore[attr-defined]
        ]
        usage = await self._usage()
        current = int(target.spec.replicas)  # type: ignore[attr-defined]
        d = decide(hpa, current, [pod_metric(p, usage) for p in pods], self.recommendations.get(key, []),  # type: ignore[arg-type]
                   self.scale_events.get(key, []), now)
        self.recommendations[key] = d.recommendations
        status = d.status
        if d.scale_to is not None:
            scaled = msgspec.structs.replace(target, spec=msgspec.structs.replace(target.spec, replicas=d.scale_to))  # type: ignore[attr-defined]
            try:
                await self.store.update(scaled, current=target)  # CAS at the revision read
            except errors.Conflict:
                raise  # re-read the scale and decide again
            self.scale_events[key] = d.events
            await self.store.record_event(hpa, "SuccessfulRescale", f"New size: {d.scale_to}; reason: {d.reason}",
                                          source=SOURCE)
        await self._write_status(hpa, status)

    async def _failed(self, hpa: HorizontalPodAutoscaler, reason: str, message: str) -> None:
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        conds = [c for c in hpa.status.conditions if c.type != "AbleToScale"]
        prev = next((c for c in hpa.status.conditions if c.type == "AbleToScale"), None)
        since = prev.lastTransitionTime if prev is not None and prev.status == "False" else stamp
        conds.insert(0, Condition(type="AbleToScale", status="False", reason=reason, message=message,
                                  lastTransitionTime=since))
        await self._write_status(hpa, msgspec.structs.replace(hpa.status, conditions=conds))
        if prev is None or prev.reason != reason:
            await self.store.record_event(hpa, reason, message, type="Warning", source=SOURCE)

    async def _write_status(self, hpa: HorizontalPodAutoscaler, status: Any) -> None:
        def fn(current: Object) -> Object | None:
            if current.metadata.uid != hpa.metadata.uid or current.status == status:  # type: ignore[attr-defined]
                return None
            return msgspec.structs.replace(current, status=status)

        with contextlib.suppress(errors.NotFound):
            await self.store.mutate("HorizontalPodAutoscaler", hpa.metadata.namespace, hpa.metadata.name, fn)


async def run(ctx: ServiceContext, stop: asyncio.Event) -> None:
    opts = ctx.options
    scaler = Autoscaler(ctx.nc, ctx.store, sync_period=float(opts.get("hpa_sync_period", 15)),
                        workers=int(opts.get("hpa_workers", 4)))
    await run_as_leader(ctx, "kyb-hpa", scaler, stop, sync_period=scaler.sync_period)
