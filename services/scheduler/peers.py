"""Which other scheduler replicas are alive, from their presence Leases: pure bookkeeping.

Node reservations (stream ``KYB_SCHEDULING``) exist only so several replicas running at once
never overcommit a node; a lone replica skips them. Each replica keeps a presence Lease in
``kyb-leases`` (key ``kube-system.kyb-scheduler-<identity>``), renewed every few seconds, whose
annotation ``scheduler.kyb.io/reserving-for`` names the peers it has seen and now reserves for.
From what the watch shows, ``Peers`` answers two questions:

- is another replica alive (then reserve before binding)?
- has every live peer acknowledged us (then our bindings cannot race its unreserved ones)?

Liveness follows client-go's leader election: a record counts as alive for its
``leaseDurationSeconds`` after the moment it was last seen to change, on our own monotonic clock
(clocks of different machines are never compared). Time is always an argument.
"""

from __future__ import annotations

import re

import msgspec

PRESENCE_NAMESPACE = "kube-system"
PRESENCE_PREFIX = "kyb-scheduler-"
PEERS_ANNOTATION = "scheduler.kyb.io/reserving-for"


class PresenceMeta(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    name: str
    namespace: str = PRESENCE_NAMESPACE
    annotations: dict[str, str] = {}


class PresenceSpec(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    holderIdentity: str = ""
    leaseDurationSeconds: int = 10
    renewTime: str | None = None


class Presence(msgspec.Struct, kw_only=True, frozen=True):
    """A coordination.k8s.io/v1 Lease saying "scheduler replica <holderIdentity> is running"."""

    apiVersion: str = "coordination.k8s.io/v1"
    kind: str = "Lease"
    metadata: PresenceMeta
    spec: PresenceSpec = PresenceSpec()

    @property
    def acknowledged(self) -> frozenset[str]:
        """The peers this replica has seen and reserves for."""
        raw = self.metadata.annotations.get(PEERS_ANNOTATION, "")
        return frozenset(p for p in raw.split(",") if p)


def lease_name(identity: str) -> str:
    """The presence Lease's name: a DNS label built from the identity."""
    label = re.sub(r"[^a-z0-9-]+", "-", identity.lower()).strip("-")
    return (PRESENCE_PREFIX + label)[:63].rstrip("-")


def presence(identity: str, peers: frozenset[str], lease_seconds: int, renew_time: str) -> Presence:
    return Presence(
        metadata=PresenceMeta(name=lease_name(identity), annotations={PEERS_ANNOTATION: ",".join(sorted(peers))}),
        spec=PresenceSpec(holderIdentity=identity, leaseDurationSeconds=lease_seconds, renewTime=renew_time),
    )


class _Sighting(msgspec.Struct):
    key: str
    seen_at: float
    duration: float
    acknowledged: frozenset[str]


class Peers:
    """Other replicas' presence as seen by replica ``me``."""

    def __init__(self, me: str) -> None:
        self.me = me
        self._by_identity: dict[str, _Sighting] = {}

    def observe(self, key: str, record: Presence, now: float) -> None:
        """A presence record was written (created or renewed) under ``key``."""
        who = record.spec.holderIdentity
        if not who or who == self.me:
            return
        self._by_identity[who] = _Sighting(key, now, float(record.spec.leaseDurationSeconds), record.acknowledged)

    def removed(self, key: str) -> None:
        """A presence record was deleted: that replica stopped gracefully."""
        for who, s in list(self._by_identity.items()):
            if s.key == key:
                del self._by_identity[who]

    def live(self, now: float) -> frozenset[str]:
        return frozenset(who for who, s in self._by_identity.items() if now < s.seen_at + s.duration)

    def acknowledged_by_all(self, now: float) -> bool:
        """Every live peer says it reserves for us."""
        return all(self.me in s.acknowledged for s in self._by_identity.values() if now < s.seen_at + s.duration)

    def next_expiry(self, now: float) -> float | None:
        """When the next live peer counts as gone unless renewed meanwhile."""
        due = [s.seen_at + s.duration for s in self._by_identity.values() if now < s.seen_at + s.duration]
        return min(due) if due else None
