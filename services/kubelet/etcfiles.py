"""The files a pod sees as /etc/resolv.conf and /etc/hosts (``network: cni``), written under the
kubelet's state directory, ``<state_dir>/etc/<pod uid>/``; the content comes from
:mod:`services.kubelet.dnsconfig`. The runtimes put them in place: the docker runtime through
bind mounts of each app container, the process runtime under ``/etc/netns/<netns>/`` where
``ip netns exec`` mounts them."""

from __future__ import annotations

import shutil
from pathlib import Path

from schemas.pod import Pod
from services.kubelet.dnsconfig import DnsSettings, hosts_file, parse_resolv_conf, resolv_conf
from services.kubelet.runtime.base import Mount

RESOLV_CONF = "/etc/resolv.conf"
HOSTS = "/etc/hosts"


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


class PodEtcFiles:
    def __init__(self, base_dir: Path, *, cluster_dns: tuple[str, ...], cluster_domain: str = "cluster.local",
                 host_resolv_conf: str = RESOLV_CONF, host_hosts: str = HOSTS) -> None:
        self.base_dir = base_dir
        self.settings = DnsSettings(cluster_dns=cluster_dns, cluster_domain=cluster_domain,
                                    host=parse_resolv_conf(_read(host_resolv_conf)))
        self.host_hosts = _read(host_hosts)

    def _dir(self, uid: str) -> Path:
        return self.base_dir / uid

    def write(self, pod: Pod, pod_ip: str) -> tuple[str, str]:
        """(resolv.conf, hosts) paths for ``pod``; rewritten in place, so bind mounts see changes."""
        d = self._dir(pod.metadata.uid or "")
        d.mkdir(parents=True, exist_ok=True)
        files = {"resolv.conf": resolv_conf(pod, self.settings),
                 "hosts": hosts_file(pod, pod_ip, self.settings.cluster_domain, self.host_hosts)}
        for name, text in files.items():
            path = d / name
            if not path.exists() or path.read_text() != text:
                with open(path, "w") as f:
                    f.write(text)
        return str(d / "resolv.conf"), str(d / "hosts")

    def mounts(self, uid: str) -> tuple[Mount, ...]:
        d = self._dir(uid)
        if not (d / "resolv.conf").exists():
            return ()
        return (Mount(str(d / "resolv.conf"), RESOLV_CONF, read_only=True), Mount(str(d / "hosts"), HOSTS, read_only=True))

    def remove(self, uid: str) -> None:
        shutil.rmtree(self._dir(uid), ignore_errors=True)
