"""Picking a backend for a new connection: round robin over the ready endpoints, with
ClientIP session affinity (a client keeps its backend until it has been idle for the
timeout) and retries that skip backends which just refused. Pure: time is an argument."""

from __future__ import annotations

from collections.abc import Collection

Address = tuple[str, int]


class Balancer:
    """The backends of one frontend and the state of its spreading and affinity."""

    def __init__(self, backends: tuple[Address, ...] = (), affinity_seconds: int | None = None) -> None:
        self.backends: tuple[Address, ...] = ()
        self.affinity_seconds = affinity_seconds
        self._next = 0
        self._sticky: dict[str, tuple[Address, float]] = {}
        self.update(backends, affinity_seconds)

    def update(self, backends: tuple[Address, ...], affinity_seconds: int | None) -> None:
        """New endpoint set: affinities to backends that left are dropped."""
        self.backends = tuple(backends)
        self.affinity_seconds = affinity_seconds
        if affinity_seconds is None:
            self._sticky.clear()
        else:
            alive = set(self.backends)
            self._sticky = {c: v for c, v in self._sticky.items() if v[0] in alive}
        if self.backends:
            self._next %= len(self.backends)
        else:
            self._next = 0

    def pick(self, client_ip: str, now: float, exclude: Collection[Address] = ()) -> Address | None:
        """The backend for a new connection from ``client_ip`` at time ``now`` (seconds), not
        one of ``exclude``; None when nothing is left."""
        if self.affinity_seconds is not None:
            held = self._sticky.get(client_ip)
            if held is not None and now - held[1] <= self.affinity_seconds and held[0] not in exclude:
                self._sticky[client_ip] = (held[0], now)
                return held[0]
        n = len(self.backends)
        for i in range(n):
            candidate = self.backends[(self._next + i) % n]
            if candidate not in exclude:
                self._next = (self._next + i + 1) % n
                if self.affinity_seconds is not None:
                    self._sticky[client_ip] = (candidate, now)
                return candidate
        return None

    def expire(self, now: float) -> None:
        """Forget affinities idle for longer than the timeout."""
        if self.affinity_seconds is None:
            return
        limit = self.affinity_seconds
        self._sticky = {c: v for c, v in self._sticky.items() if now - v[1] <= limit}
