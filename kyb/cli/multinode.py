"""Several nodes on one machine for ``kyb up --nodes N``: the options of each kubelet.

Every node gets its own name (``node-1`` .. ``node-N``), its own /16 of 127.0.0.0/8 for pod IPs
(``127.<100+i>.0.0/16``, so pods of different nodes never share an address) and its own state
directory. With the docker runtime all of them share the one engine: the runtime labels
containers with ``io.kybernetes.node`` and each kubelet only sees its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FIRST_OCTET = 100  # node-1 gets 127.101.0.0/16


def node_name(i: int) -> str:
    return f"node-{i}"


def pod_cidr(i: int) -> str:
    if not 1 <= i <= 255 - FIRST_OCTET:
        raise ValueError(f"node index {i} out of range 1..{255 - FIRST_OCTET}")
    return f"127.{FIRST_OCTET + i}.0.0/16"


def kubelet_instances(count: int, data_dir: Path) -> list[dict[str, Any]]:
    """One option set per kubelet (merged over the common options by kyb.serve)."""
    return [
        {"node_name": node_name(i), "pod_cidr": pod_cidr(i), "state_dir": str(data_dir / "nodes" / node_name(i))}
        for i in range(1, count + 1)
    ]
