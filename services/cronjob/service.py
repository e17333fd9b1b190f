"""The CronJob controller's async shell: informers on CronJobs and Jobs in, ``reconcile.plan``
out through the store, with time from an injectable clock (tests advance it; nothing waits for
real minutes).

Per key: read the CronJob from the store (its revision is what the status write names), confirm
with a store read that Jobs of ``status.active`` the watch does not show are really gone, plan,
delete (Replace, history), create the Job, then write the status with the new Job in
``active``: the Job's name is the scheduled minute, so a retry after a crash finds it
(AlreadyExists) instead of starting it twice. Runs as the leader's work of lease ``kyb-cronjob``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from msgspec.structs import replace
from opentelemetry.context import Context

from kyb import errors
from kyb.controller import controller_keys
from kyb.informer import Informer
from kyb.leading import run_as_leader
from kyb.shell import ControllerShell
from kyb.store import split_key
from schemas.batch import CronJob, Job
from schemas.helpers import controller_of
from services.cronjob import reconcile

SOURCE = "cronjob-controller"

cronjob_key_of = controller_keys("CronJob")


class CronJobController(ControllerShell, kind="CronJob", name="cronjob", source=SOURCE):
    """Reconciles every CronJob; see the module docstring."""

    def wire(self, nc: Any) -> None:
        self.cronjobs = self.primary
        self.jobs = self.watch(Informer(nc, "Job"), cronjob_key_of)

    async def reconcile(self, key: str, _ctx: Context | None = None) -> float | None:
        ns, name = split_key(key)
        try:
            cj: CronJob = await self.store.get("CronJob", ns, name)  # type: ignore[assignment]
        except errors.NotFound:
            return None
        uid = cj.metadata.uid or ""
        jobs: list[Job] = [j for j in self.jobs.by_index("owner", uid)
                           if (r := controller_of(j)) is not None and r.uid == uid]
        seen = {j.metadata.uid for j in jobs}
        missing = set()
        for ref in cj.status.active:
            if ref.uid not in seen:
                try:
                    await self.store.get("Job", ns, ref.name)
                except errors.NotFound:
                    missing.add(ref.name)
        plan = reconcile.plan(cj, jobs, self.clock(), frozenset(missing))
        for ev in plan.events:
            await self.event(cj, ev.reason, ev.message, ev.type)
        for job_name in plan.delete:
            with contextlib.suppress(errors.NotFound):
                await self.store.delete("Job", ns, job_name, add_finalizers=())
                await self.event(cj, "SuccessfulDelete", f"Deleted job {job_name}")
        status = plan.status
        if plan.create is not None:
            try:
                created: Job = await self.store.create(plan.create)  # type: ignore[assignment]
            except errors.AlreadyExists:
                created = await self.store.get("Job", ns, plan.create.metadata.name)  # type: ignore[assignment]
            else:
                await self.event(cj, "SuccessfulCreate", f"Created job {created.metadata.name}")
            if all(r.uid != created.metadata.uid for r in status.active):
                status = replace(status, active=[*status.active, reconcile.reference(created)])
        if status != cj.status:
            await self.store.update(replace(cj, status=status), current=cj)
        return plan.requeue_after


async def run(ctx: Any, stop: asyncio.Event) -> None:
    """Entry point for ``kyb serve cronjob``."""
    cc = CronJobController(ctx.nc, ctx.store)
    await run_as_leader(ctx, "kyb-cronjob", cc, stop)
