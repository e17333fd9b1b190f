"""coordination.k8s.io/v1 Lease: node heartbeats and controller leadership, kept in
the ``kyb-leases`` bucket."""

from __future__ import annotations

from schemas.meta import Base, Object


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
