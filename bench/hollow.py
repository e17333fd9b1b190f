"""Many hollow Nodes registered at once (kyb.hollow's, built by ``hollow_node``), so the
scheduler benchmark has somewhere to put pods: no kubelet, no containers, only Ready Nodes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from kyb.hollow import hollow_node
from kyb.store import Store
from schemas.core import Node

ZONE = "topology.kubernetes.io/zone"


@dataclass(frozen=True)
class HollowNodes:
    count: int
    cpu: str = "32"            # allocatable per node
    memory: str = "128Gi"
    pods: str = "110"
    prefix: str = "hollow"
    concurrency: int = 512     # Node creates in flight
    zones: int = 0             # > 0: label node i topology.kubernetes.io/zone=zone-<i mod zones>

    def node(self, i: int) -> Node:
        name = f"{self.prefix}-{i:05d}"
        labels = {"kubemark": "true"}
        if self.zones:
            labels[ZONE] = f"zone-{i % self.zones}"
        return hollow_node(name, labels=labels,
                           resources={"cpu": self.cpu, "memory": self.memory, "pods": self.pods})

    async def register(self, store: Store) -> None:
        for start in range(0, self.count, self.concurrency):
            stop = min(start + self.concurrency, self.count)
            await asyncio.gather(*(store.create(self.node(i)) for i in range(start, stop)))
