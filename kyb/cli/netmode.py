"""Which pod network `kyb up` runs: ``cni`` (pods with their own 10.244.x.y address on a bridge,
Services in nftables at 10.96.x.y) where the machine allows it, else ``loopback`` (127.x pod
addresses, the userspace proxy), with the reason for the fallback.

CNI mode needs root, ``ip``, ``nft`` and the CNI plugins (Debian's containernetworking-plugins).
It changes this machine's network namespace: a bridge per node (``kyb<hash>``), the netagent's
unreachable routes for 10.244.0.0/16 and 10.96.0.0/12, the proxy's ``kyb-svc`` route and table
``ip kyb-proxy`` (removed when `kyb up` stops). Its CNI configuration and host-local store
live in the data directory, not in /etc/cni or /var/lib/cni.

With ``--nodes N`` every kubelet has its own bridge, its own pod range from nodeipam and its
own CNI directory and store (``<data-dir>/nodes/<node>/cni``), all in this one namespace: the
bridges' connected routes carry pod traffic between nodes, and one netagent, one proxy and one
netpol agent (``node_names``: every node of the machine) program the namespace for all of them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/12"
PLUGINS = ("bridge", "host-local", "portmap", "firewall", "loopback")
PLUGIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")  # the kubelet's default cni_bin_dirs


def cni_missing() -> str | None:
    """Why `kyb up` cannot run the CNI network here, or None."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("ip", "nft", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    missing = [p for p in PLUGINS if not any(os.access(Path(d, p), os.X_OK) for d in PLUGIN_DIRS)]
    if missing:
        return f"CNI plugins missing in {':'.join(PLUGIN_DIRS)}: {', '.join(missing)}"
    return None


def choose(asked: str | None) -> tuple[str, str | None]:
    """(network, notice): ``asked`` when given (an error when cni cannot work), else cni where
    possible; the notice says why loopback was chosen."""
    why = cni_missing()
    if asked == "loopback":
        return "loopback", None
    if asked == "cni":
        if why is not None:
            raise ValueError(f"--network cni: {why}")
        return "cni", None
    if why is not None:
        return "loopback", f"network: loopback (127.x pod addresses, userspace proxy), as CNI cannot run: {why}"
    return "cni", None


def cni_options(data_dir: Path) -> dict[str, Any]:
    """The service options of CNI mode (kubelet, nodeipam, netagent, proxy, api)."""
    return {
        "network": "cni",
        "cluster_cidr": CLUSTER_CIDR,
        "service_cidr": SERVICE_CIDR,
        "cni_conf_dir": str(data_dir / "cni" / "net.d"),
        "cni_ipam_dir": str(data_dir / "cni" / "ipam"),
        "proxy_mode": "nftables",
        "proxy_cleanup": True,
        "backend": "host-gw",
    }
