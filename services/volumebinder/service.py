"""The volume binder's async shell: informers on claims, volumes, classes, pods and nodes feed
one controller; each key is re-read from the caches, planned by
:mod:`services.volumebinder.reconcile` and applied with compare-and-set writes.

Keys are ``pvc/<namespace>.<name>`` and ``pv/<name>``. A binding writes the volume first (at
the revision the plan saw) and then the claim; a lost race is a Conflict, retried from the
latest state. Local-path volumes live in ``<volume_dir>/<node>/<pv name>``; the binder creates
the directory when it can see it (one machine) and the kubelet creates it otherwise
(``DirectoryOrCreate``). Runs as the leader's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import msgspec
from opentelemetry.context import Context

from kyb import errors
from kyb.controller import Controller
from kyb.informer import Informer, start_all, stop_all
from kyb.leading import run_as_leader
from kyb.serve import ServiceContext
from kyb.store import Store
from schemas.core import PersistentVolume, PersistentVolumeClaim
from schemas.meta import Object
from schemas.pod import Pod
from services.volumebinder.reconcile import (
    PV_PROTECTION,
    PVC_PROTECTION,
    ClaimPlan,
    bound_claim,
    bound_volume,
    plan_claim,
    plan_volume,
    pod_claims,
    released_volume,
)

SOURCE = "persistentvolume-controller"


def default_volume_dir(options: dict[str, Any]) -> str:
    if options.get("volume_dir"):
        return str(options["volume_dir"])
    if options.get("data_dir"):
        return str(Path(options["data_dir"]).expanduser() / "volumes")
    return str(Path(tempfile.gettempdir()) / "kyb-volumes")


def _claims_of_pod(pod: Object) -> list[str]:
    ns = pod.metadata.namespace or "default"
    return [f"{ns}/{name}" for name in pod_claims(pod)]  # type: ignore[arg-type]


class VolumeBinder:
    """Informers and the reconcile that applies claim and volume plans."""

    def __init__(self, nc: Any, store: Store, *, volume_dir: str, workers: int = 4, resync: float = 30) -> None:
        self.store = store
        self.volume_dir = volume_dir
        self.claims = Informer(nc, "PersistentVolumeClaim")
        self.volumes = Informer(nc, "PersistentVolume")
        self.classes = Informer(nc, "StorageClass")
        self.pods = Informer(nc, "Pod", indexers={"claim": _claims_of_pod})
        self.nodes = Informer(nc, "Node")
        self.controller = Controller("volumebinder", self.reconcile, workers=workers, keys=self.keys,
                                     resync_seconds=resync)
        self.claims.add_handler(self._on_claim)
        self.volumes.add_handler(self._on_volume)
        self.classes.add_handler(self._on_class_or_node)
        self.nodes.add_handler(self._on_class_or_node)
        self.pods.add_handler(self._on_pod)

    @property
    def informers(self) -> tuple[Informer, ...]:
        return (self.claims, self.volumes, self.classes, self.pods, self.nodes)

    async def start(self, timeout: float = 30) -> None:
        await start_all(self.informers, timeout)

    async def stop(self) -> None:
        await stop_all(self.informers)

    def keys(self) -> list[str]:
        return [f"pvc/{k}" for k in self.claims.keys()] + [f"pv/{k.partition('.')[2]}" for k in self.volumes.keys()]

    # -- handlers: only enqueue keys ------------------------------------------------------

    def _on_claim(self, event: str, new: Object | None, old: Object | None, headers: dict[str, str]) -> None:
        obj = new or old
        assert obj is not None
        self.controller.enqueue_from_headers(f"pvc/{obj.metadata.namespace or 'default'}.{obj.metadata.name}", headers)
        name = getattr(obj.spec, "volumeName", "")
        if name:
            self.controller.enqueue_from_headers(f"pv/{name}", headers)
        for pv in self.volumes.list():
            ref = pv.spec.claimRef  # type: ignore[attr-defined]
            if ref is not None and ref.name == obj.metadata.name and ref.namespace == obj.metadata.namespace:
                self.controller.enqueue_from_headers(f"pv/{pv.metadata.name}", headers)

    def _on_volume(self, event: str, new: Object | None, old: Object | None, headers: dict[str, str]) -> None:
        obj = new or old
        assert obj is not None
        self.controller.enqueue_from_headers(f"pv/{obj.metadata.name}", headers)
        for o in (new, old):
            ref = o.spec.claimRef if o is not None else None  # type: ignore[attr-defined]
            if ref is not None:
                self.controller.enqueue_from_headers(f"pvc/{ref.namespace or 'default'}.{ref.name}", headers)
        if event == "DELETED" or (new is not None and new.spec.claimRef is None):  # type: ignore[attr-defined]
            for key in self.claims.keys():  # room for claims still waiting
                claim = self.claims.get(key)
                if claim is not None and claim.status.phase == "Pending":  # type: ignore[attr-defined]
                    self.controller.enqueue(f"pvc/{key}")

    def _on_class_or_node(self, event: str, new: Object | None, old: Object | None, headers: dict[str, str]) -> None:
        for key in self.claims.keys():
            claim = self.claims.get(key)
            if claim is not None and claim.status.phase != "Bound":  # type: ignore[attr-defined]
                self.controller.enqueue(f"pvc/{key}")

    def _on_pod(self, event: str, new: Object | None, old: Object | None, headers: dict[str, str]) -> None:
        keys = {k for p in (new, old) if p is not None for k in _claims_of_pod(p)}
        for k in keys:
            self.controller.enqueue_from_headers("pvc/" + k.replace("/", ".", 1), headers)

    # -- reconcile ------------------------------------------------------------------------

    async def reconcile(self, key: str, ctx: Context | None = None) -> float | None:
        kind, _, rest = key.partition("/")
        if kind == "pvc":
            ns, _, name = rest.partition(".")
            claim = self.claims.get_by_name(ns, name)
            if claim is not None:
                await self._reconcile_claim(claim)  # type: ignore[arg-type]
        else:
            pv = self.volumes.get_by_name(None, rest)
            if pv is not None:
                await self._reconcile_volume(pv)  # type: ignore[arg-type]
        return None

    def _snapshot(self, namespace: str) -> tuple[dict[str, PersistentVolume], dict[str, Any], list[Pod]]:
        volumes = {v.metadata.name: v for v in self.volumes.list()}
        classes = {c.metadata.name: c for c in self.classes.list()}
        pods = self.pods.list(namespace)
        return volumes, classes, pods  # type: ignore[return-value]

    async def _reconcile_claim(self, claim: PersistentVolumeClaim) -> None:
        ns = claim.metadata.namespace or "default"
        volumes, classes, pods = self._snapshot(ns)
        plan = plan_claim(claim, volumes, classes, pods, self.nodes.list(), volume_root=self.volume_dir)  # type: ignore[arg-type]
        if plan.remove_finalizer:
            await self._write_claim(claim, lambda c: _without_finalizer(c, PVC_PROTECTION))
            return
        if plan.set_class is not None or plan.add_finalizer:
            claim = await self._write_claim(claim, lambda c: _claim_defaults(c, plan))
        if plan.provision is not None:
            await self._provision(claim, plan)
            return
        if plan.bind_volume is not None:
            pv = volumes[plan.bind_volume]
            # Step 1, at the volume's revision: only one claim can win it.
            await self.store.update(bound_volume(pv, claim), current=pv)
        if plan.bind_claim is not None:
            pv = await self.store.get("PersistentVolume", None, plan.bind_claim)
            ref = pv.spec.claimRef
            if ref is None or ref.uid != claim.metadata.uid:
                raise errors.Conflict(f'persistentvolume "{pv.metadata.name}" went to another claim')
            await self._write_claim(claim, lambda c: bound_claim(c, pv))
            await self.store.record_event(claim, "Bound", f"Bound to volume {pv.metadata.name}", source=SOURCE)
            return
        if plan.phase is not None:
            await self._write_claim(claim, lambda c: _with_phase(c, plan.phase))
            if plan.phase == "Lost":
                await self.store.record_event(claim, "ClaimLost", plan.message, type="Warning", source=SOURCE)
        if plan.message and (plan.add_finalizer or plan.phase is not None) and plan.phase != "Lost":
            await self.store.record_event(claim, _waiting_reason(plan.message), plan.message, source=SOURCE)

    async def _write_claim(self, claim: PersistentVolumeClaim, fn: Any) -> PersistentVolumeClaim:
        """CAS at the revision read from the cache; a stale cache is a Conflict (retried)."""
        new = fn(claim)
        if new is None or new == claim:
            return claim
        return await self.store.update(new, current=claim)  # type: ignore[return-value]

    async def _provision(self, claim: PersistentVolumeClaim, plan: ClaimPlan) -> None:
        prov = plan.provision
        assert prov is not None
        with contextlib.suppress(OSError):
            await asyncio.to_thread(Path(prov.path).mkdir, parents=True, exist_ok=True)
        try:
            await self.store.create(prov.volume)
        except errors.AlreadyExists:
            return
        await self.store.record_event(
            claim, "ProvisioningSucceeded",
            f"Successfully provisioned volume {prov.volume.metadata.name} on node {prov.node}", source=SOURCE,
        )

    async def _reconcile_volume(self, pv: PersistentVolume) -> None:
        claims = {f"{c.metadata.namespace or 'default'}/{c.metadata.name}": c for c in self.claims.list()}
        plan = plan_volume(pv, claims)  # type: ignore[arg-type]
        if plan.delete:
            if plan.remove_path:
                await asyncio.to_thread(shutil.rmtree, plan.remove_path, True)
            if PV_PROTECTION in pv.metadata.finalizers:
                pv = await self.store.update(_without_finalizer(pv, PV_PROTECTION), current=pv)  # type: ignore[assignment]
                if pv.metadata.deletionTimestamp is not None and not pv.metadata.finalizers:
                    return  # that update removed it
            if pv.metadata.deletionTimestamp is None:
                with contextlib.suppress(errors.NotFound):
                    await self.store.delete("PersistentVolume", None, pv.metadata.name,
                                            resource_version=pv.metadata.resourceVersion)
            await self.store.record_event(pv, "VolumeDeleted", "The claim bound to this volume was deleted; "
                                          "reclaim policy Delete", source=SOURCE)
            return
        new = pv
        if plan.remove_finalizer:
            new = _without_finalizer(new, PV_PROTECTION)
        if plan.add_finalizer:
            new = msgspec.structs.replace(
                new, metadata=msgspec.structs.replace(new.metadata, finalizers=[*new.metadata.finalizers, PV_PROTECTION])
            )
        if plan.clear_claim_ref:
            new = released_volume(new)
        if plan.phase is not None:
            new = msgspec.structs.replace(new, status=msgspec.structs.replace(new.status, phase=plan.phase))
        if new != pv:
            await self.store.update(new, current=pv)
            if plan.phase == "Released":
                await self.store.record_event(pv, "VolumeReleased", "The claim bound to this volume was deleted",
                                              source=SOURCE)


def _without_finalizer(obj: Any, finalizer: str) -> Any:
    if finalizer not in obj.metadata.finalizers:
        return obj
    return msgspec.structs.replace(
        obj, metadata=msgspec.structs.replace(obj.metadata, finalizers=[f for f in obj.metadata.finalizers if f != finalizer])
    )


def _claim_defaults(claim: PersistentVolumeClaim, plan: ClaimPlan) -> PersistentVolumeClaim:
    meta, spec = claim.metadata, claim.spec
    if plan.add_finalizer and PVC_PROTECTION not in meta.finalizers:
        meta = msgspec.structs.replace(meta, finalizers=[*meta.finalizers, PVC_PROTECTION])
    if plan.set_class is not None and spec.storageClassName is None:
        spec = msgspec.structs.replace(spec, storageClassName=plan.set_class)
    return msgspec.structs.replace(claim, metadata=meta, spec=spec)


def _with_phase(claim: PersistentVolumeClaim, phase: str) -> PersistentVolumeClaim:
    return msgspec.structs.replace(claim, status=msgspec.structs.replace(claim.status, phase=phase))


def _waiting_reason(message: str) -> str:
    if message.startswith("waiting for first consumer"):
        return "WaitForFirstConsumer"
    if message.startswith("waiting for a volume to be created"):
        return "ExternalProvisioning"
    return "FailedBinding"


async def run(ctx: ServiceContext, stop: asyncio.Event) -> None:
    opts = ctx.options
    binder = VolumeBinder(
        ctx.nc, ctx.store, volume_dir=default_volume_dir(opts), workers=int(opts.get("volumebinder_workers", 4)),
        resync=float(opts.get("volumebinder_resync", 30)),
    )
    await run_as_leader(ctx, "kyb-volumebinder", binder, stop, volume_dir=binder.volume_dir)
