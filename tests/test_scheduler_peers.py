"""Presence bookkeeping of scheduler replicas: who counts as alive, who has acknowledged us."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.scheduler.peers import PEERS_ANNOTATION, Peers, Presence, lease_name, presence

IDS = ["me", "a", "b", "c"]

steps = st.lists(
    st.tuples(
        st.sampled_from(["write", "delete"]),
        st.sampled_from(IDS),
        st.floats(0, 5),                                  # time passing before the step
        st.integers(1, 10),                               # leaseDurationSeconds written
        st.frozensets(st.sampled_from(IDS), max_size=3),  # peers the writer acknowledges
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(steps=steps, later=st.floats(0, 12))
def test_peers_follow_a_plain_model_of_lease_expiry(steps, later):
    peers = Peers("me")
    model: dict[str, tuple[float, int, frozenset[str]]] = {}
    now = 0.0
    for op, who, dt, duration, acks in steps:
        now += dt
        key = f"kube-system.{lease_name(who)}"
        if op == "write":
            peers.observe(key, presence(who, acks, duration, "2024-01-01T00:00:00.000000Z"), now)
            if who != "me":
                model[who] = (now, duration, acks)
        else:
            peers.removed(key)
            model.pop(who, None)
    now += later
    alive = {who for who, (at, duration, _) in model.items() if now < at + duration}
    assert peers.live(now) == alive
    assert "me" not in peers.live(now)
    assert peers.acknowledged_by_all(now) == all("me" in model[who][2] for who in alive)
    expiry = peers.next_expiry(now)
    if alive:
        assert expiry == min(model[who][0] + model[who][1] for who in alive)
        assert peers.live(expiry) < alive  # the first one goes then
    else:
        assert expiry is None


def test_presence_is_a_kubernetes_lease_with_a_dns_label_name():
    record = presence("Host.example-1234-Scheduler-ab12", frozenset({"b", "a"}), 10, "2024-01-01T00:00:00.000000Z")
    assert record.kind == "Lease" and record.apiVersion == "coordination.k8s.io/v1"
    assert record.metadata.name == "kyb-scheduler-host-example-1234-scheduler-ab12"
    assert record.metadata.namespace == "kube-system"
    assert record.metadata.annotations[PEERS_ANNOTATION] == "a,b"
    assert record.acknowledged == frozenset({"a", "b"})
    assert Presence(metadata=record.metadata).spec.leaseDurationSeconds == 10
    assert len(lease_name("x" * 200)) <= 63
