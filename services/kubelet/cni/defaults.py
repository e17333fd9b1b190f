"""The network configuration a kubelet writes when its CNI directory has none.

Like the kubelet's old ``kubenet`` and flannel's default: a ``bridge`` per node (the node's
gateway on the first address of its pod CIDR, hairpin mode so a pod reaches itself through its
Service), ``host-local`` IPAM on the node's pod CIDR, then ``portmap`` (hostPorts, through the
``portMappings`` capability) and ``firewall`` (lets the bridge's traffic through a host
firewall). The loopback interface of every pod is brought up by the ``loopback`` plugin, a
network of its own (:data:`LOOPBACK`), as containerd does. Pure.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from typing import Any

from services.kubelet.cni.spec import SPEC_VERSION, NetworkConfigList, parse_config

DEFAULT_NETWORK_NAME = "kyb"
DEFAULT_CONF_FILE = "10-kyb.conflist"

LOOPBACK = parse_config(json.dumps({"cniVersion": SPEC_VERSION, "name": "cni-loopback",
                                    "plugins": [{"type": "loopback"}]}), "builtin loopback")


def bridge_name(node_name: str) -> str:
    """``kyb`` plus six hex digits of the node's name: one bridge per node, so several
    kubelets of one machine never share one (Linux names hold 15 characters)."""
    return "kyb" + hashlib.sha256(node_name.encode()).hexdigest()[:6]


@dataclass(frozen=True)
class DefaultNetwork:
    pod_cidr: str  # the node's spec.podCIDR
    bridge: str  # the bridge's name
    name: str = DEFAULT_NETWORK_NAME
    ipam_dir: str | None = None  # host-local's store (its default: /var/lib/cni/networks)
    ip_masq: bool = False  # masquerade pod traffic leaving the node's own range (see README)
    mtu: int | None = None


def default_config(net: DefaultNetwork) -> dict[str, Any]:
    subnet = ipaddress.ip_network(net.pod_cidr, strict=False)
    ipam: dict[str, Any] = {
        "type": "host-local",
        "ranges": [[{"subnet": str(subnet)}]],
        "routes": [{"dst": "0.0.0.0/0" if subnet.version == 4 else "::/0"}],
    }
    if net.ipam_dir:
        ipam["dataDir"] = net.ipam_dir
    bridge: dict[str, Any] = {
        "type": "bridge",
        "bridge": net.bridge,
        "isGateway": True,
        "ipMasq": net.ip_masq,
        "hairpinMode": True,
        "ipam": ipam,
    }
    if net.mtu:
        bridge["mtu"] = net.mtu
    return {
        "cniVersion": SPEC_VERSION,
        "name": net.name,
        "plugins": [
            bridge,
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "firewall"},
        ],
    }


def default_config_list(net: DefaultNetwork) -> NetworkConfigList:
    return parse_config(json.dumps(default_config(net)), "default")
