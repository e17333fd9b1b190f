"""What the volume binder decides, as pure functions of a snapshot of claims, volumes, classes,
pods and nodes: which PersistentVolume a claim binds to, when to provision one, which phase
each side is in, and when the protection finalizers may go.

Binding is written in two compare-and-set steps, the volume first (``claimRef`` with the
claim's uid), then the claim (``spec.volumeName``, phase Bound). The functions here read any
state in between as "pre-bound" and finish the job, so a crash between the two writes is
repaired on the next pass, and two binders racing for one volume cannot both win: only one
``claimRef`` write succeeds at the volume's revision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from schemas import classes as classes_rule
from schemas.core import (
    HostPathPV,
    Node,
    PersistentVolume,
    PersistentVolumeClaim,
    PersistentVolumeSpec,
    VolumeNodeAffinity,
)
from schemas.meta import ObjectMeta, ObjectReference
from schemas.pod import NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod
from schemas.quantity import to_bytes
from schemas.selector import SelectorError, from_label_selector
from schemas.storage import StorageClass

LOCAL_PATH = "kybernetes.io/local-path"
HOSTNAME_LABEL = "kubernetes.io/hostname"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"


class Provision(msgspec.Struct, kw_only=True, frozen=True):
    """A local-path volume to create for a claim on ``node`` (already pre-bound to it)."""

    volume: PersistentVolume
    node: str
    path: str


class ClaimPlan(msgspec.Struct, kw_only=True, frozen=True):
    """What to write for one claim, applied in field order."""

    set_class: str | None = None  # the default class, written into an unset storageClassName
    add_finalizer: bool = False
    remove_finalizer: bool = False
    provision: Provision | None = None
    bind_volume: str | None = None  # step 1: the volume's claimRef (CAS at its revision)
    bind_claim: str | None = None  # step 2: the claim's volumeName and phase Bound
    phase: str | None = None  # a new claim phase (Pending / Lost) when it changes
    message: str = ""  # why the claim waits (for an event)


class VolumePlan(msgspec.Struct, kw_only=True, frozen=True):
    """What to write for one volume."""

    add_finalizer: bool = False
    remove_finalizer: bool = False
    clear_claim_ref: bool = False  # a binding this controller started but the claim went elsewhere
    phase: str | None = None
    delete: bool = False  # reclaim policy Delete: remove ``remove_path`` (if any) and the volume
    remove_path: str | None = None


# -- matching --------------------------------------------------------------------------------


def default_class(classes: Iterable[StorageClass]) -> str | None:
    """The class marked default (the newest when several are), as Kubernetes picks it."""
    return classes_rule.default_class(classes, classes_rule.STORAGE_DEFAULT_ANNOTATION)


def claim_class(claim: PersistentVolumeClaim, classes: Iterable[StorageClass]) -> str:
    """The class a claim asks for: its own, else the default, else "" (volumes without a class)."""
    if claim.spec.storageClassName is not None:
        return claim.spec.storageClassName
    return default_class(classes) or ""


def requested_bytes(claim: PersistentVolumeClaim) -> int:
    return to_bytes(claim.spec.resources.requests.get("storage", "0"))


def capacity_bytes(pv: PersistentVolume) -> int:
    return to_bytes(pv.spec.capacity.get("storage", "0"))


def claim_ref_points_at(pv: PersistentVolume, claim: PersistentVolumeClaim) -> bool:
    """The volume is reserved for this claim (by name, and by uid once one is written)."""
    ref = pv.spec.claimRef
    if ref is None:
        return False
    return (
        ref.name == claim.metadata.name
        and (ref.namespace or "default") == (claim.metadata.namespace or "default")
        and (not ref.uid or ref.uid == claim.metadata.uid)
    )


def satisfies(pv: PersistentVolume, claim: PersistentVolumeClaim, cls: str) -> bool:
    """Capacity, every requested access mode, volume mode, class and the claim's selector."""
    if capacity_bytes(pv) < requested_bytes(claim):
        return False
    if not set(claim.spec.accessModes) <= set(pv.spec.accessModes):
        return False
    if pv.spec.volumeMode != claim.spec.volumeMode:
        return False
    if pv.spec.storageClassName != cls:
        return False
    if claim.spec.selector is not None:
        try:
            if not from_label_selector(claim.spec.selector).matches(pv.metadata.labels):
                return False
        except SelectorError:
            return False
    return True


def is_available(pv: PersistentVolume) -> bool:
    return (
        pv.spec.claimRef is None
        and pv.metadata.deletionTimestamp is None
        and pv.status.phase in ("Pending", "Available")
    )


def find_volume(
    claim: PersistentVolumeClaim, volumes: Iterable[PersistentVolume], cls: str
) -> PersistentVolume | None:
    """The volume this claim binds to: one pre-bound to it through claimRef (or named by the
    claim's volumeName) wins; otherwise the smallest Available volume that satisfies it."""
    volumes = list(volumes)
    for pv in sorted(volumes, key=lambda v: v.metadata.name):
        if pv.metadata.deletionTimestamp is None and claim_ref_points_at(pv, claim):
            if pv.spec.volumeMode == claim.spec.volumeMode:
                return pv
    if claim.spec.volumeName:
        named = next((v for v in volumes if v.metadata.name == claim.spec.volumeName), None)
        if named is not None and is_available(named):
            return named
        return None
    fits = [v for v in volumes if is_available(v) and satisfies(v, claim, cls)]
    if not fits:
        return None
    return min(fits, key=lambda v: (capacity_bytes(v), v.metadata.name))


def pod_claims(pod: Pod) -> list[str]:
    return [v.persistentVolumeClaim.claimName for v in pod.spec.volumes if v.persistentVolumeClaim is not None]


def claim_in_use(claim: PersistentVolumeClaim, pods: Iterable[Pod]) -> bool:
    """A non-terminated pod of the claim's namespace names it."""
    ns = claim.metadata.namespace or "default"
    return any(
        (p.metadata.namespace or "default") == ns
        and p.status.phase not in ("Succeeded", "Failed")
        and claim.metadata.name in pod_claims(p)
        for p in pods
    )


def node_is_ready(node: Node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions) and not node.spec.unschedulable


def volume_node(pv: PersistentVolume) -> str | None:
    """The node a volume is pinned to by a hostname node affinity, if any."""
    if pv.spec.nodeAffinity is None or pv.spec.nodeAffinity.required is None:
        return None
    for term in pv.spec.nodeAffinity.required.nodeSelectorTerms:
        for req in term.matchExpressions:
            if req.key == HOSTNAME_LABEL and req.operator == "In" and req.values:
                return req.values[0]
    return None


def least_used_node(nodes: Iterable[Node], volumes: Iterable[PersistentVolume]) -> str | None:
    """The Ready node holding the fewest volumes (by name on a tie)."""
    counts: dict[str, int] = {}
    for pv in volumes:
        n = volume_node(pv)
        if n is not None:
            counts[n] = counts.get(n, 0) + 1
    ready = [n.metadata.name for n in nodes if node_is_ready(n)]
    if not ready:
        return None
    return min(ready, key=lambda n: (counts.get(n, 0), n))


def provisioned_volume(
    claim: PersistentVolumeClaim, cls: StorageClass, node: str, root: str
) -> Provision:
    """The local-path volume for ``claim`` on ``node``, pre-bound to the claim."""
    name = f"pvc-{claim.metadata.uid}"
    path = f"{root.rstrip('/')}/{node}/{name}"
    affinity = VolumeNodeAffinity(
        required=NodeSelector(
            nodeSelectorTerms=[
                NodeSelectorTerm(
                    matchExpressions=[NodeSelectorRequirement(key=HOSTNAME_LABEL, operator="In", values=[node])]
                )
            ]
        )
    )
    pv = PersistentVolume(
        metadata=ObjectMeta(
            name=name,
            annotations={PROVISIONED_BY: cls.provisioner, BOUND_BY_CONTROLLER: "yes"},
            finalizers=[PV_PROTECTION],
        ),
        spec=PersistentVolumeSpec(
            capacity={"storage": claim.spec.resources.requests.get("storage", "0")},
            accessModes=list(claim.spec.accessModes),
            persistentVolumeReclaimPolicy=cls.reclaimPolicy,
            storageClassName=cls.metadata.name,
            volumeMode=claim.spec.volumeMode,
            claimRef=claim_reference(claim),
            mountOptions=list(cls.mountOptions),
            hostPath=HostPathPV(path=path, type="DirectoryOrCreate"),
            nodeAffinity=affinity,
        ),
    )
    return Provision(volume=pv, node=node, path=path)


def claim_reference(claim: PersistentVolumeClaim) -> ObjectReference:
    return ObjectReference(
        kind="PersistentVolumeClaim",
        apiVersion="v1",
        namespace=claim.metadata.namespace or "default",
        name=claim.metadata.name,
        uid=claim.metadata.uid or "",
    )


def bound_volume(pv: PersistentVolume, claim: PersistentVolumeClaim) -> PersistentVolume:
    """Step 1 of a binding: the volume with claimRef (uid included) and phase Bound."""
    annotations = dict(pv.metadata.annotations)
    if pv.spec.claimRef is None:
        annotations[BOUND_BY_CONTROLLER] = "yes"
    return msgspec.structs.replace(
        pv,
        metadata=msgspec.structs.replace(pv.metadata, annotations=annotations),
        spec=msgspec.structs.replace(pv.spec, claimRef=claim_reference(claim)),
        status=msgspec.structs.replace(pv.status, phase="Bound", reason="", message=""),
    )


def bound_claim(claim: PersistentVolumeClaim, pv: PersistentVolume) -> PersistentVolumeClaim:
    """Step 2 of a binding: the claim names the volume and reports it Bound."""
    annotations = dict(claim.metadata.annotations)
    annotations[BIND_COMPLETED] = "yes"
    if pv.metadata.annotations.get(BOUND_BY_CONTROLLER) == "yes":
        annotations["pv.kubernetes.io/bound-by-controller"] = "yes"
    return msgspec.structs.replace(
        claim,
        metadata=msgspec.structs.replace(claim.metadata, annotations=annotations),
        spec=msgspec.structs.replace(claim.spec, volumeName=pv.metadata.name),
        status=msgspec.structs.replace(
            claim.status, phase="Bound", accessModes=list(pv.spec.accessModes), capacity=dict(pv.spec.capacity)
        ),
    )


# -- plans -----------------------------------------------------------------------------------


def plan_claim(
    claim: PersistentVolumeClaim,
    volumes: Mapping[str, PersistentVolume],
    classes: Mapping[str, StorageClass],
    pods: Iterable[Pod],
    nodes: Iterable[Node],
    *,
    volume_root: str,
) -> ClaimPlan:
    """Decide the next writes for one claim (``volumes`` and ``classes`` keyed by name)."""
    pods = list(pods)
    meta = claim.metadata
    in_use = claim_in_use(claim, pods)
    if meta.deletionTimestamp is not None:
        # Being deleted: it goes once no running pod uses it; no new bindings.
        return ClaimPlan(remove_finalizer=PVC_PROTECTION in meta.finalizers and not in_use)
    set_class = None
    if claim.spec.storageClassName is None:
        set_class = default_class(classes.values())
    add_finalizer = PVC_PROTECTION not in meta.finalizers
    cls_name = set_class if set_class is not None else claim_class(claim, classes.values())
    if claim.status.phase == "Bound" and claim.spec.volumeName:
        pv = volumes.get(claim.spec.volumeName)
        if pv is None:
            return ClaimPlan(add_finalizer=add_finalizer, phase="Lost",
                             message=f'bound volume "{claim.spec.volumeName}" is gone')
        if pv.spec.claimRef is None or pv.spec.claimRef.uid != meta.uid:
            return ClaimPlan(add_finalizer=add_finalizer, phase="Lost",
                             message=f'volume "{pv.metadata.name}" is bound to another claim')
        return ClaimPlan(add_finalizer=add_finalizer)
    if claim.status.phase == "Lost":
        return ClaimPlan(add_finalizer=add_finalizer)
    pv = find_volume(claim, volumes.values(), cls_name)
    if pv is not None:
        ref = pv.spec.claimRef
        already = ref is not None and ref.uid == meta.uid and pv.status.phase == "Bound"
        return ClaimPlan(
            set_class=set_class,
            add_finalizer=add_finalizer,
            bind_volume=None if already else pv.metadata.name,
            bind_claim=pv.metadata.name,
        )
    cls = classes.get(cls_name) if cls_name else None
    phase = "Pending" if claim.status.phase != "Pending" else None
    if cls is None:
        msg = (f'storageclass.storage.k8s.io "{cls_name}" not found' if cls_name
               else "no persistent volumes available for this claim and no storage class is set")
        return ClaimPlan(set_class=set_class, add_finalizer=add_finalizer, phase=phase, message=msg)
    if cls.provisioner != LOCAL_PATH:
        return ClaimPlan(set_class=set_class, add_finalizer=add_finalizer, phase=phase,
                         message=f'waiting for a volume to be created by the external provisioner "{cls.provisioner}"')
    if f"pvc-{meta.uid}" in volumes:
        # Provisioned already but not visible as pre-bound (e.g. being deleted): wait.
        return ClaimPlan(set_class=set_class, add_finalizer=add_finalizer, phase=phase,
                         message="waiting for the provisioned volume")
    if cls.volumeBindingMode == "WaitForFirstConsumer":
        node = meta.annotations.get(SELECTED_NODE) or next(
            (p.spec.nodeName for p in pods
             if p.spec.nodeName and (p.metadata.namespace or "default") == (meta.namespace or "default")
             and meta.name in pod_claims(p) and p.status.phase not in ("Succeeded", "Failed")),
            None,
        )
        if not node:
            return ClaimPlan(set_class=set_class, add_finalizer=add_finalizer, phase=phase,
                             message="waiting for first consumer to be created before binding")
    else:
        node = least_used_node(nodes, volumes.values())
        if node is None:
            return ClaimPlan(set_class=set_class, add_finalizer=add_finalizer, phase=phase,
                             message="no Ready node to provision a volume on")
    with_class = claim if set_class is None else msgspec.structs.replace(
        claim, spec=msgspec.structs.replace(claim.spec, storageClassName=set_class)
    )
    return ClaimPlan(
        set_class=set_class,
        add_finalizer=add_finalizer,
        provision=provisioned_volume(with_class, cls, node, volume_root),
        phase=phase,
    )


def plan_volume(pv: PersistentVolume, claims: Mapping[str, PersistentVolumeClaim]) -> VolumePlan:
    """Decide the next writes for one volume (``claims`` keyed ``<namespace>/<name>``)."""
    meta = pv.metadata
    ref = pv.spec.claimRef
    claim = claims.get(f"{ref.namespace or 'default'}/{ref.name}") if ref is not None else None
    if claim is not None and ref is not None and ref.uid and claim.metadata.uid != ref.uid:
        claim = None  # a namesake: the claim this volume was bound to is gone
    bound = ref is not None and claim is not None
    reclaim = ref is not None and bool(ref.uid) and claim is None
    if reclaim and pv.spec.persistentVolumeReclaimPolicy == "Delete":
        local = pv.spec.hostPath is not None and meta.annotations.get(PROVISIONED_BY) == LOCAL_PATH
        return VolumePlan(delete=True, remove_path=pv.spec.hostPath.path if local and pv.spec.hostPath else None)
    if meta.deletionTimestamp is not None:
        in_use = bound and pv.status.phase == "Bound"
        return VolumePlan(remove_finalizer=PV_PROTECTION in meta.finalizers and not in_use)
    add_finalizer = PV_PROTECTION not in meta.finalizers
    if ref is None:
        phase = "Available" if pv.status.phase not in ("Available", "Failed") else None
        return VolumePlan(add_finalizer=add_finalizer, phase=phase)
    if claim is None:
        if not ref.uid:
            # Pre-bound by a user to a claim that does not exist yet.
            phase = "Available" if pv.status.phase != "Available" else None
            return VolumePlan(add_finalizer=add_finalizer, phase=phase)
        # Its claim is gone and the policy is Retain: the data stays, the volume is Released.
        phase = "Released" if pv.status.phase not in ("Released", "Failed") else None
        return VolumePlan(add_finalizer=add_finalizer, phase=phase)
    assert claim is not None
    if claim.spec.volumeName and claim.spec.volumeName != meta.name:
        # The claim went to another volume while this one was being bound to it.
        if meta.annotations.get(BOUND_BY_CONTROLLER) == "yes":
            return VolumePlan(add_finalizer=add_finalizer, clear_claim_ref=True, phase="Available")
        return VolumePlan(add_finalizer=add_finalizer)
    if ref.uid and pv.status.phase != "Bound":
        return VolumePlan(add_finalizer=add_finalizer, phase="Bound")
    if not ref.uid and pv.status.phase != "Available":
        return VolumePlan(add_finalizer=add_finalizer, phase="Available")
    return VolumePlan(add_finalizer=add_finalizer)


def released_volume(pv: PersistentVolume) -> PersistentVolume:
    """The volume freed from a binding that did not complete (claimRef cleared, Available)."""
    annotations = {k: v for k, v in pv.metadata.annotations.items() if k != BOUND_BY_CONTROLLER}
    return msgspec.structs.replace(
        pv,
        metadata=msgspec.structs.replace(pv.metadata, annotations=annotations),
        spec=msgspec.structs.replace(pv.spec, claimRef=None),
        status=msgspec.structs.replace(pv.status, phase="Available"),
    )
