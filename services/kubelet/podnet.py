"""The kubelet's pod network in ``network: cni`` mode: each pod sandbox is an empty network
namespace that CNI configures.

For a pod the kubelet creates the sandbox (network "none"), ADDs its namespace to the
``loopback`` network and then to the configured network (with the pod's hostPorts as the
``portMappings`` capability), and takes the pod IPs from the result. The CNI container id is
``kyb-<pod uid>``: stable for the pod, so a sandbox found dead (also after a kubelet restart)
is DELeted before its replacement is ADDed, and nothing stays allocated. When the directory
has no configuration, the node's default one is written (``cni/defaults.py``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from services.kubelet.cni.defaults import DEFAULT_CONF_FILE, LOOPBACK, DefaultNetwork, default_config
from services.kubelet.cni.plugin import CniRunner
from services.kubelet.cni.spec import CniError, RuntimeConf, load_config_dir
from services.kubelet.runtime.base import PortMapping

IFNAME = "eth0"


def container_id(pod_uid: str) -> str:
    return f"kyb-{pod_uid}"


class CniPodNetwork:
    def __init__(self, runner: CniRunner) -> None:
        self.runner = runner

    def ensure_config(self, net: DefaultNetwork) -> str:
        """Write the default configuration unless the directory has one; returns the file in effect."""
        conf_dir = self.runner.conf_dir
        existing = load_config_dir(conf_dir)
        if existing is not None:
            return existing.source
        conf_dir.mkdir(parents=True, exist_ok=True)
        path = Path(conf_dir) / DEFAULT_CONF_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(default_config(net), indent=2) + "\n")
        os.replace(tmp, path)
        return str(path)

    def _rt(self, pod_uid: str, netns: str, namespace: str = "", name: str = "",
            ports: Iterable[PortMapping] = ()) -> RuntimeConf:
        mappings = [
            {"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol.lower(),
             **({"hostIP": p.host_ip} if p.host_ip else {})}
            for p in ports
            if p.host_port
        ]
        args = (("IgnoreUnknown", "1"), ("K8S_POD_NAMESPACE", namespace), ("K8S_POD_NAME", name),
                ("K8S_POD_INFRA_CONTAINER_ID", container_id(pod_uid)), ("K8S_POD_UID", pod_uid)) if name else ()
        return RuntimeConf(container_id(pod_uid), netns, IFNAME, args=args,
                           capabilities={"portMappings": mappings} if mappings else {})

    async def add(self, pod_uid: str, netns: str, namespace: str, name: str,
                  ports: Iterable[PortMapping] = ()) -> list[str]:
        """Set up the pod's namespace; its IPs (CniError when a plugin fails; nothing is left
        allocated then)."""
        await self.runner.add(RuntimeConf(container_id(pod_uid), netns, "lo"), LOOPBACK)
        result = await self.runner.add(self._rt(pod_uid, netns, namespace, name, ports))
        ips = result.pod_ips()
        if not ips:
            await self.delete(pod_uid, netns)
            raise CniError(7, f"network {self.runner.network().name} gave the pod no address", command="ADD")
        return ips

    def cached_ips(self, pod_uid: str) -> list[str]:
        """The pod IPs of the last ADD (what a restarted kubelet adopts)."""
        cached = self.runner.cached(RuntimeConf(container_id(pod_uid), "", IFNAME))
        return cached[1].pod_ips() if cached is not None else []

    async def delete(self, pod_uid: str, netns: str | None) -> None:
        """Undo the pod's ADD (idempotent; ``netns`` None or "" when the namespace is gone)."""
        await self.runner.delete(RuntimeConf(container_id(pod_uid), netns or "", IFNAME))
        await self.runner.delete(RuntimeConf(container_id(pod_uid), netns or "", "lo"), LOOPBACK)

    def known_pods(self) -> set[str]:
        """Pod uids with a cached ADD result (to find the ones no sandbox holds any more)."""
        out = set()
        for path in self.runner.cache_dir.glob("*.json"):
            try:
                doc = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue
            cid = str(doc.get("containerId", ""))
            if cid.startswith("kyb-"):
                out.add(cid[4:])
        return out
