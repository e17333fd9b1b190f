"""The order in which pending pods are decided: kube-scheduler's active queue with its default
QueueSort plugin (PrioritySort): higher ``spec.priority`` first, first come first among equals.
A key is queued at most once; a pod's priority never changes (it is set when the pod is created),
so the order it was queued with stays right.
"""

from __future__ import annotations

import heapq
import itertools


class PendingQueue:
    """Pod keys by priority (higher first), then by when they were added."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str]] = []
        self._keys: set[str] = set()
        self._order = itertools.count()

    def add(self, key: str, priority: int) -> None:
        """Queue ``key`` unless it is queued already."""
        if key in self._keys:
            return
        self._keys.add(key)
        heapq.heappush(self._heap, (-priority, next(self._order), key))

    def pop(self) -> str:
        """The key to decide next (IndexError when empty)."""
        _, _, key = heapq.heappop(self._heap)
        self._keys.discard(key)
        return key

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._heap)
