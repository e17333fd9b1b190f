"""Properties of the garbage collector's plan, run to a fixpoint over random ownership forests:
background and foreground remove exactly the owner's descendants, orphan keeps them all
without the reference, and nothing with a live owner is ever collected."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.meta import OwnerReference
from services.gc.reconcile import FOREGROUND, ORPHAN, Node, plan


@dataclass
class World:
    nodes: dict[str, Node] = field(default_factory=dict)  # uid -> node

    def dependents(self, uid: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.ref_to(uid) is not None]

    def remove_or_mark(self, uid: str, finalizers: tuple[str, ...] = ()) -> None:
        n = self.nodes[uid]
        fins = tuple(dict.fromkeys(n.finalizers + finalizers))
        if fins:
            self.nodes[uid] = replace(n, deleting=True, finalizers=fins)
        else:
            del self.nodes[uid]

    def step(self) -> bool:
        """Plan and apply once for every node; True when anything changed."""
        changed = False
        for uid in list(self.nodes):
            node = self.nodes.get(uid)
            if node is None:
                continue
            actions = plan(
                node,
                self.dependents(uid),
                lambda r: r.uid in self.nodes,
                lambda n: bool(self.dependents(n.uid)),
            )
            for a in actions:
                target = self.nodes.get(a.uid)
                if target is None:
                    continue
                if a.verb == "delete":
                    assert not any(r.uid in self.nodes for r in target.owners) or any(
                        self.nodes[r.uid].deleting for r in target.owners if r.uid in self.nodes
                    ), "collected a dependent whose owner lives"
                    self.remove_or_mark(a.uid, (FOREGROUND,) if a.policy == "Foreground" else ())
                elif a.verb == "strip-owners":
                    self.nodes[a.uid] = replace(
                        target, owners=tuple(r for r in target.owners if r.uid not in a.owner_uids)
                    )
                else:
                    fins = tuple(f for f in target.finalizers if f != a.finalizer)
                    if target.deleting and not fins:
                        del self.nodes[a.uid]
                    else:
                        self.nodes[a.uid] = replace(target, finalizers=fins)
                changed = True
        return changed

    def settle(self) -> None:
        for _ in range(100):
            if not self.step():
                return
        raise AssertionError("no fixpoint")


def ref(uid: str, block: bool) -> OwnerReference:
    return OwnerReference(
        apiVersion="v1", kind="Thing", name=uid, uid=uid, controller=True, blockOwnerDeletion=block
    )


forests = st.lists(st.tuples(st.integers(0, 30), st.booleans()), min_size=1, max_size=14)


def build(spec: list[tuple[int, bool]]) -> World:
    """Node i is owned by an earlier node (index ``parent % i``) or, for parent 0, by nobody."""
    w = World()
    for i, (parent, block) in enumerate(spec):
        owners: tuple[OwnerReference, ...] = ()
        if i > 0 and parent % (i + 1) != i:
            owners = (ref(f"n{parent % i}", block),)
        w.nodes[f"n{i}"] = Node(
            kind="Thing",
            namespace="default",
            name=f"n{i}",
            uid=f"n{i}",
            owners=owners,
            deleting=False,
            finalizers=(),
        )
    return w


def descendants(w: World, uid: str) -> set[str]:
    out: set[str] = set()
    todo = [uid]
    while todo:
        u = todo.pop()
        for d in w.dependents(u):
            if d.uid not in out:
                out.add(d.uid)
                todo.append(d.uid)
    return out


@settings(max_examples=300, deadline=None)
@given(
    spec=forests, victim=st.integers(0, 100), policy=st.sampled_from(["Background", "Foreground", "Orphan"])
)
def test_cascades_remove_descendants_or_orphan_them(spec, victim, policy):
    w = build(spec)
    w.settle()  # a consistent world is left alone
    assert len(w.nodes) == len(spec)
    root = f"n{victim % len(spec)}"
    doomed = descendants(w, root) | {root}
    children = {d.uid for d in w.dependents(root)}
    before = set(w.nodes)
    if policy == "Background":
        w.remove_or_mark(root)
    else:
        w.remove_or_mark(root, (FOREGROUND,) if policy == "Foreground" else (ORPHAN,))
    if policy == "Foreground":
        # The owner stays (marked) while a blocking dependent exists.
        if any(d.blocks(root) for d in w.dependents(root)):
            w.step()
            assert root in w.nodes and w.nodes[root].deleting
    w.settle()
    if policy == "Orphan":
        assert set(w.nodes) == before - {root}
        assert all(w.nodes[c].ref_to(root) is None for c in children)
    else:
        assert set(w.nodes) == before - doomed
    assert all(not n.deleting for n in w.nodes.values())


@given(block=st.booleans())
def test_foreground_owner_waits_for_blocking_dependents_only(block):
    owner = Node(
        kind="Thing",
        namespace="default",
        name="o",
        uid="o",
        owners=(),
        deleting=True,
        finalizers=(FOREGROUND,),
    )
    dep = Node(
        kind="Thing",
        namespace="default",
        name="d",
        uid="d",
        owners=(ref("o", block),),
        deleting=True,
        finalizers=(),
    )
    actions = plan(owner, [dep], lambda r: True)
    released = any(a.verb == "remove-finalizer" for a in actions)
    assert released == (not block)


def test_dangling_reference_is_stripped_when_another_owner_lives():
    node = Node(
        kind="Thing",
        namespace="default",
        name="d",
        uid="d",
        owners=(ref("alive", True), ref("dead", True)),
        deleting=False,
        finalizers=(),
    )
    actions = plan(node, [], lambda r: r.uid == "alive")
    assert [(a.verb, a.owner_uids) for a in actions] == [("strip-owners", ("dead",))]
