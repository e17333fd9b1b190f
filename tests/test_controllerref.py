"""kyb.controllerref, Kubernetes' ControllerRefManager for every controller: another
controller's objects are never touched, nothing is adopted or released while the controller
is being deleted, and claiming what claiming wrote changes nothing more."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from kyb import controllerref
from schemas.helpers import controller_of
from schemas.meta import ObjectMeta, OwnerReference
from schemas.pod import Pod
from schemas.selector import from_labels

MINE = OwnerReference(apiVersion="apps/v1", kind="ReplicaSet", name="web", uid="mine", controller=True)
THEIRS = OwnerReference(apiVersion="apps/v1", kind="ReplicaSet", name="other", uid="theirs", controller=True)


def controller(deleting: bool = False) -> controllerref.Controller:
    return controllerref.Controller(uid="mine", namespace="default", selector=from_labels({"app": "web"}),
                                    deleting=deleting, reference=MINE)


pods = st.lists(
    st.builds(
        lambda i, app, ref, terminating, ns: Pod(metadata=ObjectMeta(
            name=f"p{i}", namespace=ns, labels={"app": app}, ownerReferences=[r for r in [ref] if r],
            deletionTimestamp="2024-01-01T00:00:00Z" if terminating else None)),
        st.integers(0, 10_000), st.sampled_from(["web", "db"]), st.sampled_from([None, MINE, THEIRS]),
        st.booleans(), st.sampled_from(["default", "other"]),
    ),
    max_size=12, unique_by=lambda p: p.metadata.name,
)


@given(pods)
def test_other_controllers_objects_are_never_touched(objs) -> None:
    claims = controllerref.claim(controller(), objs)
    changed = {o.metadata.name for o in claims.adopt + claims.release}
    for o in objs:
        ref = controller_of(o)
        if ref is not None and ref.uid == "theirs" or o.metadata.namespace != "default":
            assert o.metadata.name not in changed
    assert all(controller_of(o).uid == "mine" for o in claims.adopt)
    assert all(controller_of(o) is None for o in claims.release)
    assert not {o.metadata.name for o in claims.owned} & set(claims.taken)


@given(pods)
def test_nothing_moves_while_the_controller_is_deleted(objs) -> None:
    claims = controllerref.claim(controller(deleting=True), objs)
    assert claims.adopt == [] and claims.release == []
    assert all(controllerref.adopted(o, controller(True)) is None for o in objs)


@given(pods)
def test_claiming_again_after_writing_changes_nothing(objs) -> None:
    first = controllerref.claim(controller(), objs)
    written = {o.metadata.name: o for o in first.adopt + first.release}
    again = controllerref.claim(controller(), [written.get(o.metadata.name, o) for o in objs])
    assert again.adopt == [] and again.release == []


def test_narrowing_adoption_and_terminating_releases() -> None:
    finished = Pod(metadata=ObjectMeta(name="done", namespace="default", labels={"app": "web"}))
    finished = msgspec.structs.replace(finished, status=msgspec.structs.replace(finished.status, phase="Succeeded"))
    assert controllerref.claim(controller(), [finished], adoptable=lambda p: p.status.phase == "Running").adopt == []
    leaving = Pod(metadata=ObjectMeta(name="leaving", namespace="default", labels={"app": "db"}, ownerReferences=[MINE],
                                      deletionTimestamp="2024-01-01T00:00:00Z"))
    assert controllerref.claim(controller(), [leaving], release_terminating=False).release == []
    assert [p.metadata.name for p in controllerref.claim(controller(), [leaving]).release] == ["leaving"]


def test_may_adopt_rereads_the_controller() -> None:
    live = Pod(metadata=ObjectMeta(name="web", namespace="default", uid="mine"))
    assert controllerref.may_adopt(live, controller()) is None
    assert controllerref.may_adopt(None, controller()) == "is gone"
    replaced = msgspec.structs.replace(live, metadata=msgspec.structs.replace(live.metadata, uid="new"))
    assert "replaced" in controllerref.may_adopt(replaced, controller())
    deleting = msgspec.structs.replace(live, metadata=msgspec.structs.replace(live.metadata,
                                                                             deletionTimestamp="2024-01-01T00:00:00Z"))
    assert controllerref.may_adopt(deleting, controller()) == "is being deleted"
