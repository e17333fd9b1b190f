"""The Job controller's async shell: informers on Jobs and Pods in, ``reconcile.plan`` out
through the store.

Per Job key: read the Job from the store (its revision is what every status write names),
give it the generated selector on first sight, compute the plan from the cached pods, then
write in the order that keeps counting exact: the Job (status + uncounted set) first, then
finalizer removals, then pod deletions and creations. Pods created or deleted but not yet
seen by the pod informer are *expected*; the Job waits for them before planning again, so
a slow watch never leads to extra pods. Runs as the leader's work of lease ``kyb-job``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from msgspec.structs import replace
from opentelemetry.context import Context

from kyb import errors
from kyb.controller import controller_keys
from kyb.informer import Informer
from kyb.leading import run_as_leader
from kyb.shell import ControllerShell
from kyb.store import split_key
from schemas.batch import Job
from schemas.helpers import controller_of
from schemas.meta import Object
from schemas.pod import Pod
from services.job import reconcile
from services.job.reconcile import FINALIZER, Settings

SOURCE = "job-controller"

log = structlog.get_logger("job")


job_key_of_pod = controller_keys("Job")  # by name: it survives the Job's deletion


class JobController(ControllerShell, kind="Job", name="job", source=SOURCE, settings=Settings):
    """Reconciles every Job; see the module docstring."""

    settings: Settings

    def wire(self, nc: Any) -> None:
        self.jobs = self.primary
        self.pods = self.watch(Informer(nc, "Pod", indexers={"job": job_key_of_pod}), job_key_of_pod)


    # -- one reconcile ----------------------------------------------------------------------

    async def reconcile(self, key: str, _ctx: Context | None = None) -> float | None:
        ns, name = split_key(key)
        if not self.caught_up(key, self.pods):
            return 0.1
        try:
            job: Job = await self.store.get("Job", ns, name)  # type: ignore[assignment]
        except errors.NotFound:
            self.expectations.forget(key)
            await self._release_orphans(key, None)
            return None
        if job.metadata.deletionTimestamp is not None:
            await self._release_orphans(key, None)
            return None
        fixed = reconcile.with_generated_selector(job)
        if fixed is not None:
            job = await self.store.update(fixed, current=job)  # type: ignore[assignment]
        uid = job.metadata.uid or ""
        await self._release_orphans(key, uid)
        pods: list[Pod] = [p for p in self.pods.by_index("owner", uid) if _controlled_by(p, uid)]
        plan = reconcile.plan(job, pods, self.clock(), self.settings)

        new_meta = reconcile.write_uncounted(job.metadata, plan.uncounted)
        if plan.status != job.status or new_meta != job.metadata:
            job = await self.store.update(replace(job, metadata=new_meta, status=plan.status), current=job)  # type: ignore[assignment]
        for ev in plan.events:
            await self.event(job, ev.reason, ev.message, ev.type)

        await asyncio.gather(*(self._remove_finalizer(ns, n) for n in plan.release))
        deleted = [n for n in await asyncio.gather(*(self._delete_pod(job, n, False) for n in plan.delete)) if n]
        deleted += [n for n in await asyncio.gather(*(self._delete_pod(job, n, True) for n in plan.discard)) if n]
        created = [n for n in await asyncio.gather(*(self._create_pod(job, p) for p in plan.create)) if n]
        self.expect(key, creating=created, deleting=deleted)
        if plan.delete_job:
            with contextlib.suppress(errors.NotFound):
                await self.store.delete("Job", ns, name, resource_version=job.metadata.resourceVersion)
            self.expectations.forget(key)
            return None
        return plan.requeue_after

    # -- writes --------------------------------------------------------------------------------

    async def _create_pod(self, job: Job, pod: Pod) -> str | None:
        return await self.create(job, pod, lambda created: f"Created pod: {created.metadata.name}")

    async def _delete_pod(self, job: Job, name: str, release_first: bool) -> str | None:
        if release_first:  # a pod already gone: the delete below answers None
            await self._remove_finalizer(job.metadata.namespace, name, unless_finished=True)
        return await self.delete(job, "Pod", name, f"Deleted pod: {name}")

    async def _remove_finalizer(self, ns: str | None, name: str, *, unless_finished: bool = False) -> None:
        """``unless_finished``: a pod discarded uncounted (suspend, excess, TTL) as the cache
        showed it running keeps its finalizer if the stored pod has finished meanwhile, so its
        result is recorded like any other instead of being lost."""

        def drop(pod: Object) -> Object | None:
            if FINALIZER not in pod.metadata.finalizers:
                return None
            if unless_finished and reconcile.is_terminal(pod):  # type: ignore[arg-type]
                return None
            finalizers = [f for f in pod.metadata.finalizers if f != FINALIZER]
            return replace(pod, metadata=replace(pod.metadata, finalizers=finalizers))

        with contextlib.suppress(errors.NotFound):
            pod = await self.store.mutate("Pod", ns, name, drop)
            if pod.metadata.deletionTimestamp and pod.status.phase in ("Succeeded", "Failed"):  # type: ignore[attr-defined]
                # A terminal pod runs nothing: once released it may go at once.
                await self.store.delete("Pod", ns, name, grace_period_seconds=0)

    async def _release_orphans(self, key: str, uid: str | None) -> None:
        """Tracking finalizers of pods whose Job is gone (or was replaced) are removed."""
        ns = split_key(key)[0]
        for pod in self.pods.by_index("job", key):
            ref = controller_of(pod)
            if FINALIZER in pod.metadata.finalizers and ref is not None and ref.uid != uid:
                await self._remove_finalizer(ns, pod.metadata.name)


def _controlled_by(pod: Object, uid: str) -> bool:
    ref = controller_of(pod)
    return ref is not None and ref.uid == uid


def settings_from(options: dict[str, Any]) -> Settings:
    base = Settings()
    return Settings(
        backoff_base=float(options.get("job_backoff_seconds", base.backoff_base)),
        backoff_cap=float(options.get("job_backoff_cap_seconds", base.backoff_cap)),
    )


async def run(ctx: Any, stop: asyncio.Event) -> None:
    """Entry point for ``kyb serve job``."""
    jc = JobController(ctx.nc, ctx.store, settings=settings_from(ctx.options))
    await run_as_leader(ctx, "kyb-job", jc, stop)
