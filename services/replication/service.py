"""The replication service: keeps ReplicaSets and ReplicationControllers at spec.replicas pods.

Informers on ReplicaSets, ReplicationControllers and Pods feed one controller whose keys are
``<Kind>/<namespace>.<name>``. Pod events enqueue the pod's controller (or, for an orphan,
every owner of its namespace whose selector matches) and settle the in-memory expectations;
the worker re-reads the caches, asks :func:`services.replication.reconcile.reconcile` what to
do and applies it through the store with compare-and-set writes. Runs as the leader's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
from typing import Any

import msgspec
from opentelemetry.context import Context

from kyb import controllerref, errors
from kyb.controller import Controller
from kyb.expectations import Expectations
from kyb.informer import Informer, start_all, stop_all
from kyb.leading import run_as_leader
from kyb.serve import ServiceContext
from kyb.store import Store
from schemas.helpers import controller_of, object_key
from schemas.meta import Object
from schemas.pod import Pod
from services.replication.reconcile import (
    Owner,
    Workload,
    adopted,
    pod_from_template,
    reconcile,
    released,
    slow_start_batches,
    with_replica_failure,
)

SOURCE = "replicaset-controller"
KINDS = ("ReplicaSet", "ReplicationController")
EXPECTATIONS_TTL = 300.0  # seconds after which unmet expectations are dropped (a lost watch event)


def _orphan_namespace(pod: Object) -> list[str]:
    """Index of the pods no controller holds, by namespace (those an owner may adopt)."""
    return [pod.metadata.namespace or "default"] if controller_of(pod) is None else []


def owner_key(kind: str, namespace: str | None, name: str) -> str:
    return f"{kind}/{namespace or 'default'}.{name}"


def split_owner_key(key: str) -> tuple[str, str, str]:
    kind, _, rest = key.partition("/")
    ns, _, name = rest.partition(".")
    return kind, ns, name


class Replication:
    """Informers, expectations and the reconcile that applies plans."""

    def __init__(self, nc: Any, store: Store, *, workers: int = 4, clock: Any = None) -> None:
        self.nc = nc
        self.store = store
        self.clock = clock or (lambda: _dt.datetime.now(_dt.UTC))
        self.owners = {kind: Informer(nc, kind) for kind in KINDS}
        self.pods = Informer(nc, "Pod", indexers={"orphan": _orphan_namespace})
        self.expectations = Expectations(EXPECTATIONS_TTL)
        self.controller = Controller("replication", self.reconcile, workers=workers, keys=self.keys)
        for inf in self.owners.values():
            inf.add_handler(self._on_owner)
        self.pods.add_handler(self._on_pod)

    # -- informers --------------------------------------------------------------------------

    async def start(self, timeout: float = 30) -> None:
        await start_all((*self.owners.values(), self.pods), timeout)

    async def stop(self) -> None:
        await stop_all((*self.owners.values(), self.pods))

    def keys(self) -> list[str]:
        return [
            owner_key(o.kind, o.metadata.namespace, o.metadata.name)
            for inf in self.owners.values()
            for o in inf.list()
        ]

    def _on_owner(self, event: str, new: Object | None, old: Object | None, headers: dict[str, str]) -> None:
        obj = new or old
        if obj is not None:
            self.controller.enqueue_from_headers(
                owner_key(obj.kind, obj.metadata.namespace, obj.metadata.name), headers
            )

    def _on_pod(self, event: str, new: Object | None, old: Object | None, headers: dict[str, str]) -> None:
        if event == "ADDED" and new is not None:
            ref = controller_of(new)
            if ref is not None and ref.kind in KINDS:
                self.expectations.creation_observed(owner_key(ref.kind, new.metadata.namespace, ref.name))
        gone = event == "DELETED" or (
            new is not None
            and new.metadata.deletionTimestamp is not None
            and (old is None or old.metadata.deletionTimestamp is None)
        )
        if gone:
            pod = new or old
            assert pod is not None
            ref = controller_of(pod)
            if ref is not None and ref.kind in KINDS:
                self.expectations.deletion_observed(
                    owner_key(ref.kind, pod.metadata.namespace, ref.name), pod.metadata.name
                )
        for key in self._owners_of(new, old):
            self.controller.enqueue_from_headers(key, headers)

    def _owners_of(self, new: Object | None, old: Object | None) -> set[str]:
        keys: set[str] = set()
        for pod in (new, old):
            if pod is None:
                continue
            ref = controller_of(pod)
            if ref is not None:
                if ref.kind in KINDS:
                    keys.add(owner_key(ref.kind, pod.metadata.namespace, ref.name))
                continue
            for inf in self.owners.values():
                for owner in inf.list(pod.metadata.namespace or "default"):
                    if Owner.of(owner).selector.matches(pod.metadata.labels):
                        keys.add(owner_key(owner.kind, owner.metadata.namespace, owner.metadata.name))
        return keys

    # -- reconcile --------------------------------------------------------------------------

    async def reconcile(self, key: str, ctx: Context | None = None) -> float | None:
        kind, ns, name = split_owner_key(key)
        obj: Workload | None = self.owners[kind].get_by_name(ns, name)  # type: ignore[assignment]
        if obj is None:
            self.expectations.forget(key)
            return None
        now = self.clock()
        pods = self.candidates(ns, obj.metadata.uid or "")
        plan = reconcile(obj, pods, self.expectations.satisfied(key, now.timestamp()), now)  # type: ignore[arg-type]
        owner = Owner.of(obj)
        if plan.adopt:
            await self._can_adopt(obj)
        await asyncio.gather(
            *(self._claim(ns, n, owner, adopt=True) for n in plan.adopt),
            *(self._claim(ns, n, owner, adopt=False) for n in plan.release),
        )
        failure: errors.KybError | None = None
        reason: str | None = None
        try:
            if plan.create:
                reason = "FailedCreate"
                await self._create(key, obj, owner, plan.create, now)
            if plan.delete:
                reason = "FailedDelete"
                await self._delete(key, obj, ns, plan.delete, now)
        except errors.KybError as e:
            failure = e
        status = with_replica_failure(
            plan.status or obj.status, reason if failure else None, str(failure or ""), now
        )
        if status != obj.status:
            await self._write_status(obj, status)
        if failure is not None:
            raise failure
        return plan.requeue_after

    def candidates(self, ns: str, uid: str) -> list[Object]:
        """The pods of ``ns`` the owner ``uid`` may claim: those referring to it and the orphans.
        A pod another controller holds is never claimed (kyb.controllerref), so it is left out."""
        found = {object_key(p): p for p in self.pods.by_index("owner", uid)}
        for p in self.pods.by_index("orphan", ns):
            found.setdefault(object_key(p), p)
        return list(found.values())

    async def _can_adopt(self, obj: Workload) -> None:
        """Kubernetes' canAdopt: never adopt for an owner that is gone or being deleted, however
        stale the cache that said otherwise (a fresh read; Conflict re-queues the key)."""
        try:
            fresh = await self.store.get(obj.kind, obj.metadata.namespace, obj.metadata.name)
        except errors.NotFound:
            fresh = None
        why = controllerref.may_adopt(fresh, Owner.of(obj).controller())
        if why is not None:
            raise errors.Conflict(f'{obj.kind} "{obj.metadata.name}" {why}: not adopting')

    async def _claim(self, ns: str, pod_name: str, owner: Owner, *, adopt: bool) -> None:
        change = adopted if adopt else released
        with contextlib.suppress(errors.NotFound):
            await self.store.mutate("Pod", ns, pod_name, lambda pod: change(pod, owner))  # type: ignore[arg-type]

    async def _create(self, key: str, obj: Workload, owner: Owner, count: int, now: _dt.datetime) -> None:
        self.expectations.expect(key, now.timestamp(), adds=count)
        pod = pod_from_template(owner, now)
        recording: list[asyncio.Task] = []  # events go out beside the next batch, not before it
        try:
            await self._create_batches(key, obj, pod, count, recording)
        finally:
            await asyncio.gather(*recording, return_exceptions=True)

    async def _create_batches(self, key: str, obj: Workload, pod: Pod, count: int,
                              recording: list[asyncio.Task]) -> None:
        created = 0
        for batch in slow_start_batches(count):
            results = await asyncio.gather(
                *(self._create_one(pod) for _ in range(batch)), return_exceptions=True
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            created += batch - len(failures)
            recording += [
                asyncio.create_task(self.store.record_event(
                    obj, "SuccessfulCreate", f"Created pod: {r.metadata.name}", source=SOURCE, nc=self.nc
                ))
                for r in results
                if not isinstance(r, BaseException)
            ]
            if failures:
                self.expectations.creation_skipped(key, count - created)
                err = failures[0]
                await self.store.record_event(
                    obj, "FailedCreate", f"Error creating: {err}", type="Warning", source=SOURCE
                )
                if isinstance(err, errors.KybError):
                    raise err
                raise errors.Temporary(f"creating pods for {key}: {err}") from err

    async def _create_one(self, pod: Pod) -> Object:
        """Create ``pod`` under ``<generateName><5 random chars>``: the store draws the name and
        draws again on a clash, as the apiserver does for generateName."""
        return await self.store.create(pod)

    async def _delete(self, key: str, obj: Workload, ns: str, names: list[str], now: _dt.datetime) -> None:
        self.expectations.expect(key, now.timestamp(), deleting=names)

        async def one(pod_name: str) -> BaseException | None:
            try:
                await self.store.delete("Pod", ns, pod_name)
            except errors.NotFound:
                self.expectations.deletion_observed(key, pod_name)
                return None
            except errors.KybError as e:
                self.expectations.deletion_observed(key, pod_name)
                return e
            await self.store.record_event(
                obj, "SuccessfulDelete", f"Deleted pod: {pod_name}", source=SOURCE, nc=self.nc
            )
            return None

        failures = [e for e in await asyncio.gather(*(one(n) for n in names)) if e is not None]
        if failures:
            raise failures[0]

    async def _write_status(self, obj: Workload, status: Any) -> None:
        """Write ``status`` at the revision read; only a lost compare-and-set reads afresh."""
        try:
            # the cached object is the stored one at its revision: no read before the write
            await self.store.update(msgspec.structs.replace(obj, status=status), current=obj)
            return
        except errors.NotFound:
            return
        except errors.Conflict:
            pass

        def fn(current: Object) -> Object | None:
            if current.metadata.uid != obj.metadata.uid or current.status == status:  # type: ignore[attr-defined]
                return None
            return msgspec.structs.replace(current, status=status)

        with contextlib.suppress(errors.NotFound):
            await self.store.mutate(obj.kind, obj.metadata.namespace, obj.metadata.name, fn)


async def run(ctx: ServiceContext, stop: asyncio.Event) -> None:
    opts = ctx.options
    replication = Replication(ctx.nc, ctx.store, workers=int(opts.get("replication_workers", 8)))
    await run_as_leader(ctx, "kyb-replication", replication, stop)
