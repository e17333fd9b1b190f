"""Several nodes on one machine for ``kyb up --nodes N``: the options of each kubelet.

Every node gets its own name (``node-1`` .. ``node-N``) and its own state directory. Its pod
addresses: with ``network: loopback`` its own /16 of 127.0.0.0/8 (``127.<100+i>.0.0/16``, so pods
of different nodes never share an address); with ``network: cni`` the range nodeipam gives its
Node, and a CNI directory and host-local store of its own (each kubelet writes its own bridge's
configuration there). With the docker runtime all of them share the one engine: the runtime
labels containers with ``io.kybernetes.node`` and each kubelet only sees its own.
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


def kubelet_instances(count: int, data_dir: Path, network: str = "loopback") -> list[dict[str, Any]]:
    """One option set per kubelet (merged over the common options by kyb.serve)."""
    out = []
    for i in range(1, count + 1):
        node_dir = data_dir / "nodes" / node_name(i)
        one: dict[str, Any] = {"node_name": node_name(i), "state_dir": str(node_dir)}
        if network == "cni":
            one.update(cni_conf_dir=str(node_dir / "cni" / "net.d"), cni_ipam_dir=str(node_dir / "cni" / "ipam"))
        else:
            one["pod_cidr"] = pod_cidr(i)
        out.append(one)
    return out
