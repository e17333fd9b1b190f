"""Expectations: a controller's guard against its own watch lagging behind its writes.

After a controller creates or deletes pods for one of its objects, its pod informer shows
those writes a little later. Counting pods from the cache in between would make it create
(or delete) the same pods twice. So per controller key it records what it asked for and
plans again only once the cache has caught up, or after ``ttl`` seconds in case a watch event
was lost (client-go's ``ControllerExpectations``).

What is awaited can be counted (``adds``: creates whose names are not known to the watcher)
or named (``creating`` / ``deleting``). Observations arrive either as watch events
(``creation_observed`` / ``deletion_observed``) or by looking the names up in the cache
(``settle``). Pure: time is a number of seconds on whatever clock the caller keeps using.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from schemas.meta import Object

__all__ = ["Expectation", "Expectations"]


@dataclass(slots=True)
class Expectation:
    """What one key still waits for, since ``since``."""

    since: float
    adds: int = 0  # creates asked for and not yet seen, by count
    creating: set[str] = field(default_factory=set)  # created names not yet seen
    deleting: set[str] = field(default_factory=set)  # names whose deletion is not yet seen

    @property
    def met(self) -> bool:
        return self.adds <= 0 and not self.creating and not self.deleting


class Expectations:
    """Per controller key: creates and deletes made but not yet seen by the informer."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._by_key: dict[str, Expectation] = {}

    def expect(
        self,
        key: str,
        now: float,
        *,
        adds: int = 0,
        creating: Iterable[str] = (),
        deleting: Iterable[str] = (),
    ) -> None:
        """From ``now`` on, ``key`` waits for these (replacing what it waited for before)."""
        e = Expectation(since=now, adds=max(0, adds), creating=set(creating), deleting=set(deleting))
        if e.met:
            self._by_key.pop(key, None)
        else:
            self._by_key[key] = e

    def creation_observed(self, key: str, name: str | None = None) -> None:
        """The watch showed a new object of ``key`` (by name when it was awaited by name)."""
        e = self._by_key.get(key)
        if e is None:
            return
        if name is not None and name in e.creating:
            e.creating.discard(name)
        elif e.adds > 0:
            e.adds -= 1

    def creation_skipped(self, key: str, count: int = 1) -> None:
        """Creates that were counted on but will never happen (the write failed)."""
        e = self._by_key.get(key)
        if e is not None:
            e.adds = max(0, e.adds - count)

    def deletion_observed(self, key: str, name: str) -> None:
        """The watch showed ``name`` deleted or terminating (or the delete found it gone)."""
        e = self._by_key.get(key)
        if e is not None:
            e.deleting.discard(name)

    def settle(self, key: str, cached: Callable[[str], Object | None]) -> None:
        """Look the awaited names up in a cache (``cached(name)``, None when absent): a creation
        counts as seen once the object is there, a deletion once it is gone or terminating."""
        e = self._by_key.get(key)
        if e is None:
            return
        e.creating = {n for n in e.creating if cached(n) is None}
        e.deleting = {n for n in e.deleting if (o := cached(n)) is not None and o.metadata.deletionTimestamp is None}

    def pending(self, key: str) -> tuple[int, int]:
        """(creates, deletes) ``key`` still waits for."""
        e = self._by_key.get(key)
        return (0, 0) if e is None else (e.adds + len(e.creating), len(e.deleting))

    def satisfied(self, key: str, now: float) -> bool:
        """True when ``key`` may plan again: all it waited for was seen, or ``ttl`` has passed."""
        e = self._by_key.get(key)
        if e is None:
            return True
        if e.met or now - e.since > self.ttl:
            del self._by_key[key]
            return True
        return False

    def forget(self, key: str) -> None:
        """``key`` is gone: drop whatever it waited for."""
        self._by_key.pop(key, None)
