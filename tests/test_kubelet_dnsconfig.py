"""The pod's resolv.conf and hosts file (services.kubelet.dnsconfig), as the kubelet builds them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.meta import ObjectMeta
from schemas.pod import HostAlias, Pod, PodDNSConfig, PodDNSConfigOption, PodSpec
from services.kubelet.dnsconfig import DnsSettings, hosts_file, parse_resolv_conf, pod_resolver, resolv_conf

HOST = parse_resolv_conf("# node\nnameserver 192.0.2.1\nnameserver 192.0.2.2\nsearch corp.example\noptions rotate\n")
SETTINGS = DnsSettings(cluster_dns=("10.96.0.10",), host=HOST)


def pod(ns: str = "shop", **spec) -> Pod:
    return Pod(metadata=ObjectMeta(name="p", namespace=ns, uid="u1"), spec=PodSpec(**spec))


@pytest.mark.parametrize(("spec", "expected"), [
    pytest.param({}, "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local "
                 "corp.example\noptions ndots:5\n", id="cluster-first"),
    pytest.param({"hostNetwork": True}, "nameserver 192.0.2.1\nnameserver 192.0.2.2\nsearch corp.example\n"
                 "options rotate\n", id="cluster-first-host-network-falls-back"),
    pytest.param({"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"},
                 "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local "
                 "corp.example\noptions ndots:5\n", id="cluster-first-with-host-net"),
    pytest.param({"dnsPolicy": "Default"}, "nameserver 192.0.2.1\nnameserver 192.0.2.2\nsearch corp.example\n"
                 "options rotate\n", id="default"),
    pytest.param({"dnsPolicy": "None", "dnsConfig": PodDNSConfig(nameservers=["1.2.3.4"], searches=["a.example"],
                  options=[PodDNSConfigOption(name="ndots", value="2"), PodDNSConfigOption(name="edns0")])},
                 "nameserver 1.2.3.4\nsearch a.example\noptions ndots:2 edns0\n", id="none"),
    pytest.param({"dnsConfig": PodDNSConfig(nameservers=["10.96.0.10", "1.1.1.1", "2.2.2.2", "3.3.3.3"],
                  searches=["shop.svc.cluster.local", "x.example"], options=[PodDNSConfigOption(name="ndots",
                                                                                             value="1")])},
                 "nameserver 10.96.0.10\nnameserver 1.1.1.1\nnameserver 2.2.2.2\nsearch shop.svc.cluster.local "
                 "svc.cluster.local cluster.local corp.example x.example\noptions ndots:1\n", id="merged-and-capped"),
])
def test_resolv_conf(spec: dict, expected: str) -> None:
    assert resolv_conf(pod(**spec), SETTINGS) == expected


def test_without_a_cluster_dns_cluster_first_is_default() -> None:
    assert resolv_conf(pod(), DnsSettings(host=HOST)) == resolv_conf(pod(dnsPolicy="Default"), SETTINGS)


def test_hosts_file() -> None:
    text = hosts_file(pod(hostname="db-0", subdomain="db", hostAliases=[HostAlias(ip="10.1.2.3", hostnames=["a", "b"])]),
                      "10.244.1.5")
    assert text.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")
    assert "10.244.1.5\tdb-0.db.shop.svc.cluster.local\tdb-0\n" in text
    assert text.endswith("\n# Entries added by HostAliases.\n10.1.2.3\ta\tb\n")
    host = hosts_file(pod(hostNetwork=True), "192.0.2.9", host_hosts="127.0.0.1 localhost\n192.0.2.9 node1")
    assert host == "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n192.0.2.9 node1\n"


names = st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,8}){0,2}", fullmatch=True)
ips = st.ip_addresses(v=4).map(str)


@given(policy=st.sampled_from(["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"]),
       host_network=st.booleans(), servers=st.lists(ips, max_size=5), searches=st.lists(names, max_size=40))
def test_limits_and_no_duplicates(policy: str, host_network: bool, servers: list[str], searches: list[str]) -> None:
    p = pod(dnsPolicy=policy, hostNetwork=host_network, dnsConfig=PodDNSConfig(nameservers=servers, searches=searches))
    r = pod_resolver(p, SETTINGS)
    assert len(r.nameservers) <= 3 and len(set(r.nameservers)) == len(r.nameservers)
    assert len(r.searches) <= 32 and len(set(r.searches)) == len(r.searches)
    cluster = policy == "ClusterFirstWithHostNet" or (policy == "ClusterFirst" and not host_network)
    if cluster:
        assert r.nameservers[0] == "10.96.0.10" and r.options == ("ndots:5",)
        assert r.searches[:3] == ("shop.svc.cluster.local", "svc.cluster.local", "cluster.local")
