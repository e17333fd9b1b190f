"""Run a controller as the leader's work of a lease: the wiring every controller service shares.

A controller service starts its informers (every replica keeps a warm cache, so a standby takes
over without relisting), then campaigns for its lease in ``kyb-leases`` and runs its work only
while it holds the lease; on stop it winds the work down, releases the lease and stops the
informers. The lease timings come from the service options ``lease_seconds`` (default 15),
``renew_seconds`` (5) and ``retry_seconds`` (2), the same for every controller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from kyb.leader import LeaderElector, StartedLeading

if TYPE_CHECKING:
    from kyb.serve import ServiceContext

__all__ = ["Leadable", "elector_for", "lease_options", "run_as_leader"]


class _Runs(Protocol):
    async def run(self, stop: asyncio.Event) -> None: ...


class Leadable(Protocol):
    """What ``run_as_leader`` drives: informers to start and stop, and a controller to run."""

    controller: _Runs

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def lease_options(options: Mapping[str, Any]) -> dict[str, float]:
    """The ``LeaderElector`` timings named in a service's options (strings allowed, as from a CLI)."""
    return {
        "lease_seconds": float(options.get("lease_seconds", 15)),
        "renew_seconds": float(options.get("renew_seconds", 5)),
        "retry_seconds": float(options.get("retry_seconds", 2)),
    }


def elector_for(ctx: ServiceContext, lease_name: str) -> LeaderElector:
    """A candidate for ``lease_name`` with this process's identity and the configured timings."""
    return LeaderElector(ctx.nc, lease_name, ctx.identity, **lease_options(ctx.options))


async def run_as_leader(
    ctx: ServiceContext,
    lease_name: str,
    component: Leadable,
    stop: asyncio.Event,
    *,
    work: StartedLeading | None = None,
    **log_fields: Any,
) -> None:
    """Start ``component``, run ``work`` (default ``component.controller.run``) while holding
    ``lease_name`` until ``stop`` is set, then stop ``component`` whatever happened.
    ``log_fields`` go with the "<service> started" log line."""
    await component.start()
    try:
        elector = elector_for(ctx, lease_name)
        (ctx.log or structlog.get_logger(ctx.name)).info(f"{ctx.name} started", **log_fields)
        await elector.run(stop, work or component.controller.run)
    finally:
        await component.stop()
