"""The volume binder's decisions as pure functions: which volume a claim gets, when a volume is
provisioned and where, reclaim, and the protection finalizers."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.core import (
    HostPathPV,
    Node,
    NodeCondition,
    NodeStatus,
    ObjectReference,
    PersistentVolume,
    PersistentVolumeClaim,
    PersistentVolumeClaimSpec,
    PersistentVolumeClaimStatus,
    PersistentVolumeSpec,
    PersistentVolumeStatus,
    VolumeResourceRequirements,
)
from schemas.meta import LabelSelector, ObjectMeta
from schemas.pod import Container, PersistentVolumeClaimVolumeSource, Pod, PodSpec, PodStatus, Volume
from schemas.quantity import to_bytes
from schemas.storage import DEFAULT_CLASS_ANNOTATION, StorageClass
from services.volumebinder.reconcile import (
    LOCAL_PATH,
    PV_PROTECTION,
    PVC_PROTECTION,
    SELECTED_NODE,
    bound_volume,
    find_volume,
    plan_claim,
    plan_volume,
    volume_node,
)

MODES = ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"]


def pv(name: str, size: str = "1Gi", modes=("ReadWriteOnce",), cls: str = "", labels=None, claim_ref=None,
       phase="Available", policy="Retain") -> PersistentVolume:
    return PersistentVolume(
        metadata=ObjectMeta(name=name, labels=labels or {}, uid=f"uid-{name}"),
        spec=PersistentVolumeSpec(capacity={"storage": size}, accessModes=list(modes), storageClassName=cls,
                                  claimRef=claim_ref, hostPath=HostPathPV(path=f"/data/{name}"),
                                  persistentVolumeReclaimPolicy=policy),
        status=PersistentVolumeStatus(phase=phase),
    )


def pvc(name: str = "data", size: str = "1Gi", modes=("ReadWriteOnce",), cls: str | None = "", selector=None,
        uid: str | None = None, ns: str = "default", **meta) -> PersistentVolumeClaim:
    return PersistentVolumeClaim(
        metadata=ObjectMeta(name=name, namespace=ns, uid=uid or f"uid-{name}", **meta),
        spec=PersistentVolumeClaimSpec(accessModes=list(modes), storageClassName=cls, selector=selector,
                                       resources=VolumeResourceRequirements(requests={"storage": size})),
    )


def node(name: str, ready: bool = True) -> Node:
    return Node(metadata=ObjectMeta(name=name, labels={"kubernetes.io/hostname": name}),
                status=NodeStatus(conditions=[NodeCondition(type="Ready", status="True" if ready else "False")]))


def pod_using(claim: str, node_name: str = "", phase: str = "Running", ns: str = "default") -> Pod:
    return Pod(
        metadata=ObjectMeta(name=f"user-of-{claim}", namespace=ns),
        spec=PodSpec(containers=[Container(name="c", image="busybox")], nodeName=node_name,
                     volumes=[Volume(name="v", persistentVolumeClaim=PersistentVolumeClaimVolumeSource(claimName=claim))]),
        status=PodStatus(phase=phase),
    )


def local_class(name: str = "local", mode: str = "Immediate", default: bool = False, policy: str = "Delete"):
    ann = {DEFAULT_CLASS_ANNOTATION: "true"} if default else {}
    return StorageClass(metadata=ObjectMeta(name=name, annotations=ann), provisioner=LOCAL_PATH,
                        volumeBindingMode=mode, reclaimPolicy=policy)


def by_name(objs):
    return {o.metadata.name: o for o in objs}


@pytest.mark.parametrize(
    ("volumes", "claim", "expected"),
    [
        pytest.param([pv("big", "10Gi"), pv("small", "2Gi"), pv("tiny", "500Mi")], pvc(size="1Gi"), "small",
                     id="smallest-fit"),
        pytest.param([pv("rwo", "1Gi", ["ReadWriteOnce"]), pv("both", "5Gi", ["ReadWriteOnce", "ReadOnlyMany"])],
                     pvc(modes=["ReadWriteOnce", "ReadOnlyMany"]), "both", id="holds-every-mode"),
        pytest.param([pv("fast", cls="fast"), pv("none", "5Gi")], pvc(cls=""), "none", id="empty-class-only-empty"),
        pytest.param([pv("fast", "5Gi", cls="fast"), pv("none")], pvc(cls="fast"), "fast", id="named-class"),
        pytest.param([pv("ssd", "5Gi", labels={"disk": "ssd"}), pv("hdd", labels={"disk": "hdd"})],
                     pvc(selector=LabelSelector(matchLabels={"disk": "ssd"})), "ssd", id="label-selector"),
        pytest.param([pv("small"), pv("reserved", "50Gi",
                                      claim_ref=ObjectReference(namespace="default", name="data"))],
                     pvc(), "reserved", id="claimref-prebinding-wins"),
        pytest.param([pv("other", claim_ref=ObjectReference(namespace="default", name="else", uid="x"), phase="Bound")],
                     pvc(), None, id="bound-elsewhere"),
        pytest.param([pv("tiny", "100Mi")], pvc(size="1Gi"), None, id="too-small"),
    ],
)
def test_find_volume(volumes, claim, expected):
    found = find_volume(claim, volumes, claim.spec.storageClassName or "")
    assert (found.metadata.name if found else None) == expected


sizes = st.integers(min_value=1, max_value=64).map(lambda n: f"{n}Gi")


@given(
    volumes=st.lists(st.tuples(sizes, st.sets(st.sampled_from(MODES), min_size=1)), max_size=8),
    want=sizes,
    modes=st.sets(st.sampled_from(MODES), min_size=1),
)
@settings(max_examples=200, deadline=None)
def test_found_volume_satisfies_the_claim_and_is_the_smallest(volumes, want, modes):
    pvs = [pv(f"pv{i}", size, sorted(m)) for i, (size, m) in enumerate(volumes)]
    claim = pvc(size=want, modes=sorted(modes))
    found = find_volume(claim, pvs, "")
    fitting = [v for v in pvs if to_bytes(v.spec.capacity["storage"]) >= to_bytes(want)
               and modes <= set(v.spec.accessModes)]
    if not fitting:
        assert found is None
        return
    assert found is not None and found in fitting
    assert to_bytes(found.spec.capacity["storage"]) == min(to_bytes(v.spec.capacity["storage"]) for v in fitting)


def test_binding_plan_writes_the_volume_first_then_the_claim():
    plan = plan_claim(pvc(), by_name([pv("a")]), {}, [], [], volume_root="/v")
    assert plan.bind_volume == "a" and plan.bind_claim == "a" and plan.add_finalizer


def test_half_done_binding_is_finished_on_the_claim_side():
    claim = pvc()
    half = bound_volume(pv("a"), claim)  # crashed after step 1
    plan = plan_claim(claim, by_name([half, pv("b", "1Mi")]), {}, [], [], volume_root="/v")
    assert plan.bind_volume is None and plan.bind_claim == "a"


def test_default_class_is_written_into_a_claim_without_one():
    classes = by_name([local_class("std", default=True), local_class("other")])
    plan = plan_claim(pvc(cls=None), {}, classes, [], [node("n1")], volume_root="/v")
    assert plan.set_class == "std"
    assert plan.provision is not None and plan.provision.volume.spec.storageClassName == "std"


def test_immediate_class_provisions_on_the_least_used_ready_node():
    on_n1 = plan_claim(pvc("z", cls="local"), {}, by_name([local_class()]), [], [node("n1")], volume_root="/v")
    used = on_n1.provision.volume
    plan = plan_claim(pvc(cls="local"), by_name([used]), by_name([local_class()]), [],
                      [node("n1"), node("n2"), node("n3", ready=False)], volume_root="/v")
    prov = plan.provision
    assert prov is not None and prov.node == "n2"
    assert volume_node(prov.volume) == "n2"
    assert prov.volume.spec.hostPath.path == "/v/n2/pvc-uid-data"
    assert prov.volume.spec.claimRef.uid == "uid-data"
    assert prov.volume.spec.persistentVolumeReclaimPolicy == "Delete"


def test_wait_for_first_consumer_waits_then_provisions_on_the_selected_node():
    classes = by_name([local_class(mode="WaitForFirstConsumer")])
    waiting = plan_claim(pvc(cls="local"), {}, classes, [pod_using("data")], [node("n1")], volume_root="/v")
    assert waiting.provision is None and "first consumer" in waiting.message
    selected = pvc(cls="local", annotations={SELECTED_NODE: "n7"})
    plan = plan_claim(selected, {}, classes, [], [node("n1")], volume_root="/v")
    assert plan.provision is not None and plan.provision.node == "n7"
    scheduled = plan_claim(pvc(cls="local"), {}, classes, [pod_using("data", "n3")], [node("n1")], volume_root="/v")
    assert scheduled.provision is not None and scheduled.provision.node == "n3"


def test_claim_protection_holds_while_a_running_pod_uses_it():
    deleting = pvc(deletionTimestamp="2024-01-01T00:00:00Z", finalizers=[PVC_PROTECTION])
    assert not plan_claim(deleting, {}, {}, [pod_using("data")], [], volume_root="/v").remove_finalizer
    assert plan_claim(deleting, {}, {}, [pod_using("data", phase="Succeeded")], [], volume_root="/v").remove_finalizer
    assert plan_claim(deleting, {}, {}, [pod_using("data", ns="other")], [], volume_root="/v").remove_finalizer


def test_reclaim_policies_when_the_claim_goes():
    ref = ObjectReference(namespace="default", name="data", uid="uid-data")
    retained = pv("r", claim_ref=ref, phase="Bound", policy="Retain")
    assert plan_volume(retained, {}).phase == "Released"
    deleted = pv("d", claim_ref=ref, phase="Bound", policy="Delete")
    assert plan_volume(deleted, {}).delete
    still = plan_volume(deleted, {"default/data": pvc()})
    assert not still.delete and still.phase is None


def test_volume_protection_and_lost_claims():
    ref = ObjectReference(namespace="default", name="data", uid="uid-data")
    marked = PersistentVolume(metadata=ObjectMeta(name="p", deletionTimestamp="2024-01-01T00:00:00Z",
                                                  finalizers=[PV_PROTECTION]),
                              spec=pv("p", claim_ref=ref).spec, status=PersistentVolumeStatus(phase="Bound"))
    assert not plan_volume(marked, {"default/data": pvc()}).remove_finalizer
    claim = pvc()
    bound = msgspec.structs.replace(claim, spec=msgspec.structs.replace(claim.spec, volumeName="gone"),
                                    status=PersistentVolumeClaimStatus(phase="Bound"))
    assert plan_claim(bound, {}, {}, [], [], volume_root="/v").phase == "Lost"
