"""The clusterrole-aggregation controller (kube-controller-manager's): keeps the ``rules`` of
every ClusterRole with an ``aggregationRule`` equal to the union of the rules of the
ClusterRoles its selectors match (:func:`services.clusterroleaggregation.reconcile.aggregated_rules`).
One informer on ClusterRoles; any change enqueues every aggregated role; the worker re-reads the
role from the cache and writes its rules with compare-and-set. Runs as the leader's work of
lease ``kyb-clusterroleaggregation``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from msgspec.structs import replace
from opentelemetry.context import Context

from kyb import errors
from kyb.controller import Controller
from kyb.informer import Informer, start_all, stop_all
from kyb.leading import run_as_leader
from kyb.store import Store, split_key
from schemas.helpers import scoped_key
from schemas.meta import Object
from schemas.rbac import ClusterRole
from services.clusterroleaggregation.reconcile import aggregated_rules, aggregating


class AggregationController:
    """Reconciles the rules of aggregated ClusterRoles; see the module docstring."""

    def __init__(self, nc: Any, store: Store, *, workers: int = 2) -> None:
        self.store = store
        self.roles = Informer(nc, "ClusterRole")
        self.controller = Controller("clusterroleaggregation", self.reconcile, workers=workers, keys=self._aggregating)
        # any ClusterRole's change may change what an aggregated one should hold
        self.roles.add_handler(self.controller.handler(lambda _role: self._aggregating()))

    def _aggregating(self) -> list[str]:
        return [scoped_key(False, None, name) for name in aggregating(self._all())]

    def _all(self) -> list[ClusterRole]:
        return [r for r in self.roles.list() if isinstance(r, ClusterRole)]

    async def start(self) -> None:
        await start_all([self.roles])

    async def stop(self) -> None:
        await stop_all([self.roles])

    async def reconcile(self, key: str, _ctx: Context | None = None) -> float | None:
        role = self.roles.get(key)
        if not isinstance(role, ClusterRole):
            return None
        rules = aggregated_rules(role, self._all())
        if rules is None or rules == (role.rules or []):
            return None

        def change(current: Object) -> Object | None:
            if not isinstance(current, ClusterRole) or current.metadata.uid != role.metadata.uid:
                return None
            if current.aggregationRule != role.aggregationRule:
                return None  # a newer rule: its own watch event brings it back
            return None if (current.rules or []) == rules else replace(current, rules=rules)

        with contextlib.suppress(errors.NotFound):
            await self.store.mutate("ClusterRole", None, split_key(key)[1], change)
        return None


async def run(ctx: Any, stop: asyncio.Event) -> None:
    """Entry point for ``kyb serve clusterroleaggregation``."""
    await run_as_leader(ctx, "kyb-clusterroleaggregation", AggregationController(ctx.nc, ctx.store), stop)
