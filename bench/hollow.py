"""Hollow nodes: many simulated kubelets in one process that only register Ready Node objects.

Like kubemark's hollow nodes or KWOK: no containers run, the nodes only exist so the
scheduler has somewhere to put pods. Used by the scheduler benchmark.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import msgspec

from kyb.store import Store
from schemas.core import Node


@dataclass(frozen=True)
class HollowNodes:
    count: int
    cpu: str = "32"            # allocatable per node
    memory: str = "128Gi"
    pods: str = "110"
    prefix: str = "hollow"
    concurrency: int = 512     # Node creates in flight

    def node(self, i: int) -> Node:
        name = f"{self.prefix}-{i:05d}"
        resources = {"cpu": self.cpu, "memory": self.memory, "pods": self.pods}
        return msgspec.convert(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubemark": "true"}},
                "status": {
                    "capacity": resources,
                    "allocatable": resources,
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                    "nodeInfo": {"kubeletVersion": "hollow", "operatingSystem": "linux", "architecture": "amd64"},
                },
            },
            Node,
        )

    async def register(self, store: Store) -> None:
        for start in range(0, self.count, self.concurrency):
            stop = min(start + self.concurrency, self.count)
            await asyncio.gather(*(store.create(self.node(i)) for i in range(start, stop)))
