"""A pod's /etc/resolv.conf and /etc/hosts, as the kubelet writes them (pure).

``resolv_conf`` follows the kubelet's dns configurer (pkg/kubelet/network/dns): the pod's
``dnsPolicy`` picks the base — ``ClusterFirst`` (the cluster DNS, search
``<ns>.svc.<domain> svc.<domain> <domain>`` and the node's own search domains, ``ndots:5``;
a hostNetwork pod falls back to ``Default``), ``ClusterFirstWithHostNet`` (the cluster DNS
even for a hostNetwork pod), ``Default`` (the node's resolv.conf) or ``None`` (empty) — then
``dnsConfig`` is merged in: nameservers and searches appended without duplicates, options
replacing those of the same name; at most 3 nameservers and 32 search domains are kept.
Without a cluster DNS address the cluster policies fall back to ``Default``, as in Kubernetes.

``hosts_file`` is the kubelet-managed hosts file: localhost lines, the pod's own name
(``<hostname>.<subdomain>.<ns>.svc.<domain>`` too when it has a subdomain), then one line per
``hostAliases`` entry; a hostNetwork pod gets the node's hosts file with the aliases appended.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.pod import Pod

MAX_NAMESERVERS = 3
MAX_SEARCHES = 32
MAX_SEARCH_CHARS = 2048
CLUSTER_OPTIONS = ("ndots:5",)


@dataclass(frozen=True, slots=True)
class Resolver:
    """What a resolv.conf says."""

    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()  # "name" or "name:value"


@dataclass(frozen=True, slots=True)
class DnsSettings:
    cluster_dns: tuple[str, ...] = ()  # the cluster DNS Service address(es); empty: none
    cluster_domain: str = "cluster.local"
    host: Resolver = field(default_factory=Resolver)  # the node's resolv.conf


def parse_resolv_conf(text: str) -> Resolver:
    """nameserver, search/domain and options lines (the last search or domain line wins, as in glibc)."""
    servers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if not words:
            continue
        key, rest = words[0], words[1:]
        if key == "nameserver" and rest:
            servers.append(rest[0])
        elif key in ("search", "domain"):
            searches = [d.rstrip(".") for d in rest if d.rstrip(".")]
        elif key == "options":
            options.extend(rest)
    return Resolver(tuple(servers), tuple(searches), tuple(options))


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _merge_options(base: list[str], extra: list[str]) -> list[str]:
    by_name: dict[str, str] = {}
    for opt in [*base, *extra]:
        by_name[opt.split(":", 1)[0]] = opt
    return list(by_name.values())


def pod_resolver(pod: Pod, settings: DnsSettings) -> Resolver:
    spec = pod.spec
    policy = spec.dnsPolicy
    if policy == "ClusterFirst" and spec.hostNetwork:
        policy = "Default"
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet") and not settings.cluster_dns:
        policy = "Default"
    host = settings.host
    if policy == "None":
        servers, searches, options = [], [], []
    elif policy == "Default":
        servers, searches, options = list(host.nameservers), list(host.searches), list(host.options)
    else:
        domain = settings.cluster_domain.strip(".")
        ns = pod.metadata.namespace or "default"
        servers = list(settings.cluster_dns)
        searches = [f"{ns}.svc.{domain}", f"svc.{domain}", domain, *host.searches]
        options = list(CLUSTER_OPTIONS)
    cfg = spec.dnsConfig
    if cfg is not None:
        servers += cfg.nameservers
        searches += [s.rstrip(".") for s in cfg.searches]
        options = _merge_options(options, [o.name if o.value is None else f"{o.name}:{o.value}" for o in cfg.options])
    searches = _unique(searches)[:MAX_SEARCHES]
    while searches and len(" ".join(searches)) > MAX_SEARCH_CHARS:
        searches.pop()
    return Resolver(tuple(_unique(servers)[:MAX_NAMESERVERS]), tuple(searches), tuple(options))


def render_resolv_conf(r: Resolver) -> str:
    lines = [f"nameserver {s}" for s in r.nameservers]
    if r.searches:
        lines.append("search " + " ".join(r.searches))
    if r.options:
        lines.append("options " + " ".join(r.options))
    return "\n".join(lines) + "\n"


def resolv_conf(pod: Pod, settings: DnsSettings) -> str:
    return render_resolv_conf(pod_resolver(pod, settings))


_LOCAL = """# Kubernetes-managed hosts file.
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
fe00::0\tip6-mcastprefix
fe00::1\tip6-allnodes
fe00::2\tip6-allrouters
"""


def hosts_file(pod: Pod, pod_ip: str, cluster_domain: str = "cluster.local", host_hosts: str = "") -> str:
    spec = pod.spec
    if spec.hostNetwork:
        text = "# Kubernetes-managed hosts file (host network).\n" + host_hosts
        if text and not text.endswith("\n"):
            text += "\n"
    else:
        text = _LOCAL
        hostname = spec.hostname or pod.metadata.name
        if pod_ip:
            if spec.subdomain:
                ns = pod.metadata.namespace or "default"
                fqdn = f"{hostname}.{spec.subdomain}.{ns}.svc.{cluster_domain.strip('.')}"
                text += f"{pod_ip}\t{fqdn}\t{hostname}\n"
            else:
                text += f"{pod_ip}\t{hostname}\n"
    aliases = [a for a in spec.hostAliases if a.ip and a.hostnames]
    if aliases:
        text += "\n# Entries added by HostAliases.\n"
        text += "".join(f"{a.ip}\t" + "\t".join(a.hostnames) + "\n" for a in aliases)
    return text
