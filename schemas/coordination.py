"""coordination.k8s.io/v1 Lease: node heartbeats and controller leadership, kept in
the ``kyb-leases`` bucket."""

from __future__ import annotations

from datetime import datetime

import msgspec

from schemas.meta import Base, Object, ObjectMeta


class LeaseSpec(Base, kw_only=True, frozen=True):
    holderIdentity: str | None = None
    leaseDurationSeconds: int | None = None
    acquireTime: str | None = None  # RFC 3339 with microseconds, as MicroTime
    renewTime: str | None = None
    leaseTransitions: int | None = None


class Lease(Object, kw_only=True, frozen=True):
    API_VERSION = "coordination.k8s.io/v1"
    KIND = "Lease"

    spec: LeaseSpec = LeaseSpec()


NODE_LEASE_NAMESPACE = "kube-node-lease"
NODE_LEASE_DURATION_SECONDS = 40  # the kubelet's default nodeLeaseDurationSeconds


def node_lease(node_name: str, existing: Lease | None, now: datetime) -> Lease:
    """A node's heartbeat Lease (``kube-node-lease/<node>``) renewed at ``now``."""
    from schemas.helpers import format_micro_time  # schemas.helpers imports the registry of kinds

    spec = LeaseSpec(
        holderIdentity=node_name,
        leaseDurationSeconds=NODE_LEASE_DURATION_SECONDS,
        renewTime=format_micro_time(now),
        acquireTime=(existing.spec.acquireTime if existing is not None else None) or format_micro_time(now),
    )
    if existing is None:
        return Lease(metadata=ObjectMeta(name=node_name, namespace=NODE_LEASE_NAMESPACE), spec=spec)
    return msgspec.structs.replace(existing, spec=spec)
